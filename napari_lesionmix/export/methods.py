"""Method registry for batch export, and the per-worker cache of loaded cases.

A method is registered by name with :func:`register_method`; its function
takes ``(context, rng, assignment)`` and returns a :class:`MethodResult`. The
generator has already drawn the method, donor and host
(:func:`~napari_lesionmix.export.plan.assign`); the method draws its own
params from it next and applies them, so a sample is a pure function of the
root seed and its index.

Registered here: ``carvemix`` (host and donor from the training pool, the
donor's CarveField cached per worker), ``softcp`` (host's brain mask as the
Eq. 3 reference, donor components cached) and ``lesionmix`` (lesion bank,
likelihood map and load distribution built once per worker from the training
pool only). Soft-CP and LesionMix live in optional modules: when one is
missing from an installation its loader raises ``LesionMixError("method X is
not available ...")``, before any file is written. Other methods join by
calling :func:`register_method`.
"""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_lesionmix.augment.params import Synthetic
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import Case

#: Most cases and, separately, most method objects (donor fields...) kept per worker.
CACHE_SIZE = 16
#: Most bytes of loaded cases kept per worker (a 1 mm brain is ~35 MB per
#: channel): with the working arrays of one sample, this bounds a worker's memory.
CACHE_BYTES = 1 << 30


@dataclass
class MethodResult:
    """A synthetic sample, the host whose header it is written with, and every case it used."""

    synthetic: Synthetic
    host: Case
    sources: tuple[str, ...]


MethodFn = Callable[["ExportContext", np.random.Generator, Any], MethodResult]

#: Options each method accepts in ``ExportConfig.options`` (name -> type), with their defaults in the docstrings below.
METHOD_OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "carvemix": {"per_lesion": bool, "connectivity": int},
    "lesionmix": {"distribution": str, "mode": str, "lesion_sampling": str, "intensity_match": str,
                  "low": (int, float), "high": (int, float), "mean": (int, float), "sd": (int, float)},
    "softcp": {"n_lesions": int, "a": (int, float), "k_erode": int, "k_dilate": int,
               "delta1": (int, float), "delta2": (int, float), "intensity_compat": bool,
               "placement": str, "jitter_mm": (int, float)},
}


def check_options(options: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Validate per-method options (names and value types); return a clean copy."""
    out: dict[str, dict[str, Any]] = {}
    for method, opts in (options or {}).items():
        known = METHOD_OPTIONS.get(method.lower())
        if known is None:
            raise LesionMixError(f"Options were given for unknown method '{method}'.")
        if not isinstance(opts, dict):
            raise LesionMixError(f"Options of method '{method}' must be a mapping of name to value.")
        for name, value in opts.items():
            if name not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise LesionMixError(f"Method '{method}' has no option '{name}' (options: {allowed}).")
            typ = known[name]
            if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
                raise LesionMixError(f"Option {method}.{name} has the wrong type ({value!r}).")
        out[method.lower()] = dict(sorted(opts.items()))
    return dict(sorted(out.items()))
_METHODS: dict[str, Callable[[], MethodFn]] = {}
_LOADED: dict[str, MethodFn] = {}


def register_method(name: str, loader: Callable[[], MethodFn]) -> None:
    """Register ``loader`` (returning the method function) under ``name``.

    The loader runs on first use, so a method's heavy imports stay out of
    workers that never draw it.
    """
    _METHODS[name.lower()] = loader
    _LOADED.pop(name.lower(), None)


def available_methods() -> list[str]:
    """Names of the methods whose modules import in this installation."""
    out = []
    for name in sorted(_METHODS):
        try:
            get_method(name)
        except LesionMixError:
            continue
        out.append(name)
    return out


def get_method(name: str) -> MethodFn:
    """The function of method ``name``.

    Raises
    ------
    LesionMixError
        If the method is unknown or its module is not available.
    """
    key = name.lower()
    if key not in _METHODS:
        raise LesionMixError(
            f"Unknown augmentation method '{name}' (known: {', '.join(sorted(_METHODS))})."
        )
    fn = _LOADED.get(key)
    if fn is None:
        fn = _LOADED[key] = _METHODS[key]()
    return fn


class _LRU:
    """A small thread-safe LRU cache (Dask threads of one worker share it).

    Bounded by ``size`` entries and, when ``nbytes`` is given, by the bytes it
    reports for the values (the newest entry is always kept).
    """

    def __init__(self, size: int, max_bytes: int | None = None, nbytes: Callable[[Any], int] | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self.nbytes = nbytes
        self.data: OrderedDict = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()  # outside the lock: loading is slow; a rare double load is harmless
        with self.lock:
            if key not in self.data:
                self.data[key] = value
                self.bytes += self._size_of(value)
            self.data.move_to_end(key)
            while len(self.data) > 1 and (
                len(self.data) > self.size or (self.max_bytes is not None and self.bytes > self.max_bytes)
            ):
                _, old = self.data.popitem(last=False)
                self.bytes -= self._size_of(old)
        return value

    def _size_of(self, value) -> int:
        return int(self.nbytes(value)) if self.nbytes is not None else 0


def _case_bytes(case: Case) -> int:
    return case.image.nbytes + (case.label.nbytes if case.label is not None else 0)


class ExportContext:
    """What one worker keeps between samples: loaded cases, donor fields, the harmonizer.

    Parameters
    ----------
    plan : ExportPlan
    cache_size : int
        Most cases (and, separately, most method-specific objects) kept.
    cache_bytes : int
        Most bytes of loaded cases kept.
    """

    def __init__(self, plan, cache_size: int = CACHE_SIZE, cache_bytes: int = CACHE_BYTES):
        self.plan = plan
        self._cases = _LRU(cache_size, cache_bytes, _case_bytes)
        self._objects = _LRU(cache_size)
        self._harmonizer = None
        self._harmonizer_lock = threading.Lock()
        self._resources: dict[Any, Any] = {}
        self._resource_lock = threading.Lock()

    def load(self, case_id: str) -> Case:
        """The real case ``case_id``, loaded once per worker."""
        rec = self.plan.case(case_id)

        def make():
            from napari_lesionmix.io.nifti import load_case

            return load_case(rec.image_paths, rec.label_path, case_id=rec.case_id)

        return self._cases.get(case_id, make)

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        """The case's brain mask (bool) or ``None``."""
        rec = self.plan.case(case_id)
        if rec.brain_mask_path is None:
            return None

        def make():
            from napari_lesionmix.io.nifti import load_label

            return load_label(rec.brain_mask_path)[0] > 0

        return self._objects.get(("brain", case_id), make)

    def cached(self, key, make: Callable[[], Any]):
        """A method's per-worker object (e.g. a donor's CarveField), built once by ``make`` (LRU)."""
        return self._objects.get(key, make)

    def resource(self, key, make: Callable[[], Any]):
        """A per-worker object that is never evicted (e.g. LesionMix's lesion bank)."""
        with self._resource_lock:
            if key not in self._resources:
                self._resources[key] = make()
            return self._resources[key]

    @property
    def harmonizer(self):
        """The harmonizer of ``config.harmonize`` (loaded once per worker), or ``None``."""
        spec = self.plan.config.harmonize
        if not spec:
            return None
        with self._harmonizer_lock:
            if self._harmonizer is None:
                try:
                    from napari_lesionmix.harmonize import load_harmonizer
                except ImportError as exc:
                    raise LesionMixError(f"Harmonization is not available in this installation ({exc}).") from None
                self._harmonizer = load_harmonizer(spec, self.plan.config.harmonize_device)
        return self._harmonizer


# --------------------------------------------------------------------- CarveMix
def _load_carvemix() -> MethodFn:
    """CarveMix (Eq. 7 lambda per sample; options ``per_lesion`` [False], ``connectivity`` [26])."""
    from napari_lesionmix.augment.carvemix import CarveField, carvemix, sample_carvemix

    def run(ctx: ExportContext, rng: np.random.Generator, a) -> MethodResult:
        opts = ctx.plan.config.options.get("carvemix", {})
        per_lesion, conn = bool(opts.get("per_lesion", False)), int(opts.get("connectivity", 26))
        host, donor = ctx.load(a.host_id), ctx.load(a.donor_id)
        # The donor's signed distance is what costs; every sample it donates to reuses it.
        field = ctx.cached(("carvefield", a.donor_id, per_lesion, conn),
                           lambda: CarveField.from_case(donor, per_lesion=per_lesion, connectivity=conn))
        params = sample_carvemix(rng, field, host.case_id, donor.case_id,
                                 seed=ctx.plan.config.seed, sample_index=a.index)
        return MethodResult(carvemix(host, donor, params, field=field), host, (a.host_id, a.donor_id))

    return run


def _unavailable(name: str, module: str, exc: Exception) -> LesionMixError:
    return LesionMixError(
        f"method {name} is not available in this installation (module {module} failed to import: {exc})."
    )


def _optional(name: str, module: str, build: Callable[[Any], MethodFn]) -> Callable[[], MethodFn]:
    """Loader for a method in an optional module: a clear error when that module is missing."""

    def loader() -> MethodFn:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise _unavailable(name, module, exc) from None
        try:
            return build(mod)
        except AttributeError as exc:
            raise _unavailable(name, module, exc) from None

    return loader


# ---------------------------------------------------------------------- Soft-CP
#: Donors tried per Soft-CP sample when a lesion finds no place meeting Eqs. (3)-(4).
SOFTCP_DONOR_TRIES = 3


def _build_softcp(mod) -> MethodFn:
    """Soft-CP with the host's brain mask as the Eq. (3) reference when the dataset has one.

    Options (defaults of :func:`~napari_lesionmix.augment.softcp.sample_softcp`):
    ``n_lesions``, ``a``, ``k_erode``, ``k_dilate``, ``delta1``, ``delta2``,
    ``intensity_compat``, ``placement``, ``jitter_mm``. When no position satisfies the constraints for the
    drawn donor, the sample draws another donor from its own generator (at
    most :data:`SOFTCP_DONOR_TRIES` donors in all), so it stays a function of
    (seed, index); the donor used is the one recorded.
    """
    sample_softcp, softcp, DonorLesions = mod.sample_softcp, mod.softcp, mod.DonorLesions

    def run(ctx: ExportContext, rng: np.random.Generator, a) -> MethodResult:
        opts = dict(ctx.plan.config.options.get("softcp", {}))
        host = ctx.load(a.host_id)
        brain = ctx.brain_mask(a.host_id)
        donor_id = a.donor_id
        others = [d for d in ctx.plan.donor_ids if d != a.host_id] or list(ctx.plan.donor_ids)
        for attempt in range(SOFTCP_DONOR_TRIES):
            donor = ctx.load(donor_id)
            lesions = ctx.cached(("softcp-lesions", donor_id), lambda d=donor: DonorLesions.from_case(d))
            try:
                params = sample_softcp(rng, host, donor, reference_mask=brain, donor_lesions=lesions,
                                       seed=ctx.plan.config.seed, sample_index=a.index, **opts)
                break
            except LesionMixError as exc:
                if attempt == SOFTCP_DONOR_TRIES - 1:
                    raise LesionMixError(f"Soft-CP sample {a.case_id} found no valid placement: {exc}") from None
                donor_id = others[int(rng.integers(len(others)))]
        syn = softcp(host, donor, params, reference_mask=brain, donor_lesions=lesions)
        return MethodResult(syn, host, (a.host_id, donor_id))

    return run


# -------------------------------------------------------------------- LesionMix
def training_dataset(plan):
    """The training pool as a :class:`~napari_lesionmix.io.dataset.Dataset` (held-out cases left out)."""
    from napari_lesionmix.io.dataset import CaseRecord, Dataset

    train = set(plan.train_ids)
    records = [CaseRecord(c.case_id, c.image_paths, c.label_path, c.brain_mask_path)
               for c in plan.cases if c.case_id in train]
    return Dataset(plan.config.dataset, "export-train", records, dict(plan.channel_names), dict(plan.labels))


def _build_lesionmix(mod) -> MethodFn:
    """LesionMix over the training pool only: its lesion bank, likelihood map and load distribution.

    Choices for batch export (documented defaults, each an option): the target
    load is drawn from the ``distribution`` ["real"] (the training cases'
    empirical loads; or low/medium/high/uniform/gaussian with optional
    ``low``/``high``/``mean``/``sd`` in mL), in ``mode`` ["auto"] (populate
    above the host's load, inpaint below), ``lesion_sampling`` ["case"],
    ``intensity_match`` [the module's default]; an
    unreachable target is recorded in the params (``target_reached=False``)
    rather than warned about once per sample.
    """
    from napari_lesionmix.augment.lesion_load import LoadDistribution, dataset_loads
    from napari_lesionmix.augment.lesions import LesionBank
    from napari_lesionmix.augment.likelihood import likelihood_map

    sample_lesionmix, lesionmix = mod.sample_lesionmix, mod.lesionmix

    def resources(ctx: ExportContext):
        opts = ctx.plan.config.options.get("lesionmix", {})

        def make():
            ds = training_dataset(ctx.plan)
            bank = LesionBank(records=ds.cases)
            lmap = likelihood_map(ds)  # sum of the training labels, inside the union of brain masks
            overrides = {k: float(v) for k, v in opts.items() if k in ("low", "high", "mean", "sd")}
            dist = LoadDistribution.from_dataset(dataset_loads(ds), opts.get("distribution", "real"), **overrides)
            return bank, lmap, dist

        return ctx.resource("lesionmix", make)

    def run(ctx: ExportContext, rng: np.random.Generator, a) -> MethodResult:
        bank, lmap, dist = resources(ctx)
        host = ctx.load(a.host_id)
        brain = ctx.brain_mask(a.host_id)
        opts = ctx.plan.config.options.get("lesionmix", {})
        params = sample_lesionmix(rng, host, bank, lmap, distribution=dist, brain_mask=brain,
                                  mode=opts.get("mode", "auto"), lesion_sampling=opts.get("lesion_sampling", "case"),
                                  **({"intensity_match": opts["intensity_match"]} if "intensity_match" in opts else {}),
                                  source_cases=ctx.plan.train_ids, on_unreachable="ignore",
                                  seed=ctx.plan.config.seed, sample_index=a.index)
        syn = lesionmix(host, params, bank=bank, brain_mask=brain)
        donors = sorted({ins.case_id for ins in params.insertions} - {a.host_id})
        return MethodResult(syn, host, (a.host_id, *donors))

    return run


register_method("carvemix", _load_carvemix)
register_method("softcp", _optional("softcp", "napari_lesionmix.augment.softcp", _build_softcp))
register_method("lesionmix", _optional("lesionmix", "napari_lesionmix.augment.lesionmix", _build_lesionmix))


def make_sample(ctx: ExportContext, index: int) -> tuple[Any, MethodResult]:
    """Draw and build synthetic sample ``index`` (harmonized if the plan asks for it)."""
    from napari_lesionmix.export.plan import assign

    a, rng = assign(ctx.plan, index)
    result = get_method(a.method)(ctx, rng, a)
    h = ctx.harmonizer
    if h is not None:
        syn = result.synthetic
        image = h.harmonize(syn.image, syn.mask)
        result.synthetic = Synthetic(image=np.asarray(image, np.float32), label=syn.label, mask=syn.mask,
                                     params=syn.params)
    return a, result
