"""Where the studio's docks sit at 1600x1000: widths, the tab group, short titles, native windows."""

from __future__ import annotations

import pytest
from conftest import PLUGIN
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_lesionmix.widgets.docking import MAX_DOCK_WIDTH
from napari_lesionmix.widgets.state import get_session

pytestmark = pytest.mark.gui
WINDOW = (1600, 1000)


@pytest.fixture
def studio_window(make_napari_viewer, qtbot):
    from napari_lesionmix.widgets.studio import open_studio

    viewer = make_napari_viewer(show=True)
    qt_window = viewer.window._qt_window
    qt_window.resize(*WINDOW)
    open_studio(viewer, load_sample=False)
    qtbot.waitUntil(lambda: qt_window.width() == WINDOW[0], timeout=5000)
    yield viewer
    qtbot.waitUntil(lambda: not get_session(viewer).busy, timeout=30000)


def _dock(viewer, name):
    return viewer.window.dock_widgets[f"{name} ({PLUGIN})"].parent()


def test_no_dock_wider_than_its_column_at_1600x1000(studio_window, qtbot):
    from napari_lesionmix.widgets.studio import widget_names

    viewer = studio_window
    for name in widget_names():
        dock = _dock(viewer, name)
        dock.raise_()
        qtbot.waitUntil(lambda dock=dock: dock.widget().isVisible(), timeout=5000)
        QApplication.processEvents()
        assert dock.width() <= MAX_DOCK_WIDTH, (name, dock.width())
        area = getattr(dock.widget(), "scroll_area", None)
        if (
            area is not None
        ):  # its content fits the column: no horizontal scroll bar, no cut spin box
            need = area.widget().minimumSizeHint().width()
            assert need <= area.viewport().width(), (name, need, area.viewport().width())
            assert not area.horizontalScrollBar().isVisible(), name


def test_reopened_dock_comes_back_into_the_tab_group_with_a_short_title(studio_window, qtbot):
    viewer = studio_window
    qt_window = viewer.window._qt_window
    group = _dock(viewer, "CarveMix")
    viewer.window.remove_dock_widget(_dock(viewer, "Export"))  # the dock's close button
    assert f"Export ({PLUGIN})" not in viewer.window.dock_widgets
    dock, _ = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")  # Plugins > LesionMix > Export
    qtbot.waitUntil(lambda: dock in qt_window.tabifiedDockWidgets(group), timeout=5000)
    assert dock.windowTitle() == "Export" and dock.title.title.text() == "Export"
    # Raised in the group, at the column's width (not squeezing the group beside it).
    qtbot.waitUntil(
        lambda: dock.widget().isVisible() and dock.width() <= MAX_DOCK_WIDTH, timeout=5000
    )
    assert dock.width() >= 400


def test_floating_preview_keeps_its_short_title(studio_window, qtbot):
    viewer = studio_window
    preview = viewer.window.dock_widgets[f"Preview ({PLUGIN})"]
    dock = preview.parent()
    preview.enlarge_btn.click()
    qtbot.waitUntil(lambda: dock.isFloating(), timeout=5000)
    assert dock.windowTitle() == "Preview" and dock.title.title.text() == "Preview"
    preview.enlarge_btn.click()
    qtbot.waitUntil(lambda: not dock.isFloating(), timeout=5000)
    assert dock.title.title.text() == "Preview"


def test_live_docks_paint_in_their_own_native_window(studio_window):
    viewer = studio_window
    native = Qt.WidgetAttribute.WA_NativeWindow
    for name in ("Preview", "CarveMix"):
        widget = viewer.window.dock_widgets[f"{name} ({PLUGIN})"]
        assert widget.testAttribute(native), name
    assert not viewer.window.dock_widgets[f"Export ({PLUGIN})"].testAttribute(native)
