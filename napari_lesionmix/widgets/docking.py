"""Where the studio's docks sit in napari's window: short titles, one tab group, own native windows.

napari docks a plugin widget as "NAME (napari-lesionmix)" and, when a closed dock is reopened from the
Plugins menu, beside the others instead of in their tab group (squeezing the group to 166 px).
:func:`watch_window` (installed by the first session of a viewer) settles every LesionMix dock the
moment it is added, however it was opened: short title, drop-downs that fit the 460 px column
(:func:`compact_combos`), tabified with the other LesionMix docks
(the preview keeps its own place), and, for the docks that redraw on every slider move (a class
attribute ``NATIVE_WINDOW = True``: the preview, CarveMix), its content in a native window of its own.

The native window is the preview's latency fix. napari's canvas is an OpenGL widget, so Qt
composites the whole main window through OpenGL on every repaint of any widget in it: 16-18 ms
at 1600x1000 under software GL, against 3 ms for the preview's own drawing, so a slider move
waited a frame and a half for the window. A native child window is flushed on its own, so a
slider move repaints the slider's dock and the preview, not napari's 1600x1000 window (measured
at 1 mm under load: slider move to painted preview p50 44 -> 15 ms). Only those docks: a native
window per dock made the others no faster and every extra native window is one more to flush.
"""

from __future__ import annotations

import weakref

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QComboBox, QDockWidget, QMainWindow, QWidget

PLUGIN = "napari-lesionmix"
#: Manifest display name of the preview's dock (docked on its own, not in the tab group).
PREVIEW = "Preview"
#: Widest a LesionMix dock may be at a 1600x1000 window (the right column beside napari's canvas).
MAX_DOCK_WIDTH = 460
#: Characters a drop-down shows at its narrowest (longer entries are elided, the list shows them whole).
COMBO_CHARS = 10


def is_ours(widget) -> bool:
    """Whether ``widget`` is one of this plugin's dock widgets."""
    return type(widget).__module__.startswith("napari_lesionmix.widgets.")


def short_title(name: str) -> str:
    """A dock's name without napari's " (napari-lesionmix)" suffix."""
    suffix = f" ({PLUGIN})"
    return name[: -len(suffix)] if name.endswith(suffix) else name


def set_title(dock: QDockWidget, title: str) -> None:
    """Show ``title`` on ``dock``: its window title (tabs, floating frame) and napari's title bar."""
    dock.setWindowTitle(title)
    label = getattr(getattr(dock, "title", None), "title", None)  # napari's custom title bar
    if label is not None and hasattr(label, "setText"):
        label.setText(title)


def make_native(widget: QWidget) -> None:
    """Give ``widget`` a native window of its own (not its ancestors): flushed without napari's window."""
    if not widget.testAttribute(Qt.WidgetAttribute.WA_NativeWindow):
        widget.setAttribute(Qt.WidgetAttribute.WA_DontCreateNativeAncestors)
        widget.setAttribute(Qt.WidgetAttribute.WA_NativeWindow)


def compact_combos(widget: QWidget) -> None:
    """Let ``widget``'s drop-downs shrink below their longest entry (the widest rows of Harmonize, Load).

    A ``QComboBox`` is by default as wide as its longest item, which set Harmonize's minimum to 491 px
    in a 460 px column (a horizontal scroll bar, cut spin boxes).
    """
    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(COMBO_CHARS)


def our_docks(window: QMainWindow) -> list[QDockWidget]:
    """The main window's LesionMix docks, in the order they were added."""
    return [d for d in window.findChildren(QDockWidget) if is_ours(d.widget())]


def settle(dock: QDockWidget) -> None:
    """Short title, native content and a place in the LesionMix tab group for one dock (idempotent)."""
    widget, window = dock.widget(), dock.parent()
    if widget is None or not is_ours(widget) or not isinstance(window, QMainWindow):
        return
    title = short_title(getattr(dock, "name", "") or dock.windowTitle())
    if title != dock.windowTitle():
        set_title(dock, title)
    # napari rebuilds its title bar when a dock floats or docks again (with the long name).
    if not getattr(dock, "_lesionmix_settled", False):
        dock._lesionmix_settled = True
        dock.topLevelChanged.connect(
            lambda *_, d=weakref.ref(dock), t=title: d() and set_title(d(), t)
        )
    compact_combos(widget)
    if getattr(widget, "NATIVE_WINDOW", False):
        make_native(widget)
    if title == PREVIEW or dock.isFloating() or window.tabifiedDockWidgets(dock):
        return
    docked = [
        d
        for d in our_docks(window)
        if d is not dock
        and not d.isFloating()
        and short_title(d.windowTitle()) != PREVIEW
        and window.dockWidgetArea(d) != Qt.DockWidgetArea.NoDockWidgetArea
    ]
    # The studio's tab group (a dock with tab siblings), else any other LesionMix dock to start one.
    group = [d for d in docked if window.tabifiedDockWidgets(d)] or docked
    if group:
        window.tabifyDockWidget(group[0], dock)
        # Raised once the tab bar is laid out: raised at once, it kept the 640 px of a dock of its own.
        ref = weakref.ref(dock)
        QTimer.singleShot(0, lambda: ref() is not None and ref().raise_())


class _DockWatcher(QObject):
    """Settles each dock added to a main window, once napari has placed it."""

    def eventFilter(self, obj, event):  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.ChildAdded and isinstance(event.child(), QDockWidget):
            ref = weakref.ref(event.child())
            QTimer.singleShot(0, lambda: ref() is not None and settle(ref()))
        return False


def watch_window(window: QMainWindow) -> None:
    """Settle every LesionMix dock ``window`` gets from now on, and those it has (harmless twice)."""
    if getattr(window, "_lesionmix_watcher", None) is not None:
        return
    watcher = _DockWatcher(window)
    window.installEventFilter(watcher)
    window._lesionmix_watcher = watcher
    for dock in our_docks(window):
        QTimer.singleShot(0, lambda ref=weakref.ref(dock): ref() is not None and settle(ref()))
