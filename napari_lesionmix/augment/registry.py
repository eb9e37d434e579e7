"""The Method protocol: one path from every face (CLI, export, studio, Python) to every method.

A method is one class, registered by name with :func:`register`, that declares

* ``name`` and ``label`` (the CLI command and the name people read);
* ``Options``: a frozen dataclass of its settings whose fields carry their
  default, help text and allowed values (:func:`option`). It is the single
  source of the CLI flags, the export ``--option METHOD.NAME=VALUE`` keys and
  their checks;
* ``Params``: its frozen, JSON-serialisable :class:`~.params.Params`;
* ``prepare(sources, options) -> resources``: the slider-independent work
  that samples share (a donor's distance field, its lesions, the lesion bank
  and likelihood map), asked of a :class:`Sources`;
* ``sample(rng, inputs, options, resources) -> Params``: only draws;
* ``apply(inputs, params, resources) -> Synthetic``: deterministic.

One step is shared by every method and lives here, not in them: the
``intensity_match`` option of the :class:`Options` base (``none``,
``brain-linear``, ``histogram``; :mod:`~napari_lesionmix.augment.intensity`).
:func:`sample_params` fits, after the method's draw, one map per case whose
voxels the sample pastes (:meth:`Method.source_ids`, host left out) from the
normal brain of that case and of the host, and records the maps in
``Params.intensity``; :func:`apply_params` gives the method the donor in the
host's scale (a method without a donor, LesionMix, maps each lesion's source
itself with :func:`~napari_lesionmix.augment.intensity.map_for`). ``sample``
only draws and never reads intensities, so drawing before the fit changes no
draw.

Every face draws sample ``index`` of seed ``seed`` from
:func:`~napari_lesionmix.random.sample_rng` through :func:`draw`, so the same
host, donor, options, seed and index give the same bytes in the CLI, the
studio and Python. Method modules live in this package and are found by
:func:`method_names` on first use, so a new method is one module.

Examples
--------
>>> from napari_lesionmix.augment import registry
>>> sorted(registry.method_names())[:2]
['carvemix', 'cutmix']
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import threading
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

import numpy as np

from napari_lesionmix.augment import intensity
from napari_lesionmix.augment.options import Options, option, option_types  # noqa: F401 (re-exported: the methods import them from here)
from napari_lesionmix.augment.params import BrainRecord, Params, Synthetic
from napari_lesionmix.errors import LesionMixError, LesionMixWarning
from napari_lesionmix.io.brain import BrainRegion, case_brain
from napari_lesionmix.io.cache import LRUCache
from napari_lesionmix.io.checks import check_case, same_content
from napari_lesionmix.io.dataset import Dataset
from napari_lesionmix.io.nifti import Case, check_same_grid
from napari_lesionmix.io.threads import map_in_threads
from napari_lesionmix.random import sample_rng

#: The defaults a face changes, in one visible place: the method commands and the Python API keep the
#: papers' ``intensity_match="none"``; batch export and the studio match intensities by default, because
#: their users paste across scans of different gain without looking at each pair.
FACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cli": {},
    "export": {"intensity_match": "brain-linear"},
    "studio": {"intensity_match": "brain-linear"},
}


# ----------------------------------------------------------------------------- sources and inputs


class Sources(Protocol):
    """What a method may ask of the face that runs it (export context, studio session, CLI).

    Methods never import export or widgets: those implement this interface.
    """

    def case(self, case_id: str) -> Case:
        """A real case by id (loaded once)."""

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        """The case's brain mask (bool) or ``None``."""

    def training_set(self) -> Dataset | None:
        """The cases a method may take lesions from (held-out cases left out), or ``None``."""

    def training_cases(self) -> list[tuple[Case, np.ndarray | None]] | None:
        """Without files: the ``(case, brain mask)`` pairs a method may take lesions from, or ``None``.

        The online faces' donors made by a pre-transform (MONAI's ``donor_transform``):
        they exist only in memory, on the grid the transform gives.
        """

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """An object built once by ``make`` and kept (e.g. a donor's distance field)."""


#: Training-set cases a :class:`LocalSources` keeps loaded (least recently used dropped first).
LOADED_CASES = 16


class LocalSources:
    """:class:`Sources` over cases held in memory (the CLI and the Python API).

    Parameters
    ----------
    cases : sequence of Case
    brain_masks : mapping of case id to bool array, optional
    training_set : Dataset, optional
    """

    def __init__(self, cases=(), brain_masks: Mapping[str, np.ndarray | None] | None = None,
                 training_set: Dataset | None = None):
        self._cases = {c.case_id: c for c in cases if c is not None}
        self._brain = dict(brain_masks or {})
        self._training = training_set
        self._cache: dict[Hashable, Any] = {}
        self._lock = threading.Lock()
        # Training cases read whole (a donor, a source's statistics), bounded: a Python loop over a
        # large dataset kept every case it had read (22 of 35 MB for one LESYMAP populate).
        self._read = LRUCache(LOADED_CASES)

    def case(self, case_id: str) -> Case:
        if case_id in self._cases:
            return self._cases[case_id]
        if self._training is not None and case_id in self._training.case_ids:
            return self._read.get(case_id, lambda: self._training[case_id].load())
        raise LesionMixError(f"Case '{case_id}' is not among the loaded cases.")

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        if case_id in self._brain:
            return self._brain[case_id]
        if self._training is not None and case_id in self._training.case_ids:
            return self.cached(("brain", case_id), lambda: self._training[case_id].load_brain_mask())
        return None

    def training_set(self) -> Dataset | None:
        return self._training

    def training_cases(self) -> None:
        return None

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._lock:
            return self._cache.setdefault(key, value)


@dataclass(frozen=True)
class Inputs:
    """The cases one sample is made from.

    Attributes
    ----------
    host : Case
        Background and header of the result.
    donor : Case or None
        The lesion source, for methods that take one (``Method.needs_donor``).
    brain_mask : ndarray of bool or None
        The host's brain (or organ) mask. ``None`` is resolved by the
        registry (:func:`resolve_inputs`) to the brain estimated from the host
        image before any method sees it: methods always get a brain.
    """

    host: Case
    donor: Case | None = None
    brain_mask: np.ndarray | None = None


def resolve_inputs(inputs: Inputs) -> tuple[Inputs, BrainRegion]:
    """``inputs`` with the host's brain region (:func:`~napari_lesionmix.io.brain.case_brain`), and the region.

    The one place a missing brain mask becomes the estimate, so every method
    and every face pastes inside the same brain. An unreliable estimate is
    warned about once (:class:`~napari_lesionmix.errors.LesionMixWarning`).
    """
    region = case_brain(inputs.host, inputs.brain_mask)  # warns once per case when the estimate looks wrong
    return dataclasses.replace(inputs, brain_mask=region.mask), region


def check_brain_record(params: Params, region: BrainRegion, host_id: str) -> None:
    """Raise when ``params`` were drawn in another brain region than ``region`` (a replay would differ)."""
    rec = params.brain
    # The voxel count, not the source: a mask file that is the estimate is the same region.
    if rec is not None and rec.voxels != region.n_voxels:
        what = {"mask": "a brain mask", "estimated": "the brain estimated from the image"}
        raise LesionMixError(
            f"These params were drawn in {what.get(rec.source, rec.source)} of {rec.voxels} voxels but host "
            f"'{host_id}' now has {what.get(region.source, region.source)} of {region.n_voxels} voxels; "
            "give the same brain mask (or none) to replay them."
        )


class DrawRejected(LesionMixError):
    """These inputs cannot make a sample (e.g. no place meets Soft-CP's constraints); another donor may."""


# ----------------------------------------------------------------------------- the protocol


class Method:
    """Base class of a registered augmentation method (see the module docstring).

    Subclasses set the class attributes and override :meth:`sample` and
    :meth:`apply` (and :meth:`prepare` when samples share work).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    Params: ClassVar[type[Params]] = Params
    #: The method mixes a donor into the host (else it draws from the training set).
    needs_donor: ClassVar[bool] = True
    #: ``prepare`` needs :meth:`Sources.training_set` (e.g. LesionMix's lesion bank).
    needs_training_set: ClassVar[bool] = False
    #: :meth:`apply` reads the host's brain (e.g. LesionMix clips pasted lesions to it): a replay
    #: must then have the brain region the params record (:func:`check_brain_record`).
    brain_in_apply: ClassVar[bool] = False
    #: Host and donor must share a voxel grid (methods that mix whole volumes or paste in place:
    #: CarveMix, Mixup, CutMix, and Soft-CP's donor-space placement); checked once, here.
    needs_same_grid: ClassVar[bool] = True

    def prepare(self, sources: Sources, options: Options) -> Any:
        """Work shared by all samples with these options (default: none)."""
        return None

    def sample(self, rng: np.random.Generator, inputs: Inputs, options: Options, resources: Any) -> Params:
        raise NotImplementedError

    def apply(self, inputs: Inputs, params: Params, resources: Any) -> Synthetic:
        raise NotImplementedError

    def source_ids(self, params: Params) -> tuple[str, ...]:
        """Every case whose voxels the sample carries (host first): provenance and leakage rules."""
        donor = getattr(params, "donor_id", None)
        return (params.host_id, *(() if donor is None or donor == params.host_id else (donor,)))

    def options_for(self, params: Params) -> Options:
        """Options that :meth:`prepare` needs to replay ``params`` (the fields both share)."""
        names = {f.name for f in dataclasses.fields(self.Options)}
        return self.Options(**{f.name: getattr(params, f.name) for f in dataclasses.fields(params)
                               if f.name in names})

    def donor_region(self, inputs: Inputs, params: Params, resources: Any) -> tuple[slice, ...] | None:
        """The spatial box of the donor that :meth:`apply` reads, or ``None`` for all of it.

        Lets the shared intensity step map only that box (a per-sample cost that
        would otherwise be a pass over the whole donor).
        """
        return None

    def soft_labels(self, options: Options) -> bool:
        """Whether samples with these options have soft (fractional) labels, which nnU-Net cannot train on."""
        return False

    def describe(self, synthetic: Synthetic) -> str:
        """One line about a sample, for the CLI and the studio's status line."""
        return f"mask {int(np.count_nonzero(synthetic.mask))} voxels"

    def unchanged_reason(self, params: Params) -> str | None:
        """Why a sample with these params is its host unchanged (``None`` when it changes something).

        Known before :meth:`apply` for methods that can say (LesionMix with no
        insertion and no removal); :func:`unchanged_host` also checks the result.
        """
        return None

    def shortfall(self, host: Case, params: Params) -> str | None:
        """Why a sample missed what it aimed at, in words (``None`` when it did not, or cannot say).

        LesionMix's target load: "the remaining load is one 224.4 mL lesion, ...".
        The CLI and the studio append it to :meth:`describe`'s line.
        """
        return None

    def check_inputs(self, inputs: Inputs) -> None:
        """A clear error for inputs this method cannot use: the one gate of every face.

        Each case is checked (:func:`~napari_lesionmix.io.checks.check_case`:
        finite image, whole-number labels on the image's grid), so the MONAI,
        TorchIO and PyTorch faces refuse what the CLI refuses; a host that is its
        own donor is refused by content, not by name.
        """
        if self.needs_donor and inputs.donor is None:
            raise LesionMixError(f"{self.label} needs a donor case.")
        check_case(inputs.host, "Host")
        inputs.host.require_label("Host", self.label)
        if inputs.donor is not None:
            check_case(inputs.donor, "Donor")
            if self.needs_same_grid:
                check_same_grid(inputs.host, inputs.donor)
        if self.needs_donor and _same_case(inputs.host, inputs.donor):
            h, d = inputs.host.case_id, inputs.donor.case_id
            same = f"Host and donor are the same case '{h}'" if h == d else \
                f"Host '{h}' and donor '{d}' are the same scan (identical voxels)"
            raise LesionMixError(f"{same}; {self.label} mixes two different scans.")


def _same_case(a: Case, b: Case) -> bool:
    """The same object, the same files, or the same voxels (the same scan under another name)."""
    if a is b:
        return True
    if bool(a.image_paths) and (tuple(a.image_paths), a.label_path) == (tuple(b.image_paths), b.label_path):
        return True
    return same_content(a, b)


_METHODS: dict[str, Method] = {}
_DISCOVERED = False
#: The entry-point group through which other packages add methods (one module each).
ENTRY_POINT_GROUP = "napari_lesionmix.methods"


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register a :class:`Method` subclass under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    cls.Options.method_name = cls.name
    _METHODS[cls.name] = cls()
    return cls


def _discover() -> None:
    """Import every module of :mod:`napari_lesionmix.augment`, so their methods register."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import napari_lesionmix.augment as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    # Third-party methods: a package declares ``[project.entry-points."napari_lesionmix.methods"]``
    # ``name = "module"`` (or ``"module:MethodClass"``); loading the module registers its methods.
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not take the built-in methods with it
            warnings.warn(f"The lesion-mixing method plug-in '{ep.name}' ({ep.value}) failed to load: {exc}",
                          LesionMixWarning, stacklevel=2)
            continue
        if isinstance(obj, type) and issubclass(obj, Method) and obj.name not in _METHODS:
            register(obj)
    _DISCOVERED = True


def method_names() -> list[str]:
    """Names of the registered methods, sorted."""
    _discover()
    return sorted(_METHODS)


def methods() -> list[Method]:
    """The registered methods, sorted by name."""
    return [_METHODS[n] for n in method_names()]


def get_method(name: str) -> Method:
    """The method registered as ``name`` (case-insensitive).

    Raises
    ------
    LesionMixError
        If no method has that name.
    """
    _discover()
    key = str(name).lower()
    if key not in _METHODS:
        raise LesionMixError(f"Unknown augmentation method '{name}' (known: {', '.join(sorted(_METHODS))}).")
    return _METHODS[key]


def options_of(method: Method, options: Options | Mapping[str, Any] | None) -> Options:
    """``options`` as the method's :class:`Options` (a dict is checked name by name)."""
    if isinstance(options, method.Options):
        return options
    if isinstance(options, Options):
        raise LesionMixError(f"Options of method '{options.method_name}' were given to '{method.name}'.")
    return method.Options.from_dict(options)


def with_provenance(params: Params, seed: int, index: int) -> Params:
    """``params`` recording the root seed and sample index they were drawn with."""
    return dataclasses.replace(params, seed=int(seed), sample_index=int(index))


def draw(method: Method, seed: int, index: int, inputs: Inputs, options: Options, resources: Any,
         sources: Sources | None = None) -> Params:
    """Params of sample ``index`` of seed ``seed``: the one seeding rule of every face."""
    params = sample_params(method, sample_rng(seed, index), inputs, options, resources, sources)
    return with_provenance(params, seed, index)


def sample_params(method: Method, rng: np.random.Generator, inputs: Inputs, options: Options, resources: Any,
                  sources: Sources | None = None) -> Params:
    """The method's draw, then the shared intensity step: its maps recorded in ``params.intensity``.

    Parameters
    ----------
    sources : Sources, optional
        Where the source cases and their brain masks come from (and the
        normal-brain statistics are cached); by default the inputs themselves.
    """
    method.check_inputs(inputs)
    inputs, region = resolve_inputs(inputs)
    params = method.sample(rng, inputs, options, resources)
    params = dataclasses.replace(params, brain=BrainRecord(region.source, region.n_voxels))
    return fit_intensity(method, params, inputs, options.intensity_match, sources)


def fit_intensity(method: Method, params: Params, inputs: Inputs, mode: str,
                  sources: Sources | None = None) -> Params:
    """``params`` with one :class:`~napari_lesionmix.augment.intensity.IntensityMap` per pasted source case.

    Each map is fitted on the normal brain (lesions excluded) of the source
    case and of the host (``inputs.brain_mask``, each source's
    :meth:`Sources.brain_mask`, else the non-background voxels). In mode
    ``"none"`` the maps change nothing but record both medians (the gain warning).
    """
    sources = sources or _local_sources(inputs)
    ids = [cid for cid in method.source_ids(params) if cid != inputs.host.case_id]
    if not ids:
        return params
    host = _brain_stats(sources, inputs.host.case_id, lambda: inputs.host, inputs.brain_mask)

    def stats_of(cid: str) -> intensity.BrainStats:
        donor = inputs.donor if inputs.donor is not None and inputs.donor.case_id == cid else None
        return _brain_stats(sources, cid, lambda: donor or sources.case(cid), sources.brain_mask(cid))

    # A LesionMix sample's sources (22 cases for 30 lesions on 131 stroke cases) are read and their
    # brains estimated in a few threads (every Sources cache is locked): 10 s -> 6 s on 2 cores.
    stats = map_in_threads(stats_of, ids)
    maps = tuple(intensity.fit_map(mode, st, host, cid) for cid, st in zip(ids, stats, strict=True))
    return dataclasses.replace(params, intensity=maps)


#: First element of the :meth:`Sources.cached` keys of per-case normal-brain statistics (a few floats
#: each: a face may keep them apart from its bounded cache of large objects).
BRAIN_STATS_KEY = "brain-stats"


def _brain_stats(sources: Sources, case_id: str, case: Callable[[], Case],
                 brain: np.ndarray | None) -> intensity.BrainStats:
    """A case's normal-brain statistics, computed once per sources (a case is loaded only when needed)."""
    def make():
        c = case()
        return intensity.brain_stats(c.image, c.label, case_brain(c, brain).mask)

    return sources.cached((BRAIN_STATS_KEY, case_id, brain is not None), make)


def case_brain_stats(sources: Sources, case: Case, brain_mask: np.ndarray | None) -> intensity.BrainStats:
    """A case's normal-brain statistics as :func:`fit_intensity` fits them (computed once per ``sources``).

    Lets a face show the medians the intensity step will use (the studio's gain label) from the same cache.
    """
    return _brain_stats(sources, case.case_id, lambda: case, brain_mask)


def matched_inputs(inputs: Inputs, params: Params, region: tuple[slice, ...] | None = None) -> Inputs:
    """``inputs`` with the donor in the host's scale by the map ``params`` recorded for it (if any).

    ``region``: the only donor voxels the method reads (:meth:`Method.donor_region`); the map is
    pointwise, so mapping just those gives the same sample.
    """
    if inputs.donor is None:
        return inputs
    # The map of the recorded donor (a replay may load it under another case id).
    m = intensity.map_for(params.intensity, getattr(params, "donor_id", None) or inputs.donor.case_id)
    if m is None or m.mode == "none":
        return inputs
    image = m.apply(inputs.donor.image, region)
    return dataclasses.replace(inputs, donor=dataclasses.replace(inputs.donor, image=image))


def apply_params(method: Method, inputs: Inputs, params: Params, resources: Any) -> Synthetic:
    """The method's deterministic apply, on the donor as the recorded intensity maps make it.

    The host's brain is resolved as :func:`sample_params` resolved it and, for
    a method whose apply reads it (:attr:`Method.brain_in_apply`), must be the
    region the params record.
    """
    inputs, brain = resolve_inputs(inputs)
    if method.brain_in_apply:
        check_brain_record(params, brain, inputs.host.case_id)
    region = method.donor_region(inputs, params, resources) if inputs.donor is not None else None
    return method.apply(matched_inputs(inputs, params, region), params, resources)


def unchanged_host(method: Method, params: Params, synthetic: Synthetic | None = None) -> str | None:
    """Why a sample is a copy of its host, or ``None``: a silent no-op is never passed off as synthetic.

    Export draws such a sample again; the CLI and the studio warn.
    """
    reason = method.unchanged_reason(params)
    if reason is None and synthetic is not None and not np.any(synthetic.mask):
        reason = "its mixing mask is empty"
    if reason is None:
        return None
    return f"{method.label} sample is host '{params.host_id}' unchanged: {reason}"


def _local_sources(inputs: Inputs) -> LocalSources:
    return LocalSources([inputs.host, inputs.donor], {inputs.host.case_id: inputs.brain_mask})


def check_recorded_cases(params: Params, inputs: Inputs, where: str = "These params") -> None:
    """Raise when ``inputs`` are not the cases ``params`` were drawn on: a replay there is another sample."""
    recorded = {"host": params.host_id, "donor": getattr(params, "donor_id", None)}
    given = {"host": inputs.host.case_id, "donor": inputs.donor.case_id if inputs.donor is not None else None}
    wrong = [f"{role} '{given[role]}' (recorded: '{recorded[role]}')" for role in ("host", "donor")
             if recorded[role] is not None and given[role] is not None and recorded[role] != given[role]]
    if wrong:
        raise LesionMixError(f"{where} were drawn for other cases than the given {' and '.join(wrong)}; "
                             "load the recorded cases to replay them.")


def generate(method: str | Method, host: Case, donor: Case | None = None, *, seed: int = 0, index: int = 0,
             options: Options | Mapping[str, Any] | None = None, brain_mask: np.ndarray | None = None,
             training_set: Dataset | None = None, sources: Sources | None = None) -> Synthetic:
    """Make sample ``index`` of seed ``seed`` with a method: the Python face of the CLI commands.

    Parameters
    ----------
    method : str or Method
        A registered name (``"carvemix"``, ``"softcp"``, ``"lesionmix"``, ``"mixup"``, ``"cutmix"``...).
    host, donor : Case
        Same grid; ``donor`` for methods that take one.
    seed, index : int
        Sample ``index`` of root seed ``seed`` (:func:`~napari_lesionmix.random.sample_rng`).
    options : Options or dict, optional
        The method's options (defaults otherwise).
    brain_mask : ndarray of bool, optional
        The host's brain mask.
    training_set : Dataset, optional
        Lesion sources of methods that need them (LesionMix).
    sources : Sources, optional
        Reuse prepared work across calls (e.g. a donor's distance field).

    Returns
    -------
    Synthetic
        Its ``params`` replay it exactly with :func:`replay`.

    Examples
    --------
    >>> syn = generate("carvemix", host, donor, seed=3)          # doctest: +SKIP
    >>> same = replay(syn.params, host, donor)                    # doctest: +SKIP
    """
    m = get_method(method) if isinstance(method, str) else method
    opts = options_of(m, options)
    inputs = Inputs(host, donor, brain_mask)
    sources = sources or LocalSources([host, donor], {host.case_id: brain_mask}, training_set)
    resources = m.prepare(sources, opts)
    return apply_params(m, inputs, draw(m, seed, index, inputs, opts, resources, sources), resources)


def replay(params: Params, host: Case, donor: Case | None = None, *, brain_mask: np.ndarray | None = None,
           training_set: Dataset | None = None, sources: Sources | None = None) -> Synthetic:
    """Apply recorded params again (deterministic): the same bytes as the sample they came from."""
    m = get_method(params.method)
    inputs = Inputs(host, donor, brain_mask)
    m.check_inputs(inputs)
    sources = sources or LocalSources([host, donor], {host.case_id: brain_mask}, training_set)
    return apply_params(m, inputs, params, m.prepare(sources, m.options_for(params)))
