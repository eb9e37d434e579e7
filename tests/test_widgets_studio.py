"""The studio as a whole under Xvfb: grid changes, fitting the screen, QA display and compare."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import load_pair, make_case, write_case
from napari.utils.notifications import notification_manager

from napari_lesionmix.widgets.carvemix import position_of_t
from napari_lesionmix.widgets.state import get_session

pytestmark = pytest.mark.gui
PLUGIN = "napari-lesionmix"
SHAPES = ((16, 18, 16), (34, 36, 32), (20, 44, 26))  # each grid reaches past the one before


def _pair_of_shape(root, shape, k: int) -> dict:
    host = make_case(seed=40 + k, n_lesions=2, case_id=f"h{k}", shape=shape)
    donor = make_case(seed=50 + k, n_lesions=3, case_id=f"d{k}", shape=shape)
    return {"host": write_case(host, root / f"p{k}", f"h{k}"), "donor": write_case(donor, root / f"p{k}", f"d{k}")}


@pytest.fixture
def docks(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, preview = viewer.window.add_plugin_dock_widget(PLUGIN, "Preview")
    _, cm = viewer.window.add_plugin_dock_widget(PLUGIN, "CarveMix")
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "Load", tabify=True)
    session = get_session(viewer)
    yield viewer, preview, cm, load, session
    qtbot.waitUntil(lambda: not session.busy, timeout=10000)


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


def test_each_dock_opened_alone_scrolls(make_napari_viewer, qtbot):
    """Plugins > LesionMix, one widget after the other, stacked (not tabified): still fits."""
    from napari_lesionmix.widgets.studio import widget_names

    viewer = make_napari_viewer()
    for name in widget_names():
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert name == "Preview" or widget.scroll_area is not None
    w, h = _min_size(viewer)
    assert h <= SCREEN[1] - FRAME, (w, h)
