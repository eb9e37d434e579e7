"""Triplanar preview under Xvfb: redraws on lambda moves, contours, crosshair follows and clicks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import PLUGIN

from napari_lesionmix.io.display import Plane
from napari_lesionmix.widgets.carvemix import position_of_t
from napari_lesionmix.widgets.preview import CROSS_RGB, LABEL_RGB, MASK_RGB, boundary, render_plane
from napari_lesionmix.widgets.state import get_session


def test_boundary_is_the_inner_ring():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    b = boundary(m)
    ring = m.copy()
    ring[2:5, 2:5] = False
    np.testing.assert_array_equal(b, ring)
    soft = m * 0.8  # soft masks are cut at 0.5
    np.testing.assert_array_equal(boundary(soft.astype(np.float32)), ring)


def test_render_plane_colours():
    img = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    lab = np.zeros((10, 10), np.uint8)
    lab[2:5, 2:5] = 1
    mask = np.zeros((10, 10), bool)
    mask[5:9, 5:9] = True
    rgb = render_plane(Plane(img, lab, mask), (0.0, 1.0), (0, 9))
    assert tuple(rgb[2, 2]) == LABEL_RGB and tuple(rgb[3, 3]) != LABEL_RGB
    assert tuple(rgb[5, 5]) == MASK_RGB
    assert tuple(rgb[0, 4]) == CROSS_RGB and tuple(rgb[7, 9]) == CROSS_RGB
    assert rgb[9, 0, 0] > rgb[1, 0, 0]  # grey ramp


@pytest.fixture
def studio(studio, pair_on_disk):
    viewer, docks, session = studio("Preview", "CarveMix", "Load", pair=pair_on_disk, tabify=("Load",),
                                    until=lambda s, d: s.synthetic is not None)
    return viewer, docks["Preview"], docks["CarveMix"], session


@pytest.mark.gui
def test_moving_lambda_redraws_a_different_preview(studio, qtbot):
    viewer, preview, cm, session = studio
    assert preview.redraw_count > 0
    assert preview.views["axial"]._qimage is not None and not preview.views["axial"]._qimage.isNull()
    before = {n: v._rgb.copy() for n, v in preview.views.items()}
    count = preview.redraw_count
    cm.slider.setSliderDown(True)
    cm.slider.setValue(position_of_t(1.0))  # the largest carve: the mask contour must move
    assert preview.redraw_count == count + 1  # synchronous redraw on the move
    changed = [not np.array_equal(before[n], v._rgb) for n, v in preview.views.items()]
    assert any(changed)
    # The yellow mask contour grew on the axial plane through the lesion.
    yellow = lambda rgb: (rgb == MASK_RGB).all(axis=2).sum()  # noqa: E731
    assert yellow(preview.views["axial"]._rgb) > yellow(before["axial"])
    cm.slider.setSliderDown(False)
    cm.slider.sliderReleased.emit()
    qtbot.waitUntil(lambda: session.synthetic.params.lam > 0 and not session.busy, timeout=10000)


@pytest.mark.gui
def test_click_moves_crosshair_and_viewer_slider(studio, qtbot):
    viewer, preview, cm, session = studio
    view = preview.views["coronal"]
    preview.redraw()
    row, col = 5.0, 7.0  # screen row 5 of the coronal view = display z = n_z - 1 - 5
    view.clicked.emit(row, col)
    n_z = session.orientation.display_shape[0]
    assert session.cursor[0] == n_z - 1 - 5 and session.cursor[2] == 7
    world_z = session.world_point(session.cursor)[0]
    assert viewer.dims.point[0] == pytest.approx(world_z)
    # A real mouse press on the axial view maps pixels through the pixmap rectangle.
    axial = preview.views["axial"]
    x0, y0, tw, th = axial._rect
    h, w, _ = axial._rgb.shape
    from qtpy.QtCore import QPoint, Qt

    qtbot.mouseClick(axial, Qt.MouseButton.LeftButton,
                     pos=QPoint(int(x0 + (3.5 / w) * tw), int(y0 + (2.5 / h) * th)))
    assert session.cursor[1:] == (2, 3)


@pytest.mark.gui
def test_crosshair_follows_viewer_cursor_and_slider(studio, qtbot):
    viewer, preview, cm, session = studio
    target = (4, 9, 11)
    world = session.world_point(target)
    count = preview.redraw_count
    for cb in viewer.mouse_move_callbacks:  # what napari calls on a mouse move
        cb(viewer, SimpleNamespace(position=world))
    assert session.cursor == target
    qtbot.waitUntil(lambda: preview.redraw_count > count, timeout=5000)
    viewer.dims.set_point(0, session.world_point((6, 0, 0))[0])
    assert session.cursor == (6, 9, 11)
    # Shown as every face prints a position: the file's voxel (i, j, k), then its mm through the affine.
    from napari_lesionmix.io.position import format_position

    ijk = session.orientation.original_index((6, 9, 11))
    want = format_position(ijk, session.host.affine)
    assert want.startswith("voxel (i, j, k) = (") and " mm" in want
    qtbot.waitUntil(lambda: want in preview.info.text(), timeout=5000)


@pytest.mark.gui
def test_closing_the_preview_detaches_it(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    dock, preview = viewer.window.add_plugin_dock_widget(PLUGIN, "Preview")
    session = get_session(viewer)
    assert len(viewer.mouse_move_callbacks) == 1
    viewer.window.remove_dock_widget(dock)  # napari un-parents the inner widget...
    preview.deleteLater()  # ...which is destroyed once nothing holds it
    qtbot.waitUntil(lambda: len(viewer.mouse_move_callbacks) == 0, timeout=5000)
    assert len(session.preview_changed) == 0
    session.set_preview(None)  # no dead widget is called


@pytest.mark.gui
def test_statistics_panel_volumes_and_medians(studio, qtbot):
    """Host lesions, pasted lesions and normal brain: volume and median, as the shown sample has them."""
    from napari_lesionmix.io.brain import case_brain
    from napari_lesionmix.widgets.stats import segment_statistics

    viewer, preview, cm, session = studio
    qtbot.waitUntil(lambda: not session.busy and "pasted lesions" in preview.stats.text(), timeout=20000)
    host, syn = session.host, session.synthetic
    rows = {(r.segment, r.image): r for r in segment_statistics(host, session.host_brain_mask, syn)}
    voxel_ml = float(np.prod(host.spacing)) / 1000
    lesion = host.label != 0
    assert rows["host lesions", "host"].volume_ml == pytest.approx(lesion.sum() * voxel_ml)
    assert rows["host lesions", "host"].median == pytest.approx(np.median(host.image[0][lesion]))
    normal = case_brain(host, session.host_brain_mask).normal(host.label)
    assert rows["normal brain", "host"].median == pytest.approx(np.median(host.image[0][normal]))
    pasted = (syn.label != 0) & (syn.mask >= 0.5) & ~lesion
    assert rows["pasted lesions", "synthetic"].volume_ml == pytest.approx(pasted.sum() * voxel_ml)
    assert f"{rows['host lesions', 'host'].volume_ml:.2f}" in preview.stats.text()
    # Before/after harmonization: the pair's "before" rows appear beside the harmonized ones.
    after = dataclasses.replace(syn, image=syn.image * 1.5)
    before_rows = segment_statistics(host, session.host_brain_mask, after, before=syn)
    names = [(r.segment, r.image) for r in before_rows]
    assert ("pasted lesions", "synthetic, before") in names and ("pasted lesions", "synthetic, harmonized") in names
    by = {(r.segment, r.image): r for r in before_rows}
    assert by["pasted lesions", "synthetic, harmonized"].median == pytest.approx(
        1.5 * by["pasted lesions", "synthetic, before"].median, rel=1e-5)


def test_enlarge_floats_the_preview_and_dock_back_returns_it(studio, qtbot):
    viewer, preview, cm, session = studio
    dock = preview._dock()
    assert dock is not None and not dock.isFloating()
    preview.enlarge_btn.click()
    qtbot.waitUntil(dock.isFloating, timeout=5000)
    assert preview.enlarge_btn.text() == "Dock back"
    assert dock.width() >= preview.ENLARGED[0] * 0.9
    preview.enlarge_btn.click()
    qtbot.waitUntil(lambda: not dock.isFloating(), timeout=5000)
    assert preview.enlarge_btn.text() == "Enlarge"


def test_statistics_medians_share_one_decimal_count():
    """z-scored medians read "0.060" beside "2.992" (one count per column), not "0.06008"."""
    from napari_lesionmix.widgets.stats import SegmentRow, format_rows, median_decimals

    assert median_decimals([2.992, 0.06008, float("nan")]) == 3
    assert median_decimals([312.46, 98.1]) == 1 and median_decimals([12345.0]) == 0
    assert median_decimals([0.0012, 0.0004]) == 4 and median_decimals([]) == 3
    text = format_rows([SegmentRow("host lesions", "host", 1.0, 2.992), SegmentRow("normal brain", "host", 2.0, 0.06008),
                        SegmentRow("pasted lesions", "synthetic", 0.0, float("nan"))])
    assert ">2.992<" in text and ">0.060<" in text and ">-<" in text
