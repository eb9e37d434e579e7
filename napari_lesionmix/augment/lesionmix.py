"""LesionMix (Basaran et al., 2023): lesion-level augmentation with lesion-load control.

A target lesion load ``v ~ P(v)`` (:mod:`~napari_lesionmix.augment.lesion_load`)
is reached from a host scan in one of two modes:

*populate*
    lesions drawn from a :class:`~napari_lesionmix.augment.lesions.LesionBank`
    (connected components of any case) are augmented in 3D (flip, rotation,
    resize, elastic deformation, multiplicative brightness, Gaussian noise),
    and pasted at positions drawn from the lesion likelihood map
    (:mod:`~napari_lesionmix.augment.likelihood`), until the load reaches the
    target. Each pasted lesion is blended with a soft mask ``S`` recomputed
    from its transformed mask (Soft-CP's Eq. 1: ``I = S * I_paste + (1 - S) *
    I_host``); the label is the union ``Y_host U Y_paste`` (host values kept,
    so the synthetic label contains the host label);
*inpaint*
    whole host lesions are removed until the load falls to the target, their
    voxels filled from the surrounding tissue by Telea's fast-marching
    inpainting (:mod:`~napari_lesionmix.augment.inpaint`) and set to
    background in the label.

The random/deterministic split: :func:`sample_lesionmix` makes every random
choice (target load, lesion choice, position, each lesion's transform, the
seeds of its elastic field and noise) and records them in
:class:`LesionMixParams`; :func:`lesionmix` applies them deterministically, so
replaying params reproduces the sample bit for bit.

Choices where the paper is silent (all parameters, defaults in brackets):

* augmentation probabilities (:class:`LesionAugment`): flip 0.5 per axis;
  rotation 0.5 per axis, angle U(1, 89) degrees with a random sign, about the
  array axes in mm space; resize with p 0.5 by one *isotropic* factor
  U(0.5, 1.8) (a lesion keeps its shape); elastic deformation with p 0.5, sigma
  U(3, 7) voxels and a maximum displacement U(0, 2) voxels; brightness with
  p 0.5, factor U(0.9, 1.1); Gaussian noise with p 0.5, sd U(0, 0.1) times the
  transformed crop's sd (per channel). The params types and the field/intensity
  code are the shared primitives of :mod:`~napari_lesionmix.augment.transforms`;
* one resampling: flip, rotation, resize and the elastic field are composed
  (output voxel ``v`` reads the affine pre-image of ``v + u(v)``), about the
  lesion's centroid rounded to the half-voxel grid (so flips are exact), into
  an output crop that holds the whole transformed crop; image linear [or cubic,
  ``image_order=3``], mask by thresholding the linearly interpolated mask at
  0.5 [or nearest, ``mask_mode``], label values by nearest (voxels of the mask
  that nearest misses get the lesion's most frequent class); then brightness,
  then noise. The soft mask is recomputed from the transformed mask;
* intensities are pasted as they are, as in the paper. Through the registry
  (CLI, export, Python ``registry.generate``), the shared ``intensity_match``
  option (``none``, ``brain-linear``, ``histogram``;
  :mod:`~napari_lesionmix.augment.intensity`) maps each *source case*'s crop
  into the host's scale before its transforms, with the map fitted on the two
  cases' normal brain and recorded in ``params.intensity``. The older
  ``sample_lesionmix(..., intensity_match="median")`` of this module (a
  scale-only ratio of the normal-tissue medians, applied after the
  transforms) is kept for params recorded with it and for direct callers;
  ``brain-linear`` supersedes it (it also matches the spread and the offset);
* blending: Soft-CP's soft mask (:func:`~napari_lesionmix.augment.softmask.soft_mask`,
  its defaults a = 0.5, 1 erosion, 4 dilations) in the host's voxel spacing;
* lesion choice ["case"]: a source case uniformly, then one of its lesions
  uniformly (so the few large lesions of stroke-like cases are not drowned by
  the many small MS lesions); ["lesion"]: uniformly over all lesions. The host
  is a source too when it is in the bank. Only lesions that can fit the
  remaining load (volume x smallest resize factor cubed) are candidates;
* position: the lesion's centroid goes to a voxel drawn from the likelihood map
  times the host's brain mask (when given);
* a draw is rejected (and redrawn, at most ``max_attempts`` [1000] draws) when
  it would overshoot ``target + tolerance`` (checked first on volume x scale^3
  against 1.25 x the room left, then exactly on the resampled mask), when less
  than ``min_brain_fraction`` [0.9] of the pasted lesion lies in the brain mask
  (or in the volume), or when more than ``max_overlap`` [0.5] of it overlaps
  lesions already there. Pasted lesions are clipped to the brain mask (label
  and soft mask); the load counts the union of lesion voxels;
* stopping: insertion stops as soon as the load is within the tolerance
  ``max(tolerance_ml [0.05 mL], tolerance_frac [0.05] x target)``;
  ``max_insertions`` [100] caps the pasted lesions;
* inpainting removes whole lesions in a random order, skipping any whose
  removal would fall below ``target - tolerance`` (so a single 50 mL stroke
  lesion and a 10 mL target is reported unreachable rather than emptied); it
  inpaints each removed lesion grown by ``inpaint_dilate`` [1] voxel (the
  partial-volume rim; voxels of kept lesions are never inpainted), with radius
  [3] voxels and three orthogonal slice-wise passes (see
  :mod:`~napari_lesionmix.augment.inpaint`);
* mode ["auto"]: populate when the target is above ``host load - tolerance``,
  inpaint otherwise;
* an unreachable target (populate below the host load, inpaint above it, a cap
  hit, or no lesion small enough) is recorded (``target_reached=False``,
  ``reached_load_ml``) and reported as a :class:`LoadNotReachedWarning`
  [``on_unreachable="warn"``], raised as
  :class:`~napari_lesionmix.errors.LesionMixError` (``"raise"``) or left to the
  caller (``"ignore"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesionmix.augment.lesion_load import (
    DISTRIBUTIONS,
    LoadDistribution,
    dataset_loads,
    lesion_load_ml,
    voxel_volume_ml,
)
from napari_lesionmix.augment.lesionmix_params import MODES, Insertion, LesionMixParams
from napari_lesionmix.augment.lesions import LesionBank, tissue_reference
from napari_lesionmix.augment.likelihood import (
    LikelihoodMap,
    likelihood_map,
    load_likelihood,
)
from napari_lesionmix.augment.load_target import (
    apply_inpaint,
    draw_insertions,
    draw_removals,
    inpaint_region,
    inpaint_shortfall,
    remaining_note,
)
from napari_lesionmix.augment.params import Synthetic
from napari_lesionmix.augment.paste.warp import (
    LesionAugment,
    LesionTransform,
    draw_transform,
    lesion_warp,
    transform_lesion,
    warp_mask,
)
from napari_lesionmix.augment.populate import apply_populate, blend_weights
from napari_lesionmix.augment.registry import Inputs, Method, Options, Sources, option, register
from napari_lesionmix.augment.softmask import (
    DEFAULT_A,
    DEFAULT_K_DILATE,
    DEFAULT_K_ERODE,
)
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import case_brain
from napari_lesionmix.io.nifti import Case

#: The public names of LesionMix, wherever they live now (its params, the load draws and the per-lesion
#: warp moved to their own modules; they stay importable from here).
__all__ = ["MODES", "Insertion", "LesionAugment", "LesionMixMethod", "LesionMixOptions", "LesionMixParams",
           "LesionTransform", "LoadNotReachedWarning", "draw_transform", "inpaint_region", "inpaint_shortfall",
           "blend_weights", "lesion_warp", "lesionmix", "remaining_note", "sample_lesionmix", "transform_lesion", "warp_mask"]


class LoadNotReachedWarning(UserWarning):
    """The target lesion load could not be reached within the tolerance."""


# --------------------------------------------------------------------------- transforms


# --------------------------------------------------------------------------- sampling


def _tolerance(target: float, tolerance_ml: float, tolerance_frac: float) -> float:
    return max(float(tolerance_ml), float(tolerance_frac) * float(target))


#: Target loads drawn at most per sample while they equal the host's own load (a sample that changes nothing).
TARGET_REDRAWS = 16


def sample_lesionmix(
    rng: np.random.Generator,
    host: Case,
    bank: LesionBank,
    likelihood: LikelihoodMap | np.ndarray | None,
    target_load_ml: float | None = None,
    distribution: LoadDistribution | None = None,
    mode: str = "auto",
    brain_mask: np.ndarray | None = None,
    augment: LesionAugment | None = None,
    source_cases: Sequence[str] | None = None,
    lesion_sampling: str = "case",
    tolerance_ml: float = 0.05,
    tolerance_frac: float = 0.05,
    max_insertions: int = 100,
    max_attempts: int = 1000,
    max_overlap: float = 0.5,
    min_brain_fraction: float = 0.9,
    soft_a: float = DEFAULT_A,
    soft_erode: int = DEFAULT_K_ERODE,
    soft_dilate: int = DEFAULT_K_DILATE,
    inpaint_radius: float = 3.0,
    inpaint_axes: Sequence[int] = (0, 1, 2),
    inpaint_dilate: int = 1,
    intensity_match: str = "none",
    on_unreachable: str = "warn",
    seed: int | None = None,
    sample_index: int | None = None,
) -> LesionMixParams:
    """Draw the params of one LesionMix sample (every random choice is made here).

    Parameters
    ----------
    rng : numpy.random.Generator
    host : Case
        The scan to augment (its label is the starting load).
    bank : LesionBank
        Source lesions for populating (any case; the host too if it is in the bank).
    likelihood : LikelihoodMap or ndarray, or None
        Insertion positions are drawn from it (restricted to ``brain_mask``).
        Only needed to populate.
    target_load_ml : float, optional
        The target load; otherwise drawn from ``distribution``.
    distribution : LoadDistribution, optional
    mode : {"auto", "populate", "inpaint"}
    brain_mask : ndarray of bool, optional
        The host's brain mask: positions and pasted lesions stay inside it.
    augment : LesionAugment, optional
        Per-lesion augmentation ranges.
    source_cases : sequence of str, optional
        Restrict the bank to these cases.
    lesion_sampling : {"case", "lesion"}
        Uniform over cases then lesions, or uniform over all lesions.
    tolerance_ml, tolerance_frac : float
        Tolerance ``max(tolerance_ml, tolerance_frac * target)``.
    max_insertions, max_attempts : int
        Caps on pasted lesions and on draws (accepted or rejected).
    max_overlap : float
        Largest fraction of a pasted lesion that may overlap existing lesions.
    min_brain_fraction : float
        Smallest fraction of a pasted lesion that must lie in the brain mask.
    soft_a, soft_erode, soft_dilate
        Soft blending mask (see :func:`~napari_lesionmix.augment.softmask.soft_mask`).
    inpaint_radius, inpaint_axes, inpaint_dilate
        Inpainting (see :func:`~napari_lesionmix.augment.inpaint.inpaint_telea`).
    intensity_match : {"none", "median"}
        Scale pasted lesions to the host's normal-tissue level (see :class:`LesionMixParams`).
    on_unreachable : {"warn", "raise", "ignore"}
    seed, sample_index : int, optional
        Recorded for provenance.

    Returns
    -------
    LesionMixParams
    """
    host.require_label("Host", "LesionMix")
    if mode not in ("auto", *MODES):
        raise LesionMixError(f"LesionMix mode must be 'auto', 'populate' or 'inpaint', got '{mode}'.")
    if on_unreachable not in ("warn", "raise", "ignore"):
        raise LesionMixError(f"on_unreachable must be 'warn', 'raise' or 'ignore', got '{on_unreachable}'.")
    if lesion_sampling not in ("case", "lesion"):
        raise LesionMixError(f"Lesion sampling must be 'case' or 'lesion', got '{lesion_sampling}'.")
    if int(max_insertions) < 0 or int(max_attempts) < 0:
        raise LesionMixError("The insertion and attempt caps must be >= 0.")
    if not (tolerance_ml >= 0 and tolerance_frac >= 0):
        raise LesionMixError(f"Load tolerances must be >= 0, got {tolerance_ml} mL and {tolerance_frac}.")
    for name, v in (("max_overlap", max_overlap), ("min_brain_fraction", min_brain_fraction)):
        if not 0.0 <= v <= 1.0:
            raise LesionMixError(f"{name} must be a fraction in [0, 1], got {v}.")
    if brain_mask is not None:
        brain_mask = np.asarray(brain_mask, bool)
        if brain_mask.shape != host.shape:
            raise LesionMixError(
                f"The brain mask has shape {brain_mask.shape} but host '{host.case_id}' has {host.shape}."
            )
    augment = augment or LesionAugment()
    if target_load_ml is None:
        if distribution is None:
            raise LesionMixError("Give a target lesion load (mL) or a load distribution to draw it from.")
        host_load = lesion_load_ml(host.label, host.spacing)
        # A target the host already has changes nothing (the "real" distribution holds the host's own
        # load): draw again, a bounded number of times; the draws are unchanged whenever the first differs.
        for _ in range(TARGET_REDRAWS):
            target = distribution.sample(rng)
            if abs(target - host_load) > _tolerance(target, tolerance_ml, tolerance_frac):
                break
    else:
        target = float(target_load_ml)
        if not np.isfinite(target) or target < 0:
            raise LesionMixError(f"Target lesion load must be a finite value >= 0 mL, got {target_load_ml}.")
        distribution = None  # an explicit target wins; record only what was used
    host_load = lesion_load_ml(host.label, host.spacing)
    tol = _tolerance(target, tolerance_ml, tolerance_frac)
    if mode == "auto":
        mode = "inpaint" if target < host_load - tol else "populate"
    common = dict(
        host_id=host.case_id, mode=mode, target_load_ml=target, host_load_ml=host_load, tolerance_ml=tol,
        distribution=distribution, augment=augment, soft_a=float(soft_a), soft_erode=int(soft_erode),
        soft_dilate=int(soft_dilate), brain_clip=brain_mask is not None, connectivity=bank.connectivity,
        bank_margin=bank.margin, intensity_match=intensity_match,
        host_reference=tissue_reference(host.image, host.label, brain_mask) if intensity_match != "none" else (),
        inpaint_radius=float(inpaint_radius), inpaint_axes=tuple(int(a) for a in inpaint_axes),
        inpaint_dilate=int(inpaint_dilate), seed=seed, sample_index=sample_index,
    )
    if mode == "inpaint":
        removals, reached, reason = draw_removals(rng, host, bank.connectivity, host_load, target, tol)
        params = LesionMixParams(**common, reached_load_ml=reached, target_reached=abs(reached - target) <= tol,
                                 removals=removals)
    else:
        insertions, reached, reason, refused = draw_insertions(
            rng, host, bank, likelihood, brain_mask, augment, source_cases, lesion_sampling, host_load, target,
            tol, int(max_insertions), int(max_attempts), float(max_overlap), float(min_brain_fraction),
        )
        params = LesionMixParams(**common, reached_load_ml=reached, target_reached=abs(reached - target) <= tol,
                                 insertions=insertions, redrawn=refused[0], redrawn_outside_brain=refused[1])
    if not params.target_reached and on_unreachable != "ignore":
        msg = (
            f"LesionMix reached {params.reached_load_ml:.3f} mL instead of the target "
            f"{target:.3f} +/- {tol:.3f} mL for host '{host.case_id}' ({reason})."
        )
        if on_unreachable == "raise":
            raise LesionMixError(msg)
        warnings.warn(msg, LoadNotReachedWarning, stacklevel=2)
    return params


# --------------------------------------------------------------------------- apply


def lesionmix(
    host: Case,
    params: LesionMixParams,
    bank: LesionBank | None = None,
    brain_mask: np.ndarray | None = None,
    check_load: bool = True,
    timings: dict[str, float] | None = None,
) -> Synthetic:
    """Apply LesionMix params to a host (deterministic).

    Parameters
    ----------
    host : Case
    params : LesionMixParams
    bank : LesionBank
        Source of the pasted lesions (needed in populate mode).
    brain_mask : ndarray of bool, optional
        The host brain mask, required when ``params.brain_clip``.
    check_load : bool
        Verify the result's load equals ``params.reached_load_ml`` (it does unless
        the host, bank or brain mask differ from those the params were drawn with).
    timings : dict, optional
        Populate mode adds the seconds spent per step ("transform", "soft mask",
        "blend") to it, for ``benchmarks/lesionmix_speed.py``.

    Returns
    -------
    Synthetic
        ``mask`` is float32: the union (max) of the pasted lesions' soft masks,
        and 1 on inpainted voxels.
    """
    host.require_label("Host", "LesionMix")
    if params.mode == "inpaint":
        image, label, mask = apply_inpaint(host, params)
    else:
        if params.insertions and bank is None:
            raise LesionMixError("Replaying populate-mode LesionMix params needs the lesion bank.")
        if params.insertions and (bank.connectivity, bank.margin) != (params.connectivity, params.bank_margin):
            raise LesionMixError(
                f"The lesion bank uses connectivity {bank.connectivity} and margin {bank.margin} but the params "
                f"were drawn with {params.connectivity} and {params.bank_margin}; build the bank with those."
            )
        if params.brain_clip:
            if brain_mask is None and params.brain is not None and params.brain.source == "estimated":
                brain_mask = case_brain(host).mask  # drawn in the estimated brain: estimate it again
            if brain_mask is None:
                raise LesionMixError(
                    f"These LesionMix params clip lesions to the brain mask of host '{params.host_id}'; pass it."
                )
            brain_mask = np.asarray(brain_mask, bool)
            if brain_mask.shape != host.shape:
                raise LesionMixError(f"The brain mask has shape {brain_mask.shape} but the host has {host.shape}.")
        image, label, mask = apply_populate(host, params, bank, brain_mask if params.brain_clip else None, timings)
    if check_load:
        load = lesion_load_ml(label, host.spacing)
        if abs(load - params.reached_load_ml) > 0.5 * voxel_volume_ml(host.spacing):
            raise LesionMixError(
                f"Replaying gave {load:.4f} mL but the params record {params.reached_load_ml:.4f} mL; the host, "
                "lesion bank or brain mask differ from those the params were drawn with."
            )
    return Synthetic(image=image, label=label, mask=mask, params=params)


# --------------------------------------------------------------------------- the registered method


@dataclass(frozen=True)
class LesionMixOptions(Options):
    """Settings of LesionMix (the CLI flags and export ``lesionmix.NAME`` keys).

    The target load is ``target_load`` when given, else drawn from ``load_dist``
    over the training set's per-case loads (``real``: their empirical
    distribution), with the ``dist_*`` bounds overriding the dataset's.
    """

    target_load: float | None = option(None, "target lesion load in mL (default: drawn from --load-dist)", low=0.0)
    load_dist: str = option("real", "distribution of the target load over the dataset's loads",
                            choices=DISTRIBUTIONS)
    dist_low: float | None = option(None, "override the distribution's lower bound (mL)", low=0.0)
    dist_high: float | None = option(None, "override the distribution's upper bound (mL)", low=0.0)
    dist_mean: float | None = option(None, "override the gaussian mean (mL)", low=0.0)
    dist_sd: float | None = option(None, "override the gaussian sd (mL)", low=0.0)
    mode: str = option("auto", "populate (add), inpaint (remove) or auto (by the target)",
                       choices=("auto", *MODES))
    lesion_sampling: str = option("case", "draw source lesions uniformly over cases then lesions, or over lesions",
                                  choices=("case", "lesion"))
    likelihood: str | None = option(None, "likelihood map file (default: computed from the training set)")
    sigma_mm: float = option(0.0, "smoothing of a computed likelihood map (mm)", low=0.0)
    tolerance_ml: float = option(0.05, "absolute load tolerance (mL)", low=0.0)
    tolerance_frac: float = option(0.05, "relative load tolerance", low=0.0)
    max_insertions: int = option(100, "cap on pasted lesions", low=0)
    connectivity: int = option(26, "connectivity of the lesions", choices=(6, 18, 26))
    strict: bool = option(False, "fail when the target load is not reached (else it is recorded)")
    # The per-lesion augmentation ranges (LesionAugment's defaults, the paper's); two values each: low high.
    angle_range_deg: tuple[float, ...] = option(LesionAugment.angle_range_deg, "rotation angle range (deg) of "
                                                "a rotated lesion", low=0.0, high=180.0)
    scale_range: tuple[float, ...] = option(LesionAugment.scale_range, "resize factor range of a resized lesion",
                                            low=0.0, open_low=True)
    p_elastic: float = option(LesionAugment.p_elastic, "probability of an elastic deformation per lesion",
                              low=0.0, high=1.0)
    brightness_range: tuple[float, ...] = option(LesionAugment.brightness_range, "brightness factor range of "
                                                 "a brightened lesion", low=0.0)
    noise_range: tuple[float, ...] = option(LesionAugment.noise_range, "noise sd range (x the lesion's sd)",
                                            low=0.0)

    def __post_init__(self):
        super().__post_init__()
        for name in ("angle_range_deg", "scale_range", "brightness_range", "noise_range"):
            if len(getattr(self, name)) != 2:
                raise LesionMixError(f"Option lesionmix.{name} needs two values, low and high, got "
                                     f"{getattr(self, name)}.")
        self.augment()  # the ranges' own checks (low <= high)

    def augment(self) -> LesionAugment:
        """The per-lesion augmentation these options ask for."""
        return LesionAugment(angle_range_deg=self.angle_range_deg, scale_range=self.scale_range,
                             p_elastic=self.p_elastic, brightness_range=self.brightness_range,
                             noise_range=self.noise_range)

    def distribution(self, loads) -> LoadDistribution:
        overrides = {k: v for k, v in (("low", self.dist_low), ("high", self.dist_high),
                                       ("mean", self.dist_mean), ("sd", self.dist_sd)) if v is not None}
        return LoadDistribution.from_dataset(loads, self.load_dist, **overrides)


@dataclass
class LesionMixResources:
    """What every LesionMix sample of a training set shares (built once by :meth:`LesionMixMethod.prepare`).

    Attributes
    ----------
    bank : LesionBank
        The training set's lesions.
    likelihood : LikelihoodMap
        Where lesions are placed.
    distribution : LoadDistribution or None
        The target load's distribution (``None`` when the options give the target).
    source_ids : tuple of str
        The cases lesions may come from.
    """

    bank: LesionBank
    likelihood: LikelihoodMap | None
    distribution: LoadDistribution | None
    source_ids: tuple[str, ...]


@register
class LesionMixMethod(Method):
    """LesionMix through the :mod:`~napari_lesionmix.augment.registry` protocol (training set as lesion source)."""

    name = "lesionmix"
    label = "LesionMix"
    summary = "populate or inpaint lesions of a host scan until a target lesion load is reached"
    brain_in_apply = True  # pasted lesions are clipped to the host brain
    Options = LesionMixOptions
    Params = LesionMixParams
    needs_donor = False
    needs_training_set = True

    def prepare(self, sources: Sources, options: LesionMixOptions) -> LesionMixResources:
        ds = sources.training_set()
        if ds is None or not len(ds.cases):
            held = sources.training_cases()
            if held:
                return self._prepare_held(sources, options, held)
            raise LesionMixError("LesionMix needs a training set (a dataset folder) as its lesion source.")
        # Built once per training set (a face that prepares for every sample, the studio, reuses them).
        # The bank reads every training label; the likelihood map and the loads are summed from its
        # lesion masks (every label voxel lies in one), not read again.
        key = (str(getattr(ds, "root", "")), tuple(ds.case_ids))
        bank = sources.cached(("lesionmix-bank", *key, options.connectivity),
                              lambda: LesionBank(records=ds.cases, connectivity=options.connectivity))
        if options.likelihood:
            lmap = load_likelihood(options.likelihood)
        else:  # training labels, inside the brain masks
            lmap = sources.cached(("lesionmix-likelihood", *key, options.sigma_mm),
                                  lambda: likelihood_map(ds, sigma_mm=options.sigma_mm, bank=bank))
        if options.target_load is not None:  # the target is given: no distribution, no pass over the labels
            return LesionMixResources(bank, lmap, None, tuple(ds.case_ids))
        loads = sources.cached(("lesionmix-loads", *key), lambda: dataset_loads(ds, bank=bank))
        return LesionMixResources(bank, lmap, options.distribution(loads), tuple(ds.case_ids))

    def _prepare_held(self, sources: Sources, options: LesionMixOptions, held) -> LesionMixResources:
        """:meth:`prepare` over cases in memory (donors through a pre-transform), on the grid they share."""
        cases = [c for c, _ in held]
        ids = tuple(c.case_id for c in cases)
        bank = sources.cached(("lesionmix-bank", "held", ids, options.connectivity),
                              lambda: LesionBank(cases=cases, connectivity=options.connectivity))
        if options.likelihood:
            lmap = load_likelihood(options.likelihood)
        else:  # as for files: the training labels, inside the union of the cases' brain masks (if any)
            brains = [b for _, b in held if b is not None]
            union = np.logical_or.reduce(brains) if brains else None
            lmap = sources.cached(("lesionmix-likelihood", "held", ids, options.sigma_mm),
                                  lambda: likelihood_map(cases, brain_mask=union, sigma_mm=options.sigma_mm))
        loads = {c.case_id: lesion_load_ml(c.label, c.spacing) for c in cases}
        return LesionMixResources(bank, lmap, options.distribution(loads), ids)

    def sample(self, rng, inputs: Inputs, options: LesionMixOptions, resources: LesionMixResources) -> LesionMixParams:
        host = inputs.host
        lmap = resources.likelihood
        if lmap is not None and lmap.shape != host.shape:
            raise LesionMixError(
                f"The likelihood map has shape {lmap.shape} but host '{host.case_id}' has {host.shape}; "
                "they must share a grid."
            )
        return sample_lesionmix(
            rng, host, resources.bank, lmap, target_load_ml=options.target_load,
            distribution=resources.distribution, mode=options.mode, brain_mask=inputs.brain_mask,
            source_cases=resources.source_ids, lesion_sampling=options.lesion_sampling,
            tolerance_ml=options.tolerance_ml, tolerance_frac=options.tolerance_frac,
            max_insertions=options.max_insertions, augment=options.augment(),
            on_unreachable="raise" if options.strict else "ignore",
        )

    def unchanged_reason(self, params: LesionMixParams) -> str | None:
        if params.insertions or params.removals:
            return None
        return (f"no lesion was {'pasted' if params.mode == 'populate' else 'inpainted'} (target "
                f"{params.target_load_ml:.3f} mL, host load {params.host_load_ml:.3f} mL)")

    def shortfall(self, host: Case, params: LesionMixParams) -> str | None:
        if params.target_reached:
            return None
        if params.mode == "populate" and params.host_load_ml > params.target_load_ml + params.tolerance_ml:
            return "populating only adds lesions and the host load is above the target (inpaint, or auto, removes)"
        return inpaint_shortfall(host, params)

    def apply(self, inputs: Inputs, params: LesionMixParams, resources: LesionMixResources) -> Synthetic:
        return lesionmix(inputs.host, params, resources.bank, brain_mask=inputs.brain_mask)

    def source_ids(self, params: LesionMixParams) -> tuple[str, ...]:
        return (params.host_id, *sorted({ins.case_id for ins in params.insertions} - {params.host_id}))

    def options_for(self, params: LesionMixParams) -> LesionMixOptions:
        return LesionMixOptions(connectivity=params.connectivity)

    def describe(self, synthetic: Synthetic) -> str:
        p = synthetic.params
        text = p.report()
        if not p.target_reached:
            text += (f"; the target load {p.target_load_ml:.3f} mL was not reached "
                     f"(got {p.reached_load_ml:.3f} mL)")
        return text
