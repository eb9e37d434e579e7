"""The studio's keyboard shortcuts: napari's keymap on the canvas and Qt shortcuts on the preview dock."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_lesionmix.widgets.shortcuts import SHORTCUTS, lesion_centres


def test_lesion_centres_one_voxel_inside_each_lesion():
    label = np.zeros((12, 12, 12), np.uint8)
    label[1:4, 1:4, 1:4] = 1
    label[6:11, 6:11, 6:11] = 2
    label[7:10, 7:10, 7:10] = 0  # a hollow lesion: its centroid (8, 8, 8) is no lesion voxel
    centres = lesion_centres(label)
    assert centres[0] == (2, 2, 2) and len(centres) == 2
    assert label[centres[1]] == 2
    assert lesion_centres(np.zeros((4, 4, 4))) == []


def test_no_key_collides_with_napari_or_another():
    from napari.utils.shortcuts import default_shortcuts

    napari_keys = {str(k) for keys in default_shortcuts.values() for k in keys}
    ours = [key.replace("-", "+") for key, _, _ in SHORTCUTS]
    assert len(set(ours)) == len(ours) and not set(ours) & napari_keys


def test_the_user_guide_lists_every_shortcut():
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "docs" / "README.md").read_text()
    for key, _, _ in SHORTCUTS:
        assert f"| {key.replace('-', '+')} |" in guide, key


@pytest.fixture
def studio(studio, pair_on_disk):
    viewer, docks, session = studio(
        "Preview",
        "CarveMix",
        "Load",
        "Soft-CP",
        pair=pair_on_disk,
        tabify=("Load", "Soft-CP"),
        until=lambda s, d: s.synthetic is not None,
    )
    docks["Load"].parent().raise_()  # no method dock's tab on top
    return viewer, docks["Preview"], docks["CarveMix"], session, docks["Soft-CP"]


def _press(qtbot, viewer, key, shift=False):
    """A key press on napari's canvas, as a user types it (napari's keymap handles it)."""
    canvas = getattr(viewer, "__wrapped__", viewer).window._qt_viewer.canvas.native
    canvas.setFocus()
    mods = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    qtbot.keyClick(canvas, key, mods)


@pytest.mark.gui
def test_keys_on_the_canvas_step_lesions_zoom_flip_and_sample(studio, qtbot):
    viewer, preview, cm, session, softcp = studio
    centres = lesion_centres(np.asarray(session.synthetic.label))
    assert len(centres) >= 1
    _press(qtbot, viewer, Qt.Key.Key_N)  # next lesion: the first one
    want = tuple(int(round(v)) for v in session.orientation.display_index(centres[0]))
    qtbot.waitUntil(lambda: session.cursor == want, timeout=5000)
    assert "lesion 1/" in viewer.status and "voxel (i, j, k) = " in viewer.status
    _press(qtbot, viewer, Qt.Key.Key_N, shift=True)  # previous: wraps to the last
    last = tuple(int(round(v)) for v in session.orientation.display_index(centres[-1]))
    qtbot.waitUntil(lambda: session.cursor == last, timeout=5000)
    # The viewer's slice followed the crosshair.
    assert int(round(session.display_index(viewer.dims.point)[0])) == last[0]
    _press(qtbot, viewer, Qt.Key.Key_Z, shift=True)
    assert preview.zoom.currentData() == 2
    syn_layer = session.layer("synthetic_image")
    _press(qtbot, viewer, Qt.Key.Key_F, shift=True)
    assert session.showing_host and not syn_layer.visible
    _press(qtbot, viewer, Qt.Key.Key_F, shift=True)
    assert not session.showing_host and syn_layer.visible
    before = session.synthetic
    # The raised method dock samples; in this hidden window none is: the dock of the shown sample does.
    _press(
        qtbot, viewer, Qt.Key.Key_S, shift=True
    )  # CarveMix is the raised method dock: Sample lambda
    qtbot.waitUntil(lambda: session.synthetic is not before and not session.busy, timeout=20000)
    assert session.synthetic.params.sample_index == 0 and cm.params == session.synthetic.params
    # With Soft-CP's tab on top, Shift+S samples Soft-CP (tabbed-away docks still say isVisible()).
    softcp.parent().raise_()
    _press(qtbot, viewer, Qt.Key.Key_S, shift=True)
    qtbot.waitUntil(
        lambda: session.synthetic.params.method == "softcp" and not session.busy, timeout=20000
    )


@pytest.mark.gui
def test_keys_with_the_focus_in_the_preview_dock(studio, qtbot):
    viewer, preview, cm, session, softcp = studio
    # The same keys on the dock, for its children with the focus (Qt fires them in an active window,
    # which Xvfb without a window manager does not give: the shortcut is activated as Qt would).
    keys = {sc.key().toString(): sc for sc in preview._shortcuts}
    assert set(keys) == {key.replace("-", "+") for key, _, _ in SHORTCUTS}
    assert all(
        sc.context() == Qt.ShortcutContext.WidgetWithChildrenShortcut for sc in keys.values()
    )
    keys["Shift+Z"].activated.emit()
    assert preview.zoom.currentData() == 2
    keys["Shift+Z"].activated.emit()
    keys["Shift+Z"].activated.emit()
    assert preview.zoom.currentData() == 1


@pytest.mark.gui
def test_a_key_without_its_input_says_what_to_load(make_napari_viewer_proxy):
    from napari.utils.notifications import notification_manager

    from napari_lesionmix.widgets.state import get_session

    session = get_session(make_napari_viewer_proxy())
    n = len(notification_manager.records)
    session.shortcuts.action("next_lesion")()
    session.shortcuts.action("zoom")()
    messages = [r.message for r in notification_manager.records[n:]]
    assert messages == [
        "Load a host/donor pair first; N and Shift+N step through its lesions.",
        "Open the Preview dock to zoom it (Plugins > LesionMix > Preview).",
    ]
