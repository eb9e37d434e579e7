"""The studio session: what every dock widget of one viewer shares.

:class:`StudioSession` holds the host/donor pair, the dataset, the current
synthetic case and its params, the preview's plane source, the crosshair and
one locked, bounded cache of prepared work (:meth:`StudioSession.cached`, the
registry's ``Sources.cached``: every method's resources live there). It emits psygnal signals when any of
them changes and owns the layers it puts in the viewer (tagged in
``layer.metadata["lesionmix_role"]``): it updates their ``data`` in place and
never touches any other layer. Get it with :func:`get_session`, which returns
the same object for every widget of a viewer (also through napari's
``PublicOnlyProxy``).

Qt-light: only :meth:`StudioSession.run` (thread_worker + progress) touches
napari's Qt threading, and it imports it lazily.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

# contourpy (matplotlib's contour engine, drawn by the Export widget's QA gallery) and torch
# (ARHNet) are both pybind11 extensions sharing pybind11's process-wide state, which the first
# of them to load creates. Created inside a worker thread that then ends, that state crashed
# the process (segfault in torch._C._autograd_init) when ARHNet later loaded in another worker.
# Loading contourpy here, on the GUI thread, costs a few milliseconds and makes it GUI-owned.
import contourpy  # noqa: F401
import numpy as np
from psygnal import Signal

from napari_lesionmix.augment import intensity, registry
from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.dataset import CaseRecord, Dataset
from napari_lesionmix.io.display import (
    DisplayOrientation,
    PlaneSource,
    VolumePlanes,
    brain_window,
)
from napari_lesionmix.io.nifti import Case, check_same_grid
from napari_lesionmix.widgets.layers import (  # noqa: F401 (the docks import the roles from here)
    COMPARE_ORDER,
    COMPARE_STRIDE,
    MASK_OPACITY,
    NORMAL_ORDER,
    OUTLINE_LEVEL,
    ROLE_KEY,
    ROLES,
    STALE_KEY,
    SYNTHETIC_ROLES,
    LayerDisplay,
    mask_colormap,
    outline_colormap,
)

#: The studio's default of the shared ``intensity_match`` option. Brain-linear, not the papers' "none":
#: the studio is where pasted intensities are judged, and across subjects (gains differ by up to 2x in
#: the shipped sample) unmatched lesions land darker or brighter than the host's own; the toggle and the
#: medians label keep "none" one click away.
STUDIO_INTENSITY_MATCH = registry.FACE_DEFAULTS["studio"]["intensity_match"]
#: Names of the three preview planes, in the order the preview shows them.
PLANES = ("axial", "coronal", "sagittal")
#: Large objects (prepared work: distance fields, lesion banks, likelihood maps, loaded cases) the session's
#: cache keeps, least recently used dropped first; normal-brain statistics (a few floats) do not count.
CACHE_ENTRIES = 24
#: First element of the cache keys of work on a whole dataset (``("dataset", root, ...)``): it survives a new
#: pair (a lesion bank serves every host); all other entries belong to the loaded pair.
DATASET_KEY = "dataset"


def notify_error(message: str) -> None:
    """Show ``message`` as a napari error notification (never raises)."""
    from napari.utils.notifications import show_error

    show_error(str(message))


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(str(message))


def bind(widget, signal, slot) -> None:
    """Connect ``signal`` to ``slot`` until ``widget`` (a QWidget) is destroyed.

    A closed dock widget must not keep receiving session events (its C++ side is gone).
    """
    signal.connect(slot)

    def _drop(*_):
        try:
            signal.disconnect(slot)
        except Exception:  # noqa: BLE001 (already disconnected)
            pass

    widget.destroyed.connect(_drop)


# -- the session -------------------------------------------------------------------
class StudioSession(LayerDisplay):
    """Shared state of the studio's widgets for one viewer.

    Signals
    -------
    cases_changed()
        A new host/donor pair (or swap). Widgets rebuild what depends on it.
    dataset_changed()
    synthetic_changed()
        :attr:`synthetic` (full volume, with params) was replaced.
    preview_changed()
        :attr:`preview` (the preview's plane source) was replaced; fires on every
        slider move, so handlers must be cheap.
    cursor_changed(tuple)
        :attr:`cursor`, the crosshair as a display voxel index ``(z, y, x)``.
    intensity_changed(str)
        :attr:`intensity_match` changed; the method docks redo their sample in the new mode.
    """

    cases_changed = Signal()
    dataset_changed = Signal()
    synthetic_changed = Signal()
    preview_changed = Signal()
    cursor_changed = Signal(tuple)
    intensity_changed = Signal(str)

    def __init__(self, viewer=None):
        # A weak reference: the session must not keep a closed viewer alive.
        self._viewer_ref = None if viewer is None else weakref.ref(viewer)
        self.host: Case | None = None
        self.donor: Case | None = None
        self.host_record: CaseRecord | None = None
        self.donor_record: CaseRecord | None = None
        self.host_brain_mask: np.ndarray | None = None
        self.donor_brain_mask: np.ndarray | None = None
        self.dataset: Dataset | None = None
        self.orientation: DisplayOrientation | None = None
        self.synthetic: Synthetic | None = None
        #: How :attr:`synthetic` was harmonized (the harmonizer's ``params()``, with the device used), or ``None``.
        self.harmonization: dict | None = None
        self.preview: PlaneSource | None = None
        self.cursor: tuple[int, int, int] = (0, 0, 0)
        #: Intensity window ``(lo, hi)`` for QA: brain voxels of host and donor, their lesions inside
        #: (:func:`~napari_lesionmix.io.display.brain_window`).
        self.window: tuple[float, float] = (0.0, 1.0)
        #: Labels drawn filled and the mixing mask at full tint, instead of contours and a faint tint.
        self.filled_overlays = False
        #: Host and synthetic side by side (napari's grid mode), see :meth:`set_compare`.
        self.compare = False
        self._compare_hidden: list = []  # other layers hidden while comparing (shown again after)
        #: The flip shows the host alone (its label, no synthetic layer), see :meth:`flip`.
        self.showing_host = False
        #: ``(before, after)`` of the last harmonization while one of them is shown, else ``None``.
        self.harmonized_pair: tuple[Synthetic, Synthetic] | None = None
        #: The shared ``intensity_match`` mode every method dock samples with (:meth:`set_intensity_match`).
        self.intensity_match: str = STUDIO_INTENSITY_MATCH
        #: Method name -> ``callable(params)`` that recomputes that sample on the loaded pair
        #: (ending in :meth:`set_synthetic`) or raises LesionMixError; Provenance replays through it.
        self.replayers: dict[str, Callable[[Params], None]] = {}
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._cache_lock = threading.Lock()  # workers and the GUI thread share the cache
        self._generation = 0  # bumped per pair: work started on an older pair is not cached
        self._latest: dict[int, int] = {}  # per widget: the number of its newest run_latest request
        self._workers: list = []
        #: The keyboard shortcuts' actions (:mod:`~napari_lesionmix.widgets.shortcuts`), bound by :func:`get_session`.
        self.shortcuts = None

    @property
    def viewer(self):
        """The (real, unproxied) napari viewer, or ``None``."""
        return None if self._viewer_ref is None else self._viewer_ref()

    # -- cases ---------------------------------------------------------------
    def set_pair(self, host: Case, donor: Case, host_record: CaseRecord | None = None,
                 donor_record: CaseRecord | None = None, host_brain_mask: np.ndarray | None = None,
                 donor_brain_mask: np.ndarray | None = None, show_layers: bool = True) -> None:
        """Validate and install a host/donor pair (raises :class:`LesionMixError`, changing nothing).

        Brain masks (bool, file order) are optional; Soft-CP/LesionMix placement uses the host's.
        """
        if host.label is None:
            raise LesionMixError(f"Host case '{host.case_id}' has no label map; load its lesion label too.")
        donor.require_lesion("Donor")
        check_same_grid(host, donor)
        new_grid = self.orientation is None or tuple(self.orientation.display_shape) != tuple(
            DisplayOrientation(host.affine, host.shape).display_shape)
        self._forget_pair()
        self.host, self.donor = host, donor
        self.host_record, self.donor_record = host_record, donor_record
        self.host_brain_mask, self.donor_brain_mask = host_brain_mask, donor_brain_mask
        self.orientation = DisplayOrientation(host.affine, host.shape)
        self.window = brain_window([host.image[0], donor.image[0]], [host.label, donor.label],
                                   [host_brain_mask, donor_brain_mask])
        self.cursor = self._centre_of_lesions(donor)
        if show_layers:
            self._show_cases()
            if new_grid and self.viewer is not None:
                self.viewer.reset_view()  # layers refilled in place keep the old grid's camera otherwise
            self.set_cursor(self.cursor, move_viewer=True)  # the slider to the lesion
        self.cases_changed.emit()
        self.cursor_changed.emit(self.cursor)

    def _forget_pair(self) -> None:
        """Drop everything that belongs to the previous pair, before the new one is installed.

        The previous pair may have another grid: its planes, synthetic case, prepared work and
        synthetic layers would index the new grid out of bounds (or show the old case over the new one).
        """
        with self._cache_lock:
            # Case ids of another pair may name other scans: only whole-dataset work stays.
            for key in [k for k in self._cache if not _is_dataset_key(k)]:
                del self._cache[key]
            self._generation += 1
        self.synthetic = None
        self.harmonization = None
        if self.preview is not None:
            self.set_preview(None)
        # The old synthetic layers are hidden, not removed: the next sample refills them in place
        # (:meth:`show_layer`). Removing them and adding new ones on a new grid, with napari's canvas
        # painted in between, segfaulted in vispy's glDrawArrays (issue 22).
        for role in SYNTHETIC_ROLES:
            lyr = self.layer(role, stale=True)
            if lyr is not None:
                lyr.metadata[STALE_KEY] = True
                lyr.visible = False

    def swap(self) -> None:
        """Exchange host and donor (both must carry a lesion label)."""
        if self.host is None or self.donor is None:
            raise LesionMixError("Load a host/donor pair before swapping them.")
        self.set_pair(self.donor, self.host, self.donor_record, self.host_record,
                      self.donor_brain_mask, self.host_brain_mask)

    def set_dataset(self, dataset: Dataset | None) -> None:
        self.dataset = dataset
        self.dataset_changed.emit()

    def source_dataset(self) -> tuple[Dataset | None, str]:
        """The dataset Export, harmonizer training and LesionMix's lesion bank read, and why.

        What the user loaded: the scanned dataset when the pair came from it (the shipped sample
        data only when the sample pair is loaded), else the one folder holding the loaded pair's
        files, else the scanned dataset when no pair is loaded. ``None`` with the sentence that says
        what to load when none fits (a pair from two folders, or from layers without files).
        """
        if self.host is not None and self.host_record is not None and self.dataset is not None:
            return self.dataset, f"{len(self.dataset)} case(s) in '{self.dataset.root}'"
        if self.host is None:
            if self.dataset is not None:
                return self.dataset, f"{len(self.dataset)} case(s) in '{self.dataset.root}'"
            return None, "Load a pair or scan a dataset folder in the Load dock first."
        paths = [p for case in (self.host, self.donor) if case is not None for p in case.image_paths]
        if not paths:
            return None, ("The loaded pair comes from layers without files; scan its dataset folder "
                          "in the Load dock.")
        folders = sorted({os.path.dirname(os.path.abspath(os.fspath(p))) for p in paths})
        if len(folders) > 1:
            return None, (f"The loaded pair's files are in {len(folders)} folders ({', '.join(folders)}); "
                          "scan the dataset folder in the Load dock.")
        def scan():
            from napari_lesionmix.io.dataset import discover_dataset

            try:
                return discover_dataset(folders[0]), None
            except LesionMixError as exc:
                return None, f"The loaded pair's folder is not a dataset ({exc}); scan one in the Load dock."

        ds, why = self.cached(("source", folders[0]), scan)
        return ds, why or f"{len(ds)} case(s) in '{ds.root}' (the loaded pair's folder)"

    @property
    def has_pair(self) -> bool:
        return self.host is not None and self.donor is not None

    def require_pair(self) -> tuple[Case, Case]:
        if self.host is None or self.donor is None:
            raise LesionMixError("No host/donor pair is loaded; use the Load widget first.")
        return self.host, self.donor

    # -- registry Sources (napari_lesionmix.augment.registry.Sources) ----------
    def case(self, case_id: str) -> Case:
        """A case by id: the loaded host or donor, else one of the scanned dataset."""
        for case in (self.host, self.donor):
            if case is not None and case.case_id == case_id:
                return case
        if self.dataset is not None and case_id in self.dataset.case_ids:
            return self.cached(("case", case_id), lambda: self.dataset[case_id].load())
        raise LesionMixError(f"Case '{case_id}' is neither loaded nor in the scanned dataset.")

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        for case, mask in ((self.host, self.host_brain_mask), (self.donor, self.donor_brain_mask)):
            if case is not None and case.case_id == case_id:
                return mask
        if self.dataset is not None and case_id in self.dataset.case_ids:
            return self.cached(("brain", case_id), lambda: self.dataset[case_id].load_brain_mask())
        return None

    def training_set(self) -> Dataset | None:
        return self.dataset

    def training_cases(self) -> None:
        return None  # the studio's training set is a scanned folder

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """An object built once by ``make`` for the loaded pair (a method's prepared work), thread-safe.

        The one cache of the studio: locked (thread workers call it), bounded to :data:`CACHE_ENTRIES`
        large objects (the pair's evicted before a dataset's), emptied of the pair's entries when
        another pair is loaded. ``make`` runs
        outside the lock (a distance field takes seconds); what it returns after the pair changed
        is handed back but not kept.
        """
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            generation = self._generation
        value = make()
        with self._cache_lock:
            if generation != self._generation:
                return value
            value = self._cache.setdefault(key, value)
            self._cache.move_to_end(key)
            # Over the bound, the pair's entries go first, least recently used first: a dataset's
            # work (a lesion bank: seconds to minutes) outlives the cases one sample reads.
            large = [k for k in self._cache if not _is_small_key(k)]
            spare = len(large) - CACHE_ENTRIES
            for k in sorted(large, key=_is_dataset_key)[:max(spare, 0)]:
                del self._cache[k]
        return value

    def cache_keys(self) -> list:
        """The keys the cache holds, least recently used first (for tests and diagnostics)."""
        with self._cache_lock:
            return list(self._cache)

    # -- the shared intensity step ---------------------------------------------
    def set_intensity_match(self, mode: str) -> None:
        """Choose the ``intensity_match`` mode of every method dock (none, brain-linear, histogram)."""
        if mode not in intensity.MODES:
            raise LesionMixError(f"Intensity matching must be one of {', '.join(intensity.MODES)}, got '{mode}'.")
        if mode != self.intensity_match:
            self.intensity_match = mode
            self.intensity_changed.emit(mode)

    def inputs(self, with_donor: bool = True) -> registry.Inputs:
        """The registry's inputs of the loaded pair (the donor left out for methods without one)."""
        if self.host is None:
            raise LesionMixError("No host is loaded; use the Load widget first.")
        return registry.Inputs(self.host, self.donor if with_donor else None, self.host_brain_mask)

    def fit_intensity(self, method: registry.Method, params: Params, sources=None) -> Params:
        """``params`` with the intensity maps of the studio's mode, fitted as every face fits them.

        ``sources``: where source cases come from when not this session (LesionMix's shipped sample).
        """
        return registry.fit_intensity(method, params, self.inputs(method.needs_donor), self.intensity_match,
                                      sources or self)

    def pair_stats(self) -> tuple[intensity.BrainStats, intensity.BrainStats]:
        """Normal-brain statistics of host and donor (cached: the intensity step reuses them)."""
        host, donor = self.require_pair()
        return (registry.case_brain_stats(self, host, self.host_brain_mask),
                registry.case_brain_stats(self, donor, self.donor_brain_mask))

    # -- results -------------------------------------------------------------
    def set_synthetic(self, synthetic: Synthetic, show_layers: bool = True, harmonization: dict | None = None) -> None:
        """Install a finished synthetic case: layers, preview and provenance follow.

        ``harmonization``: the harmonizer's record when ``synthetic`` is a harmonized sample (Provenance keeps it).
        """
        if self.orientation is None:
            raise LesionMixError("No host/donor pair is loaded; use the Load widget first.")
        if harmonization and self.synthetic is not None:
            before = self.harmonized_pair[0] if self.harmonized_pair and \
                self.synthetic is self.harmonized_pair[1] else self.synthetic
            self.harmonized_pair = (before, synthetic)
        elif self.harmonized_pair is not None and not any(synthetic is x for x in self.harmonized_pair):
            self.harmonized_pair = None
        if not harmonization and (why := _unchanged(synthetic)):
            notify_info(f"{why}; it is a copy of the host, not a synthetic case.")  # as the CLI warns
        self.synthetic = synthetic
        self.harmonization = dict(harmonization) if harmonization else None
        if show_layers:
            o = self.orientation
            mask = synthetic.mask
            # The window only for a new layer: a contrast the user set stays across samples.
            self.show_layer("synthetic_image", o.to_display(synthetic.image[0]), contrast_limits=self.window,
                            keep_contrast=True)
            label = np.asarray(synthetic.label)
            if label.dtype.kind == "f":
                # Soft labels (Mixup, CutMix): a Labels layer holds integers, so it shows the label of
                # the larger weight; the fractions stay in the sample (and in what is saved).
                label = (label >= 0.5).astype(np.uint8)
            self.show_layer("synthetic_label", o.to_display(label))
            self.show_layer("mixing_mask", o.to_display(mask.astype(np.float32)), colormap=mask_colormap(),
                            blending="translucent", opacity=MASK_OPACITY[self.filled_overlays],
                            contrast_limits=(0.0, 1.0), visible=self.filled_overlays)
            outline = self.show_layer("pasted_outline", o.to_display((mask >= OUTLINE_LEVEL).astype(np.uint8)),
                                      colormap=outline_colormap(), visible=not self.filled_overlays)
            if outline is not None:
                outline.contour = 1  # an outline, also with filled overlays
            self.showing_host = False
            self._show_synthetic(True)
            if self.compare:
                self._arrange()
        self.set_preview(VolumePlanes(synthetic.image, synthetic.label, synthetic.mask, self.orientation))
        self.synthetic_changed.emit()

    def set_preview(self, source: PlaneSource | None) -> None:
        self.preview = source
        self.preview_changed.emit()

    def set_cursor(self, zyx, move_viewer: bool = False) -> None:
        """Move the crosshair (display voxel index); optionally the viewer's slider too."""
        if self.orientation is None:
            return
        shape = self.orientation.display_shape
        cur = tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(zyx, shape, strict=True))
        changed = cur != self.cursor
        self.cursor = cur  # before moving the viewer, whose dims event comes back here
        if move_viewer and self.viewer is not None:
            dims = self.viewer.dims
            if dims.ndim >= 3:
                dims.set_point(list(range(dims.ndim - 3, dims.ndim)), self.world_point(cur))
        if changed:
            self.cursor_changed.emit(cur)

    def world_point(self, zyx) -> tuple[float, float, float]:
        o = self.orientation
        return tuple(t + s * float(v) for t, s, v in zip(o.translate, o.scale, zyx, strict=True))

    def display_index(self, world) -> tuple[float, float, float]:
        o = self.orientation
        return tuple((float(w) - t) / s for w, t, s in zip(world[-3:], o.translate, o.scale, strict=True))

    # -- layers --------------------------------------------------------------


    # -- display for QA ------------------------------------------------------


    def _centre_of_lesions(self, donor: Case) -> tuple[int, int, int]:
        idx = np.argwhere(donor.label[::2, ::2, ::2] != 0) * 2
        centre = idx.mean(axis=0) if len(idx) else np.array(donor.shape) / 2
        # Nearest lesion voxel to the centroid, so the crosshair starts on a lesion.
        if len(idx):
            centre = idx[np.argmin(((idx - centre) ** 2).sum(axis=1))]
        d = self.orientation.display_index(centre)
        return tuple(int(round(v)) for v in d)  # type: ignore[return-value]

    # -- background work -----------------------------------------------------
    def run(self, func: Callable, *args, on_done: Callable | None = None, desc: str = "Working",
            on_error: Callable | None = None, owner=None, track: Callable | None = None, **kwargs):
        """Run ``func(*args, **kwargs)`` in a napari ``thread_worker`` with a progress bar.

        The result goes to ``on_done`` in the main thread. A :class:`LesionMixError`
        becomes an error notification with its one sentence (other exceptions
        too, prefixed with their type); layers are left as they were. With an
        ``owner`` widget, its callbacks are dropped once it is destroyed (a dock
        closed, or a viewer torn down, while its work runs: its Qt objects are gone). ``track(worker)``
        is called before the worker starts (a dock's busy bar): connected after the start, a quick
        worker's ``finished`` could come first and be missed, leaving the dock's buttons disabled.
        """
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if owner is not None:
            alive = [True]
            owner.destroyed.connect(lambda *_: alive.__setitem__(0, False))
            on_done = _while(alive, on_done)
            on_error = _while(alive, on_error)

        pbar = progress(total=0, desc=desc)
        worker = None

        def _finish(*_):
            pbar.close()
            if worker in self._workers:
                self._workers.remove(worker)

        def _errored(exc):
            msg = str(exc) if isinstance(exc, LesionMixError) else f"{type(exc).__name__}: {exc}"
            notify_error(msg)
            if on_error is not None:
                on_error(exc)

        # Our own "errored" handler: superqt re-raises into the event loop without one.
        worker = create_worker(func, *args, _start_thread=False, _connect={"errored": _errored}, **kwargs)
        if on_done is not None:
            worker.returned.connect(on_done)
        worker.finished.connect(_finish)
        self._workers.append(worker)
        if track is not None:
            track(worker)
        worker.start()
        return worker

    def run_latest(self, owner, func: Callable, *args, on_done: Callable, on_error: Callable | None = None,
                   desc: str = "Working", **kwargs):
        """:meth:`run` for a widget's newest request only: a result arrives at ``on_done`` unless ``owner``
        started a newer request meanwhile or another pair was loaded (stale results are dropped)."""
        gen = self._latest[id(owner)] = self._latest.get(id(owner), 0) + 1
        host, donor = self.host, self.donor

        def _done(result):
            if gen == self._latest.get(id(owner)) and self.host is host and self.donor is donor:
                on_done(result)

        return self.run(func, *args, on_done=_done, on_error=on_error, desc=desc, owner=owner, **kwargs)

    @property
    def busy(self) -> bool:
        return bool(self._workers)


def _unchanged(synthetic: Synthetic) -> str | None:
    """:func:`~napari_lesionmix.augment.registry.unchanged_host` of a studio sample (``None`` for unknown methods)."""
    try:
        method = registry.get_method(synthetic.params.method)
    except LesionMixError:
        return None
    return registry.unchanged_host(method, synthetic.params, synthetic)


def _is_small_key(key) -> bool:
    return isinstance(key, tuple) and bool(key) and key[0] in (registry.BRAIN_STATS_KEY, "source")


def _is_dataset_key(key) -> bool:
    return isinstance(key, tuple) and bool(key) and key[0] == DATASET_KEY


def _while(alive: list, callback: Callable | None) -> Callable | None:
    """``callback`` that does nothing once ``alive[0]`` is false."""
    if callback is None:
        return None

    def call(*args):
        if alive[0]:
            callback(*args)

    return call


_SESSIONS: dict[int, StudioSession] = {}


def get_session(viewer) -> StudioSession:
    """The session of ``viewer`` (created on first use; shared by all its widgets)."""
    real = getattr(viewer, "__wrapped__", viewer)  # unwrap napari's PublicOnlyProxy
    key = id(real)
    session = _SESSIONS.get(key)
    if session is None or session.viewer is not real:
        session = StudioSession(real)
        _SESSIONS[key] = session
        qt_window = getattr(getattr(real, "window", None), "_qt_window", None)
        if qt_window is not None:  # short titles, one tab group, native docks; the keyboard shortcuts
            from napari_lesionmix.widgets.docking import watch_window
            from napari_lesionmix.widgets.shortcuts import bind_shortcuts

            watch_window(qt_window)
            session.shortcuts = bind_shortcuts(real, session)
        try:
            weakref.finalize(real, _SESSIONS.pop, key, None)
        except TypeError:  # not weak-referenceable: keep it for the process lifetime
            pass
    return session
