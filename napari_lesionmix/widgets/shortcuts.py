"""The studio's keyboard shortcuts: sample, flip, zoom, next/previous lesion.

Bound in napari's own keymap (``viewer.bind_key``), so they work while the canvas has the focus
as napari's do, and again on the preview dock (Qt shortcuts, for while the focus is there). The
docks' Ctrl+Z / Ctrl+Shift+Z (history) and Ctrl+Return (sample) stay theirs
(:class:`~napari_lesionmix.widgets.method.MethodDock`). :data:`SHORTCUTS` is the one list: the
bindings, the tooltips and the user guide's table come from it. None of these keys is one of
napari 0.9's defaults.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.morphology import connected_components
from napari_lesionmix.io.position import format_position

#: (napari key, action name, what it does), in the order the user guide lists them.
SHORTCUTS: tuple[tuple[str, str, str], ...] = (
    ("Shift-S", "sample", "sample with the raised method dock (CarveMix: Sample lambda)"),
    ("Shift-F", "flip", "flip between exactly the host and exactly the synthetic case"),
    ("Shift-Z", "zoom", "cycle the preview's zoom around the crosshair (1x, 2x, 4x)"),
    ("N", "next_lesion", "crosshair (and the viewer's slice) to the next lesion of the shown case"),
    ("Shift-N", "previous_lesion", "crosshair to the previous lesion"),
)


def qt_key(key: str) -> str:
    """napari's ``"Shift-S"`` as Qt's key sequence ``"Shift+S"``."""
    return key.replace("-", "+")


def lesion_centres(label: np.ndarray) -> list[tuple[int, int, int]]:
    """One voxel per connected lesion (26-connected, ``label != 0``): the lesion voxel nearest its centroid.

    In ``label``'s own index order, the lesions in scan order of their first voxel (a stable order to step
    through). A voxel of the lesion itself, so the crosshair lands on it even for a ring-shaped lesion.
    """
    comps, n = connected_components(np.asarray(label) != 0)
    out = []
    for k, box in enumerate(ndi.find_objects(comps), start=1):
        if box is None:
            continue
        idx = np.argwhere(comps[box] == k) + [s.start for s in box]
        c = idx.mean(axis=0)
        out.append(tuple(int(v) for v in idx[np.argmin(((idx - c) ** 2).sum(axis=1))]))
    return out


class StudioShortcuts:
    """The actions of :data:`SHORTCUTS` on one session (and its viewer's docks)."""

    def __init__(self, session):
        self._session = weakref.ref(session)
        self._centres: tuple[object, list] | None = (
            None  # (label array, its lesions): one-entry cache
        )
        self._lesion = -1  # index of the lesion the crosshair was last sent to

    @property
    def session(self):
        return self._session()

    def _docks(self) -> list:
        viewer = self.session.viewer if self.session is not None else None
        if viewer is None:
            return []
        return [
            w
            for w in viewer.window.dock_widgets.values()
            if type(w).__module__.startswith("napari_lesionmix.widgets.")
        ]

    def action(self, name: str) -> Callable[[], None]:
        """The action called ``name``, reporting a :class:`LesionMixError` as a notification."""
        # napari's notification directly: state.py binds these shortcuts, so no import back into it.
        from napari.utils.notifications import show_error as notify_error

        func = getattr(self, name)

        def run(*_):
            try:
                func()
            except LesionMixError as exc:
                notify_error(str(exc))

        return run

    # -- actions -------------------------------------------------------------------
    def sample(self) -> None:
        """Sample with the method dock whose tab is raised, else with the dock of the sample on screen."""
        docks = [w for w in self._docks() if callable(getattr(w, "sample", None))]
        shown = self.session.synthetic.params.method if self.session.synthetic is not None else None
        raised = self._raised_titles()
        on_top = [w for w in docks if w.parent() is not None and w.parent().windowTitle() in raised]
        for w in on_top + [w for w in docks if _method(w) == shown]:
            w.sample()
            return
        raise LesionMixError(
            "Raise a method dock (CarveMix, Soft-CP, LesionMix, Mixup, CutMix) to sample with "
            "Shift+S."
        )

    def _raised_titles(self) -> set[str]:
        """Titles of the docks whose tab is the current one (tabbed-away docks still say isVisible())."""
        from qtpy.QtWidgets import QTabBar

        viewer = self.session.viewer
        window = getattr(getattr(viewer, "window", None), "_qt_window", None)
        if window is None:
            return set()
        return {
            bar.tabText(bar.currentIndex())
            for bar in window.findChildren(QTabBar)
            if bar.parent() is window and bar.currentIndex() >= 0
        }

    def flip(self) -> None:
        self.session.flip()

    def zoom(self) -> None:
        for w in self._docks():
            combo = getattr(w, "zoom", None)
            if combo is not None and hasattr(combo, "setCurrentIndex"):
                combo.setCurrentIndex((combo.currentIndex() + 1) % combo.count())
                return
        raise LesionMixError("Open the Preview dock to zoom it (Plugins > LesionMix > Preview).")

    def next_lesion(self) -> None:
        self._step(+1)

    def previous_lesion(self) -> None:
        self._step(-1)

    def shown_label(self) -> np.ndarray:
        """The label of the case on screen (file order): the synthetic's, else (or flipped) the host's."""
        s = self.session
        if s is None or s.host is None:
            raise LesionMixError(
                "Load a host/donor pair first; N and Shift+N step through its lesions."
            )
        if s.synthetic is not None and not s.showing_host:
            label = np.asarray(s.synthetic.label)
            return label >= 0.5 if label.dtype.kind == "f" else label
        return s.host.label

    def lesions(self) -> list[tuple[int, int, int]]:
        """The shown case's lesions, one file voxel each (:func:`lesion_centres`, cached per label)."""
        label = self.shown_label()
        if self._centres is None or self._centres[0] is not label:
            self._centres = (label, lesion_centres(label))
            self._lesion = -1
        return self._centres[1]

    def _step(self, delta: int) -> None:
        s = self.session
        centres = self.lesions()
        if not centres:
            raise LesionMixError("The shown case has no lesion to go to.")
        if (
            self._lesion < 0
        ):  # the first step from a new label: its first (or, backwards, last) lesion
            self._lesion = 0 if delta > 0 else len(centres) - 1
        else:
            self._lesion = (self._lesion + delta) % len(centres)
        ijk = centres[self._lesion]
        s.set_cursor(s.orientation.display_index(ijk), move_viewer=True)
        viewer = s.viewer
        if viewer is not None:
            viewer.status = (
                f"lesion {self._lesion + 1}/{len(centres)}: {format_position(ijk, s.host.affine)}"
            )


def _method(widget) -> str | None:
    method = getattr(widget, "method", None)
    return getattr(method, "name", None)


def bind_shortcuts(viewer, session) -> StudioShortcuts:
    """Bind :data:`SHORTCUTS` in ``viewer``'s keymap (keys the user bound already are left alone)."""
    shortcuts = StudioShortcuts(session)
    for key, name, _ in SHORTCUTS:
        run = shortcuts.action(name)
        try:
            viewer.bind_key(key, lambda _viewer, run=run: run(), overwrite=False)
        except ValueError:  # the user (or another plugin) has this key
            pass
    return shortcuts


def add_qt_shortcuts(widget, shortcuts: StudioShortcuts) -> list:
    """The same keys as Qt shortcuts on ``widget`` and its children (a dock with the focus)."""
    from qtpy.QtCore import Qt
    from qtpy.QtGui import QKeySequence, QShortcut

    made = []
    for key, name, _ in SHORTCUTS:
        sc = QShortcut(QKeySequence(qt_key(key)), widget)
        sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        sc.activated.connect(shortcuts.action(name))
        made.append(sc)
    return made
