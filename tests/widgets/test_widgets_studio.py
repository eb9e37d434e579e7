"""The studio as a whole under Xvfb: grid changes, fitting the screen, QA display and compare."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from conftest import PLUGIN, load_pair
from factories import make_case, write_case
from napari.utils.notifications import notification_manager

from napari_lesionmix.widgets.carvemix import position_of_t
from napari_lesionmix.widgets.state import get_session

pytestmark = pytest.mark.gui
SHAPES = ((16, 18, 16), (34, 36, 32), (20, 44, 26))  # each grid reaches past the one before


def _pair_of_shape(root, shape, k: int) -> dict:
    host = make_case(seed=40 + k, n_lesions=2, case_id=f"h{k}", shape=shape)
    donor = make_case(seed=50 + k, n_lesions=3, case_id=f"d{k}", shape=shape)
    return {"host": write_case(host, root / f"p{k}", f"h{k}"), "donor": write_case(donor, root / f"p{k}", f"d{k}")}


@pytest.fixture
def docks(studio):
    viewer, docks, session = studio("Preview", "CarveMix", "Load", tabify=("Load",))
    return viewer, docks["Preview"], docks["CarveMix"], docks["Load"], session


def test_pairs_of_three_shapes_in_a_row(docks, qtbot, tmp_path):
    """Nothing from the previous pair (cursor, slider, planes, caches, layers) outlives a grid change."""
    viewer, preview, cm, load, session = docks
    n_errors = len(notification_manager.records)
    for k, shape in enumerate(SHAPES):
        load_pair(qtbot, load, session, _pair_of_shape(tmp_path, shape, k))
        assert session.host.shape == shape
        # The old pair's planes, synthetic and layers are gone the moment the new pair is in.
        assert session.synthetic is None or session.synthetic.image.shape[1:] == shape
        assert session.preview is None or session.preview.display_shape == session.orientation.display_shape
        for role in ("host_image", "synthetic_image", "mixing_mask"):
            layer = session.layer(role)
            assert layer is None or layer.data.shape == session.orientation.display_shape
        # Move everything to the far corner of this grid before the next (different) one arrives.
        far = tuple(n - 1 for n in session.orientation.display_shape)
        for cb in viewer.mouse_move_callbacks:
            cb(viewer, SimpleNamespace(position=session.world_point(far)))
        viewer.dims.set_point(0, session.world_point(far)[0])
        qtbot.waitUntil(lambda: cm.slider.isEnabled(), timeout=10000)
        cm.slider.setSliderDown(True)
        cm.slider.setValue(position_of_t(0.9))
        cm.slider.setSliderDown(False)
        cm.compute_full()
        qtbot.waitUntil(lambda: session.synthetic is not None and not session.busy, timeout=20000)
        preview.redraw()
        assert session.cursor == far
    errors = [r.message for r in notification_manager.records[n_errors:]]
    assert not [m for m in errors if "out of bounds" in m or "Error" in m], errors
    # Layers of every earlier grid were replaced, not stacked.
    assert all(lyr.data.shape[-3:] == session.orientation.display_shape for lyr in viewer.layers)


SCREEN = (1600, 1000)
#: Room for the window manager's title bar and the taskbar of a 1600x1000 screen.
FRAME = 60


def _min_size(viewer):
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    hint = viewer.window._qt_window.minimumSizeHint()
    return hint.width(), hint.height()


def test_studio_fits_the_screen_with_every_dock(make_napari_viewer, qtbot):
    from napari_lesionmix.widgets.studio import open_studio, widget_names

    viewer = make_napari_viewer()
    open_studio(viewer, load_sample=False)
    w, h = _min_size(viewer)
    assert w <= SCREEN[0] and h <= SCREEN[1] - FRAME, (w, h)
    for name in widget_names():  # short tab titles, not "CarveMi..." cut from "CarveMix (napari-lesionmix)"
        dock = viewer.window.dock_widgets[f"{name} (napari-lesionmix)"].parent()
        assert dock.windowTitle() == name
    qtbot.waitUntil(lambda: not get_session(viewer).busy, timeout=30000)  # the docks' start-up work


def test_each_dock_opened_alone_scrolls(make_napari_viewer, qtbot):
    """Plugins > LesionMix, one widget after the other, stacked (not tabified): still fits."""
    from napari_lesionmix.widgets.studio import widget_names

    viewer = make_napari_viewer()
    for name in widget_names():
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert name == "Preview" or widget.scroll_area is not None
    w, h = _min_size(viewer)
    assert h <= SCREEN[1] - FRAME, (w, h)
    qtbot.waitUntil(lambda: not get_session(viewer).busy, timeout=30000)  # the docks' start-up work


def test_qa_display_contours_contrast_flip_compare_zoom(docks, qtbot, pair_on_disk):
    viewer, preview, cm, load, session = docks
    load_pair(qtbot, load, session, pair_on_disk, until=lambda: session.synthetic is not None)
    host, syn = session.layer("host_image"), session.layer("synthetic_image")
    label, mask = session.layer("synthetic_label"), session.layer("mixing_mask")
    outline = session.layer("pasted_outline")
    # Contours and the pasted region outlined by default (the mask's tint only on request); filled and back.
    assert label.contour > 0 and outline.contour > 0 and outline.visible and not mask.visible
    np.testing.assert_array_equal(outline.data, mask.data >= 0.5)
    preview.filled_box.setChecked(True)
    assert label.contour == 0 and mask.opacity >= 0.5 and mask.visible and not outline.visible
    preview.filled_box.setChecked(False)
    assert label.contour > 0 and mask.opacity <= 0.3 and not mask.visible and outline.visible
    # The window comes from brain voxels with the lesions inside; the user's contrast stays.
    assert tuple(host.contrast_limits) == pytest.approx(session.window)
    lesion = host.data[session.layer("host_label").data != 0]
    assert (lesion <= session.window[1]).mean() > 0.95
    syn.contrast_limits = (0.0, 180.0)
    qtbot.waitUntil(lambda: preview.window() == (0.0, 180.0), timeout=5000)
    cm.slider.setValue(position_of_t(0.8))
    cm.compute_full()
    qtbot.waitUntil(lambda: session.synthetic.params.lam > 0 and not session.busy, timeout=20000)
    assert tuple(session.layer("synthetic_image").contrast_limits) == (0.0, 180.0)
    assert "window 0 .. 180" in preview.info.text()
    # Flip: the host shows where the synthetic was, with the same contrast.
    preview.flip_btn.click()
    assert not syn.visible and host.visible and tuple(host.contrast_limits) == (0.0, 180.0)
    # Exactly the host: its label, none of the synthetic's layers.
    host_label = session.layer("host_label")
    assert host_label.visible and not (label.visible or mask.visible or outline.visible)
    # The preview flips with the canvas: the host's own planes, its label, no mask.
    qtbot.waitUntil(lambda: preview.info.text().startswith("host: "), timeout=5000)
    z = session.cursor[0]
    shown = preview._source().planes(session.cursor)["axial"]
    np.testing.assert_array_equal(shown.image, host.data[z])
    np.testing.assert_array_equal(shown.label, host_label.data[z])
    assert not shown.mask.any()
    preview.flip_btn.click()
    assert syn.visible and label.visible and outline.visible and not host_label.visible
    qtbot.waitUntil(lambda: not preview.info.text().startswith("host: "), timeout=5000)
    # Side by side: host and synthetic in two grid views, linked by napari's shared dims and camera.
    mine = viewer.add_points([[0.0, 0.0, 0.0]], name="mine")  # a layer of the user's own
    preview.compare_box.setChecked(True)
    assert not mine.visible
    grid, layers = viewer.canvas.grid, list(viewer.layers)
    assert grid.enabled
    p_host = grid.position(layers.index(host), layers)
    p_syn = grid.position(layers.index(syn), layers)
    assert p_host != p_syn and -1 not in p_host + p_syn
    assert grid.position(layers.index(label), layers) == p_syn  # the label's contour on the synthetic
    # Only host and synthetic, captioned with their names; the donor and the user's layers hidden meanwhile.
    occupied = {grid.position(i, layers) for i, lyr in enumerate(layers) if lyr.visible}
    assert occupied == {p_host, p_syn}
    assert host.name_overlay.visible and syn.name_overlay.visible
    preview.compare_box.setChecked(False)
    assert not host.name_overlay.visible and mine.visible
    assert not grid.enabled and list(viewer.layers).index(syn) > list(viewer.layers).index(host)
    # Zoom: the planes around the crosshair, drawn larger; a click still lands on the right voxel.
    full = preview.views["axial"]._rgb.shape
    preview.zoom.setCurrentIndex(2)  # 4x
    qtbot.waitUntil(lambda: preview.views["axial"]._rgb.shape[0] < full[0], timeout=5000)
    from qtpy.QtCore import QPoint, Qt

    axial = preview.views["axial"]
    r0, c0 = axial.offset
    x0, y0, tw, th = axial._rect
    h, w, _ = axial._rgb.shape
    qtbot.mouseClick(axial, Qt.MouseButton.LeftButton,  # crop pixel (row 1, col 2)
                     pos=QPoint(int(x0 + (2.5 / w) * tw), int(y0 + (1.5 / h) * th)))
    assert session.cursor[1:] == (r0 + 1, c0 + 2)


def _patient(root, name: str, seed: int) -> dict:
    """A patient folder as scanners export it: ``patientNN/flair.nii.gz`` + ``patientNN/lesion.nii.gz``."""
    case = make_case(seed=seed, n_lesions=3, case_id=name)
    files = write_case(case, root / name, "flair")
    lesion = root / name / "lesion.nii.gz"
    files["label"].rename(lesion)
    return {"images": files["images"], "label": lesion}


def test_pair_from_viewer_layers_with_case_ids_and_same_case_warning(docks, qtbot, tmp_path):
    viewer, preview, cm, load, session = docks
    cm.auto_preview.setChecked(False)
    p07, p19 = _patient(tmp_path, "patient07", 7), _patient(tmp_path, "patient19", 19)
    for p in (p07, p19):  # File > Open, with our reader
        for path in (p["images"][0], p["label"]):
            viewer.open(str(path), plugin=PLUGIN)
    images = [load.host_image_layer.itemText(i) for i in range(load.host_image_layer.count())]
    labels = [load.host_label_layer.itemText(i) for i in range(load.host_label_layer.count())]
    assert images == ["flair", "flair [1]"] and labels == ["lesion", "lesion [1]"]
    assert load.donor_image_layer.currentText() == "flair [1]" and load.load_layers_btn.isEnabled()
    load.load_layers()
    qtbot.waitUntil(lambda: session.has_pair and not session.busy, timeout=20000)
    # Told apart by their folders, though both files are "flair".
    assert (session.host.case_id, session.donor.case_id) == ("patient07", "patient19")
    assert "'patient07' and donor 'patient19'" in load.status.text()
    np.testing.assert_allclose(session.host.image[0], nib.load(p07["images"][0]).get_fdata(), rtol=1e-6)
    np.testing.assert_array_equal(session.host.affine, nib.load(p07["images"][0]).affine)
    assert session.synthetic is None  # auto-preview off: nothing computed unasked
    # The studio's own layers are not offered as inputs.
    assert "host" not in [load.host_image_layer.itemText(i) for i in range(load.host_image_layer.count())]
    # The same case as host and donor is accepted with a warning.
    load.donor_image_layer.setCurrentText("flair")
    load.donor_label_layer.setCurrentText("lesion")
    n = len(notification_manager.records)
    load.load_layers()
    qtbot.waitUntil(lambda: "same case 'patient07'" in load.status.text(), timeout=20000)
    assert any("same case" in r.message for r in notification_manager.records[n:])


def test_studio_command_keeps_the_users_layers(make_napari_viewer, qtbot):
    from napari_lesionmix.widgets.studio import studio_command

    viewer = make_napari_viewer()
    viewer.add_image(np.ones((4, 5, 6), np.float32), name="my scan")
    studio_command(viewer)
    session = get_session(viewer)
    qtbot.waitUntil(lambda: not session.busy, timeout=20000)  # the docks' own start-up work
    assert not session.has_pair  # no sample pair loaded over the user's scan
    assert [lyr.name for lyr in viewer.layers] == ["my scan"]


def test_long_work_disables_its_button_and_shows_a_bar(make_napari_viewer_proxy, qtbot, pair_on_disk):
    viewer = make_napari_viewer_proxy()
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "Load")
    _, softcp = viewer.window.add_plugin_dock_widget(PLUGIN, "Soft-CP", tabify=True)
    session = get_session(viewer)
    load_pair(qtbot, load, session, pair_on_disk)
    assert softcp.sample_btn.isEnabled() and not softcp.work.isVisible()
    softcp.sample_btn.click()
    assert softcp.work.running and not softcp.sample_btn.isEnabled() and not softcp.place_btn.isEnabled()
    qtbot.waitUntil(lambda: session.synthetic is not None and not softcp.work.running, timeout=30000)
    assert softcp.sample_btn.isEnabled() and not softcp.work.isVisible()
