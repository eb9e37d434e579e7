"""Open the whole studio: napari with every LesionMix dock widget and the sample pair.

:func:`run` (what ``python -m napari_lesionmix.studio``, i.e. ``make studio``, calls) or the manifest
command "Open LesionMix studio" (File > IO utilities). Every widget the
manifest lists is docked (the preview on its own, the others tabified on the
right) and the shipped host/donor pair is loaded through the Load widget.
"""

from __future__ import annotations

import napari
from napari.viewer import Viewer

from napari_lesionmix.io.nifti import NIFTI_SUFFIXES

PLUGIN = "napari-lesionmix"
NIFTI_PATTERNS = tuple(f"*{suffix}" for suffix in NIFTI_SUFFIXES)  # the manifest's reader patterns


def widget_names() -> list[str]:
    """Display names of the plugin's dock widgets, in manifest order."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    manifest = pm.get_manifest(PLUGIN)
    return [w.display_name for w in (manifest.contributions.widgets or [])]


def studio_widget(viewer: Viewer, name: str):
    """The docked LesionMix widget called ``name`` (e.g. ``"CarveMix"``), or ``None``."""
    for key, widget in viewer.window.dock_widgets.items():
        if key in (name, f"{name} ({PLUGIN})"):
            return widget
    return None


def open_studio(viewer: Viewer | None = None, load_sample: bool = True) -> Viewer:
    """Dock every LesionMix widget into ``viewer`` (a new one if ``None``); load the sample pair.

    Also makes this plugin napari's reader for NIfTI where the user has not
    chosen one (:func:`prefer_our_reader`), so File > Open just works.

    Returns the viewer. Widgets already docked are reused, so calling this twice
    is harmless.
    """
    from napari_lesionmix.widgets import PREVIEW_WIDGET

    prefer_our_reader()
    if viewer is None:
        viewer = napari.Viewer(title="LesionMix studio")
    viewer = getattr(viewer, "__wrapped__", viewer)  # the manifest command gets a PublicOnlyProxy
    window = viewer.window
    widgets, docks = {}, {}
    names = widget_names()
    if PREVIEW_WIDGET in names:
        docks[PREVIEW_WIDGET], widgets[PREVIEW_WIDGET] = window.add_plugin_dock_widget(PLUGIN, PREVIEW_WIDGET)
    first = True
    for name in names:
        if name == PREVIEW_WIDGET:
            continue
        docks[name], widgets[name] = window.add_plugin_dock_widget(PLUGIN, name, tabify=not first)
        first = False
    for name, dock in docks.items():
        fit_dock(dock, widgets[name], name)
    if "CarveMix" in docks:
        docks["CarveMix"].raise_()  # the tab a user starts with once the pair is loaded
    _widen(window, list(docks.values()))
    # Again once Qt has laid the window out: sizes given before that are overridden by the docks' hints
    # (the preview got 280 of 880 px and its views 80 px).
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, lambda: _widen(window, list(docks.values())))
    load = widgets.get("Load")
    if load is not None and load_sample:
        load.load_sample_pair()
    return viewer


def prefer_our_reader() -> list[str]:
    """Make this plugin napari's reader for NIfTI files the user has not chosen a reader for.

    napari's built-in reader also claims ``*.nii.gz`` and fails on it, and
    with two candidates File > Open asks every time. Patterns that already
    have a reader in napari's preferences (``extension2reader``) keep it.

    Returns
    -------
    list of str
        The patterns this call set.
    """
    from napari.settings import get_settings

    plugins = get_settings().plugins
    chosen = dict(plugins.extension2reader)
    added = [p for p in NIFTI_PATTERNS if p not in chosen]
    if added:
        plugins.extension2reader = {**chosen, **dict.fromkeys(added, PLUGIN)}
    return added


def studio_command(viewer: Viewer) -> None:
    """The manifest command "Open LesionMix studio" (File > IO utilities): :func:`open_studio`.

    The sample pair is loaded only into an empty viewer: a user who opened their own scans
    picks them in the Load dock instead.
    """
    open_studio(viewer, load_sample=len(viewer.layers) == 0)


def fit_dock(dock, widget, title: str) -> None:
    """Short tab title and a scrolled body for one docked widget (the studio must fit 1600x1000).

    napari titles plugin docks "NAME (napari-lesionmix)", which tabified docks cut to "CarveMi...";
    the dock keeps its full name as napari's key (``viewer.window.dock_widgets``), only the
    shown title changes. Widgets that do not scroll themselves are wrapped here.
    """
    from napari_lesionmix.widgets import PREVIEW_WIDGET
    from napari_lesionmix.widgets.controls import make_scrollable
    from napari_lesionmix.widgets.docking import set_title

    set_title(dock, title)
    if title != PREVIEW_WIDGET:  # the preview grows with its dock instead
        make_scrollable(widget)


#: Share of the right column's height the preview gets (the tabbed docks scroll; the views should not).
PREVIEW_SHARE = 0.6


def _widen(window, docks, width: int = 460) -> None:
    """Give the right dock area room for the triplanar preview: its width, and most of its height (best effort)."""
    try:
        from qtpy.QtCore import Qt

        qt_window = window._qt_window
        qt_window.resizeDocks(docks[:1], [width], Qt.Orientation.Horizontal)
        if len(docks) > 1:
            h = max(qt_window.height() - 120, 400)
            top = int(h * PREVIEW_SHARE)
            qt_window.resizeDocks(docks[:2], [top, h - top], Qt.Orientation.Vertical)
    except Exception:  # noqa: BLE001 (layout only; never block the studio)
        pass


def run(load_sample: bool = True) -> None:
    """Open the studio in a new viewer and run napari's event loop (``make studio``)."""
    open_studio(load_sample=load_sample)
    napari.run()
