"""One pipeline for every face: the cases and params sample ``index`` of seed ``seed`` is made of.

The CLI, the studio, export, the PyTorch dataset and the MONAI/TorchIO
transforms all make sample ``index`` of root seed ``seed`` through here, with
one rule for its random streams (:mod:`napari_lesionmix.random`):

* :func:`~napari_lesionmix.random.choice_rng` ``(seed, index)`` holds the
  face's *choices*, always in this order: the method (by weight: export and
  the dataset), whether the item is augmented (``prob``: the online faces),
  the donor, then the host (export). A face that makes no choice draws nothing.
* :func:`~napari_lesionmix.random.sample_rng` ``(seed, index)`` holds only
  the method's params (:meth:`~napari_lesionmix.augment.registry.Method.sample`).
  So sample ``i`` of an export on host ``h`` and donor ``d`` is byte for byte
  ``lesionmix METHOD --seed S --index i`` on ``(h, d)``, and the studio's
  ``i+1``-th press, and ``registry.generate(..., seed=S, index=i)``.
* :func:`~napari_lesionmix.random.retry_rng` ``(seed, index, k)`` holds the
  params of redraw ``k``: when the cases cannot make a sample
  (:class:`~napari_lesionmix.augment.registry.DrawRejected`: no Soft-CP
  position meets Eqs. 3-4) or, where the face asks, the sample would be its
  host unchanged (:func:`~napari_lesionmix.augment.registry.unchanged_host`),
  another donor (another host, for a method without one) is drawn from the
  choice stream and the params from the redraw's stream, at most
  :data:`DONOR_TRIES` times. Every redraw is named in :attr:`Made.redraws`.

Examples
--------
>>> from napari_lesionmix.augment import pipeline
>>> made = pipeline.make(method, 0, 3, host, sources, options, resources,     # doctest: +SKIP
...                      donor_id="sub-07", donor_ids=["sub-07", "sub-06"])
>>> made.synthetic.params.donor_id                                           # doctest: +SKIP
'sub-07'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.augment.registry import (
    DrawRejected,
    Inputs,
    Method,
    Options,
    Sources,
    apply_params,
    sample_params,
    unchanged_host,
    with_provenance,
)
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import Case
from napari_lesionmix.random import retry_rng

#: Draws of one sample when its cases cannot make it (the first draw included).
DONOR_TRIES = 3


@dataclass
class Made:
    """One drawn (and, unless asked otherwise, applied) sample.

    Attributes
    ----------
    params : Params
        With the root seed and sample index recorded.
    inputs : Inputs
        The cases it was drawn on (after redraws, not the first ones chosen).
    synthetic : Synthetic or None
        The applied sample (``None`` from :func:`draw`).
    redraws : tuple of str
        Why each earlier draw was refused (empty when the first made it).
    """

    params: Params
    inputs: Inputs
    synthetic: Synthetic | None = None
    redraws: tuple[str, ...] = ()


def draw(method: Method, seed: int, index: int, host: Case, sources: Sources, options: Options, resources: Any,
         *, donor_id: str | None = None, donor_ids: Sequence[str] = (), host_ids: Sequence[str] = (),
         choice: np.random.Generator | None = None, brain_mask: np.ndarray | None = None,
         retry_on: tuple[type[Exception], ...] = (DrawRejected,), reject_unchanged: bool = False,
         apply: bool = False, name: str | None = None) -> Made:
    """Sample ``index`` of seed ``seed`` on ``host`` (and ``donor_id``), redrawn when its cases cannot make it.

    Parameters
    ----------
    method : Method
    seed, index : int
    host : Case
        The chosen host.
    sources : Sources
        Loads redrawn donors and hosts (``sources.case``) and their brain masks.
    options, resources
        The method's options and prepared resources.
    donor_id : str, optional
        The chosen donor (methods with ``needs_donor``).
    donor_ids, host_ids : sequence of str
        Where a redraw takes another donor (or, for a method without one,
        another host) from; empty: no redraw, the first refusal is raised.
    choice : numpy.random.Generator, optional
        The face's choice stream, positioned after its earlier choices; redraws
        continue it. Needed when ``donor_ids`` or ``host_ids`` are given.
    brain_mask : ndarray, optional
        The host's brain mask (a redrawn host's comes from ``sources.brain_mask``;
        the registry estimates one where there is none).
    retry_on : tuple of exception types
        The refusals that lead to a redraw.
    reject_unchanged : bool
        Also redraw a sample that would be its host unchanged (export does:
        a synthetic case that is a real one is never written).
    apply : bool
        Apply the params too (needed by ``reject_unchanged``'s check of the result).
    name : str, optional
        How the error names the sample (default: its index).

    Raises
    ------
    LesionMixError
        When no draw makes a sample; the sentence names the last refusal.
    """
    redraws: list[str] = []
    host_id = host.case_id
    donors = [d for d in donor_ids if d != host_id] or list(donor_ids)
    untried = [h for h in host_ids if h != host_id]
    # Without a donor the other axis is the host, and a host may admit no change for some targets (one
    # lesion larger than the room left): every host may be tried, then each again with a new target.
    tries = 1 if not (donor_ids or host_ids) else (
        DONOR_TRIES if method.needs_donor else max(DONOR_TRIES, 2 * len(host_ids)))
    last: Exception | None = None
    for attempt in range(tries):
        donor = sources.case(donor_id) if method.needs_donor and donor_id is not None else None
        mask = brain_mask if host.case_id == host_id else sources.brain_mask(host.case_id)
        inputs = Inputs(host, donor, mask)
        try:
            params = with_provenance(sample_params(method, retry_rng(seed, index, attempt), inputs, options,
                                                   resources, sources), seed, index)
            why = unchanged_host(method, params) if reject_unchanged else None
            synthetic = None
            if why is None and (apply or reject_unchanged):
                synthetic = apply_params(method, inputs, params, resources)
                why = unchanged_host(method, params, synthetic) if reject_unchanged else None
            if why is None:
                return Made(params, inputs, synthetic, tuple(redraws))
        except retry_on as exc:
            if tries == 1:
                raise
            last = exc
            why = f"{method.label} could not use these cases: {exc}" if not isinstance(exc, DrawRejected) \
                else f"{method.label} found no valid placement: {exc}"
        redraws.append(f"donor '{donor_id}': {why}" if method.needs_donor else why)
        if attempt == tries - 1:
            break
        if method.needs_donor:
            donor_id = donors[int(choice.integers(len(donors)))]
        elif host_ids:
            pool = untried or list(host_ids)
            host = sources.case(pool.pop(int(choice.integers(len(pool)))))
        else:
            break
    if tries == 1 and last is None:
        raise LesionMixError(f"{redraws[-1]}.")
    raise LesionMixError(f"Sample {name or index} could not be made in {len(redraws)} draws (the last: {redraws[-1]}); "
                         "a synthetic case that is a real one is never written.") from None

