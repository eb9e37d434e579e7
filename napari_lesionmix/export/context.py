"""What one export worker keeps between samples, and how it makes sample ``i``.

:class:`ExportContext` is the export face's
:class:`~napari_lesionmix.augment.registry.Sources`: it loads the real cases
of the training pool once per worker (LRU, bounded in bytes), keeps each
method's prepared resources (a donor's CarveField, LesionMix's lesion bank,
likelihood map and load distribution, built from the training pool only) and
the harmonizer. :func:`make_sample` draws the method, host and donor of sample
``i`` (:func:`~napari_lesionmix.export.plan.assign`), then the method's params
from the same generator, through the registry: any registered method exports,
with ``--option METHOD.NAME=VALUE`` checked against its ``Options``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_lesionmix.augment import pipeline
from napari_lesionmix.augment.params import Synthetic
from napari_lesionmix.augment.registry import BRAIN_STATS_KEY, Method, get_method
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export.plan import Assignment, ExportPlan, assign
from napari_lesionmix.io.brain import load_brain_mask
from napari_lesionmix.io.cache import LRUCache
from napari_lesionmix.io.dataset import CaseRecord, Dataset
from napari_lesionmix.io.nifti import Case, load_case

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
    #: Why earlier draws of this sample were refused (empty when the first draw made it).
    redraws: tuple[str, ...] = ()




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
        self._cases = LRUCache(cache_size, cache_bytes, _case_bytes)
        self._objects = LRUCache(cache_size)
        self._brains = LRUCache(cache_size, cache_bytes, lambda mask: mask.nbytes)
        self._stats = LRUCache(1 << 16)
        self._harmonizer = None
        self._harmonizer_lock = threading.Lock()
        self._resources: dict[Any, Any] = {}
        self._resource_lock = threading.Lock()

    def case(self, case_id: str) -> Case:
        """The real case ``case_id``, loaded once per worker."""
        rec = self.plan.case(case_id)
        return self._cases.get(case_id, lambda: load_case(rec.image_paths, rec.label_path, case_id=rec.case_id))

    def brain_mask(self, case_id: str) -> np.ndarray | None:
        """The case's brain mask (bool) or ``None``."""
        rec = self.plan.case(case_id)
        if rec.brain_mask_path is None:
            return None
        # Own cache: masks must not evict the donors' distance fields every method keeps in _objects.
        return self._brains.get(case_id, lambda: load_brain_mask(rec.brain_mask_path)[0])

    def cached(self, key, make: Callable[[], Any]):
        """A method's per-worker object (e.g. a donor's CarveField), built once by ``make`` (LRU).

        Normal-brain statistics (a few floats per case) are kept apart, so they never evict a donor field.
        """
        if isinstance(key, tuple) and key and key[0] == BRAIN_STATS_KEY:
            return self._stats.get(key, make)
        return self._objects.get(key, make)

    def training_set(self) -> Dataset:
        """The training pool as a :class:`~napari_lesionmix.io.dataset.Dataset` (held-out cases left out)."""
        return training_dataset(self.plan)

    def training_cases(self) -> None:
        """Exports read their training set from files (:meth:`training_set`)."""
        return None

    def prepared(self, method: Method) -> tuple[Any, Any]:
        """``(options, resources)`` of a method for this export, prepared once per worker (never evicted)."""
        with self._resource_lock:
            if method.name not in self._resources:
                options = method.Options.from_dict(self.plan.config.options.get(method.name, {}))
                self._resources[method.name] = (options, method.prepare(self, options))
            return self._resources[method.name]

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


def training_dataset(plan: ExportPlan) -> Dataset:
    """The training pool of a plan as a :class:`~napari_lesionmix.io.dataset.Dataset`."""
    train = set(plan.train_ids)
    records = [CaseRecord(c.case_id, c.image_paths, c.label_path, c.brain_mask_path)
               for c in plan.cases if c.case_id in train]
    return Dataset(plan.config.dataset, "export-train", records, dict(plan.channel_names), dict(plan.labels))


def _draw_and_apply(ctx: ExportContext, choice: np.random.Generator, a: Assignment) -> MethodResult:
    """Sample ``a`` through the pipeline (:func:`~napari_lesionmix.augment.pipeline.draw`).

    A draw whose cases cannot make it, or that would be its host unchanged (a
    LesionMix draw that pastes and inpaints nothing), is drawn again with
    another donor (another host, for a method without one), so the sample
    stays a function of (seed, index); the cases used are the ones recorded,
    and every redraw is named in :attr:`MethodResult.redraws` (the manifest's ``"redrawn"``).
    """
    method = get_method(a.method)
    options, resources = ctx.prepared(method)
    made = pipeline.draw(method, ctx.plan.config.seed, a.index, ctx.case(a.host_id), ctx, options, resources,
                         donor_id=a.donor_id if method.needs_donor else None, donor_ids=ctx.plan.donor_ids,
                         host_ids=ctx.plan.train_ids, choice=choice, brain_mask=ctx.brain_mask(a.host_id),
                         reject_unchanged=True, apply=True, name=a.case_id)
    return MethodResult(made.synthetic, made.inputs.host, method.source_ids(made.params), made.redraws)


def make_sample(ctx: ExportContext, index: int) -> tuple[Assignment, MethodResult]:
    """Draw and build synthetic sample ``index`` (harmonized if the plan asks for it)."""
    a, rng = assign(ctx.plan, index)
    result = _draw_and_apply(ctx, rng, a)
    h = ctx.harmonizer
    if h is not None:
        syn = result.synthetic
        # The label lets HM and anchored ARHNet read the host's own lesions (harmonize/anchor.py); the
        # spacing lets ARHNet run at its training spacing, as the studio and the CLI do.
        image = h.harmonize(syn.image, syn.mask, label=syn.label, spacing=result.host.spacing)
        result.synthetic = Synthetic(image=np.asarray(image, np.float32), label=syn.label, mask=syn.mask,
                                     params=syn.params)
    return a, result
