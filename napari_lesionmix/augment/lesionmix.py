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

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.inpaint import inpaint_telea
from napari_lesionmix.augment.intensity import map_for
from napari_lesionmix.augment.lesion_load import (
    DISTRIBUTIONS,
    LoadDistribution,
    dataset_loads,
    lesion_load_ml,
    voxel_volume_ml,
)
from napari_lesionmix.augment.lesions import Lesion, LesionBank, label_components, tissue_reference
from napari_lesionmix.augment.likelihood import (
    LikelihoodMap,
    likelihood_map,
    load_likelihood,
    normalise,
    positions_from_cdf,
)
from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.augment.registry import Inputs, Method, Options, Sources, option, register
from napari_lesionmix.augment.softmask import (
    DEFAULT_A,
    DEFAULT_K_DILATE,
    DEFAULT_K_ERODE,
    soft_mask,
    soft_paste,
)
from napari_lesionmix.augment.transforms import (
    AffineParams,
    ElasticParams,
    IntensityParams,
    apply_intensity,
    compose,
    displacement_field,
)
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import case_brain
from napari_lesionmix.io.nifti import AFFINE_TOLERANCE_MM, Case

MODES = ("populate", "inpaint")

#: A draw whose resized lesion volume exceeds this factor times the load still
#: allowed is rejected before resampling (the exact check follows for the rest).
OVERSHOOT_SLACK = 1.25


class LoadNotReachedWarning(UserWarning):
    """The target lesion load could not be reached within the tolerance."""


@dataclass(frozen=True)
class LesionAugment:
    """Ranges and probabilities of the per-lesion 3D augmentation (see the module docstring)."""

    p_flip: float = 0.5
    p_rotate: float = 0.5
    angle_range_deg: tuple[float, float] = (1.0, 89.0)
    p_scale: float = 0.5
    scale_range: tuple[float, float] = (0.5, 1.8)
    p_elastic: float = 0.5
    elastic_sigma_range: tuple[float, float] = (3.0, 7.0)
    elastic_alpha_range: tuple[float, float] = (0.0, 2.0)
    p_brightness: float = 0.5
    brightness_range: tuple[float, float] = (0.9, 1.1)
    p_noise: float = 0.5
    noise_range: tuple[float, float] = (0.0, 0.1)
    image_order: int = 1
    mask_mode: str = "threshold"

    def __post_init__(self):
        for name in ("p_flip", "p_rotate", "p_scale", "p_elastic", "p_brightness", "p_noise"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise LesionMixError(f"Augmentation probability {name} must be in [0, 1], got {v}.")
        for name in ("angle_range_deg", "scale_range", "elastic_sigma_range", "elastic_alpha_range",
                     "brightness_range", "noise_range"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise LesionMixError(f"Augmentation range {name} must be finite with low <= high, got ({lo}, {hi}).")
        if self.scale_range[0] <= 0:
            raise LesionMixError(f"Resize factors must be > 0, got {self.scale_range}.")
        if self.image_order not in (1, 3):
            raise LesionMixError(f"Image interpolation order must be 1 (linear) or 3 (cubic), got {self.image_order}.")
        if self.mask_mode not in ("threshold", "nearest"):
            raise LesionMixError(f"Mask resampling must be 'threshold' or 'nearest', got '{self.mask_mode}'.")

    @property
    def min_scale(self) -> float:
        return self.scale_range[0] if self.p_scale > 0 else 1.0


@dataclass(frozen=True)
class LesionTransform:
    """One lesion's drawn augmentation, in the shared primitives' params types.

    Attributes
    ----------
    affine : AffineParams
        Flips, rotations (degrees about array axes 0, 1, 2, in mm space) and
        the isotropic resize, about the lesion's centroid.
    elastic : ElasticParams or None
        Smooth random displacement (sigma and maximum displacement in voxels,
        seeded), composed with the affine into one resampling.
    intensity : tuple of IntensityParams
        ``brightness`` (multiplicative) then ``noise`` (sd a fraction of the
        crop's sd per channel, seeded), applied after the resampling.
    """

    affine: AffineParams = field(default_factory=AffineParams)
    elastic: ElasticParams | None = None
    intensity: tuple[IntensityParams, ...] = ()


@dataclass(frozen=True)
class Insertion:
    """One pasted lesion: source, transform and the host voxel its centroid goes to."""

    case_id: str
    lesion_index: int
    position: tuple[int, int, int]
    transform: LesionTransform = field(default_factory=LesionTransform)


@dataclass(frozen=True)
class LesionMixParams(Params):
    """Everything needed to replay one LesionMix sample.

    Attributes
    ----------
    host_id : str
    mode : {"populate", "inpaint"}
    target_load_ml, host_load_ml, reached_load_ml, tolerance_ml : float
        Target, starting and reached lesion load (mL), and the tolerance.
    target_reached : bool
        ``|reached - target| <= tolerance``.
    insertions : tuple of Insertion
        Populate mode: pasted lesions, in paste order.
    removals : tuple of int
        Inpaint mode: removed host lesion indices (components of the host label).
    distribution : LoadDistribution or None
        Where the target was drawn from (``None`` for a given target).
    augment : LesionAugment
        Interpolation settings used by the transforms (and the draw ranges).
    soft_a, soft_erode, soft_dilate : float, int, int
        Soft mask coefficient ``a`` and erosion/dilation iterations (Soft-CP).
    brain_clip : bool
        Pasted lesions were clipped to the host's brain mask (replay needs it).
    intensity_match : {"none", "median"}
        ``"median"`` scales each pasted lesion, per channel, by the ratio of the
        host's to the source case's normal-tissue median (``host_reference`` /
        :attr:`Lesion.reference`), so lesions from brighter scans keep their
        contrast to the tissue rather than their raw values.
    host_reference : tuple of float
        The host's per-channel normal-tissue median (recorded for replay).
    connectivity : int
        Lesion components (host removals and the bank).
    bank_margin : int
        Crop margin of the bank's lesions (it frames the transforms, so replay needs the same).
    inpaint_radius, inpaint_axes, inpaint_dilate
        See :func:`~napari_lesionmix.augment.inpaint.inpaint_telea`.
    seed, sample_index : int or None
        Provenance.
    redrawn : int
        Populate: insertion draws refused (too large, outside the volume, on
        other lesions, over the target) before the pasted ones were found.
    redrawn_outside_brain : int
        Of those, the ones refused because less than ``min_brain_fraction`` of
        the lesion lay in the host's brain.
    """

    method = "lesionmix"
    host_id: str
    mode: str
    target_load_ml: float
    host_load_ml: float
    reached_load_ml: float
    tolerance_ml: float
    target_reached: bool
    insertions: tuple[Insertion, ...] = ()
    removals: tuple[int, ...] = ()
    distribution: LoadDistribution | None = None
    augment: LesionAugment = field(default_factory=LesionAugment)
    soft_a: float = DEFAULT_A
    soft_erode: int = DEFAULT_K_ERODE
    soft_dilate: int = DEFAULT_K_DILATE
    brain_clip: bool = False
    intensity_match: str = "none"
    host_reference: tuple[float, ...] = ()
    connectivity: int = 26
    bank_margin: int = 4
    inpaint_radius: float = 3.0
    inpaint_axes: tuple[int, ...] = (0, 1, 2)
    inpaint_dilate: int = 1
    seed: int | None = None
    sample_index: int | None = None
    redrawn: int = 0
    redrawn_outside_brain: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise LesionMixError(f"LesionMix mode must be 'populate' or 'inpaint', got '{self.mode}'.")
        if not np.isfinite(self.target_load_ml) or self.target_load_ml < 0:
            raise LesionMixError(f"Target lesion load must be a finite value >= 0 mL, got {self.target_load_ml}.")
        if self.mode == "inpaint" and self.insertions:
            raise LesionMixError("Inpaint-mode LesionMix params cannot hold insertions.")
        if self.mode == "populate" and self.removals:
            raise LesionMixError("Populate-mode LesionMix params cannot hold removals.")
        if not 0.0 < float(self.soft_a) < 1.0:
            raise LesionMixError(f"The soft mask coefficient a must lie in (0, 1), got {self.soft_a}.")
        if min(int(self.soft_erode), int(self.soft_dilate), int(self.inpaint_dilate)) < 0:
            raise LesionMixError("Soft mask erosion/dilation and inpainting dilation must be >= 0 iterations.")
        if self.connectivity not in (6, 18, 26):
            raise LesionMixError(f"Connectivity must be 6, 18 or 26, got {self.connectivity}.")
        if self.intensity_match not in ("none", "median"):
            raise LesionMixError(f"Intensity matching must be 'none' or 'median', got '{self.intensity_match}'.")

    def report(self) -> str:
        """One line: reached vs target load."""
        ok = "reached" if self.target_reached else "NOT reached"
        n = f"{len(self.insertions)} lesion(s) pasted" if self.mode == "populate" else f"{len(self.removals)} lesion(s) inpainted"
        if self.redrawn:
            n += f"; {self.redrawn} draw(s) refused, {self.redrawn_outside_brain} of them outside the brain"
        return (
            f"{self.mode}: host {self.host_load_ml:.3f} mL -> {self.reached_load_ml:.3f} mL, target "
            f"{self.target_load_ml:.3f} +/- {self.tolerance_ml:.3f} mL {ok} ({n})"
        )


# --------------------------------------------------------------------------- transforms


def draw_transform(rng: np.random.Generator, aug: LesionAugment) -> LesionTransform:
    """Draw one lesion's augmentation (a fixed order of draws, so streams are reproducible)."""
    flip = tuple(bool(rng.random() < aug.p_flip) for _ in range(3))
    angles = []
    for _ in range(3):
        on, mag, sign = rng.random() < aug.p_rotate, rng.uniform(*aug.angle_range_deg), rng.random() < 0.5
        angles.append(float(mag * (-1 if sign else 1)) if on else 0.0)
    scale = float(rng.uniform(*aug.scale_range)) if rng.random() < aug.p_scale else 1.0
    affine = AffineParams("affine", flip, tuple(angles), (scale, scale, scale))
    elastic = None
    if rng.random() < aug.p_elastic:
        sigma = float(rng.uniform(*aug.elastic_sigma_range))
        magnitude = float(rng.uniform(*aug.elastic_alpha_range))
        elastic = ElasticParams(sigma, magnitude, int(rng.integers(2**31 - 1)))
    ops = []
    if rng.random() < aug.p_brightness:
        ops.append(IntensityParams("brightness", float(rng.uniform(*aug.brightness_range))))
    if rng.random() < aug.p_noise:
        ops.append(IntensityParams("noise", float(rng.uniform(*aug.noise_range)), int(rng.integers(2**31 - 1))))
    return LesionTransform(affine, elastic, tuple(ops))


@dataclass(eq=False)
class _Warp:
    """How one transformed lesion crop samples its source crop.

    Output voxel ``v`` reads source coordinate ``A (v + u(v) - o) + c`` with
    ``A`` the inverse affine (voxel units), ``o`` the output position of the
    centre ``c`` and ``u`` the elastic field (zero in the ``pad`` ring).
    """

    shape: tuple[int, int, int]
    center: np.ndarray  # the transform's centre, in output crop voxels
    pad: int
    inverse: np.ndarray | None = None  # None: identity (a pure pad)
    source_center: np.ndarray | None = None
    disp: np.ndarray | None = None  # (3, *unpadded shape) float32 elastic field, voxels
    _coords: np.ndarray | None = None

    def offset(self) -> np.ndarray:
        return self.source_center - self.inverse @ self.center

    def coords(self) -> np.ndarray:
        """Source coordinates of every output voxel (elastic warps), computed once."""
        if self._coords is None:
            grid = np.indices(self.shape, dtype=np.float64)
            p = self.pad
            core = (slice(None), *(slice(p, n - p) for n in self.shape))
            grid[core] += self.disp
            self._coords = np.tensordot(self.inverse, grid, axes=1) + self.offset()[:, None, None, None]
        return self._coords

    def resample(self, vol: np.ndarray, order: int, mode: str = "constant", cval: float = 0.0) -> np.ndarray:
        if self.inverse is None:
            return _pad(vol, self.shape, "edge" if mode == "nearest" else "constant")
        if self.disp is None:  # affine only: no coordinate array needed
            return ndi.affine_transform(vol, self.inverse, offset=self.offset(), output_shape=self.shape,
                                        order=order, mode=mode, cval=cval, prefilter=order > 1)
        return ndi.map_coordinates(vol, self.coords(), order=order, mode=mode, cval=cval, prefilter=order > 1)


def lesion_warp(lesion: Lesion, tf: LesionTransform, pad: int = 0) -> _Warp:
    """The resampling of flip, rotation, resize (about the centroid, in mm) and elastic field.

    Forward map in voxels: ``x_out = D^-1 R s F D (x_in - c) + c_out`` with
    ``D = diag(spacing)`` (:func:`~napari_lesionmix.augment.transforms.compose`).
    The output crop is the bounding box of the transformed input crop, grown by
    ``pad`` voxels for the soft mask's dilation; the elastic field
    (:func:`~napari_lesionmix.augment.transforms.displacement_field`) lives on
    the unpadded box, so a warp with any ``pad`` gives the same lesion, merely
    framed differently (the sampler warps masks with ``pad=0``).
    """
    # Centre on the half-voxel grid nearest the centroid, and keep the output grid
    # offset from it by whole voxels: flips (and the identity) then map voxel
    # centres onto voxel centres exactly, with no interpolation loss.
    c = np.round(2 * lesion.centroid_in_crop) / 2
    in_shape = np.array(lesion.mask.shape)
    m, t = compose([tf.affine], lesion.spacing)  # voxel units; rotations act in mm
    elastic = tf.elastic is not None and tf.elastic.magnitude > 0
    if np.allclose(m, np.eye(3), rtol=0, atol=1e-12) and not elastic and not np.any(t):
        return _Warp(tuple(int(s + 2 * pad) for s in in_shape), c + pad, pad)
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in in_shape], indexing="ij")).reshape(3, -1)
    out = m @ (corners - c[:, None]) + c[:, None] + t[:, None]
    shift = -np.floor(out.min(axis=1) + 0.5)  # whole voxels
    core = tuple(int(v) for v in np.ceil(out.max(axis=1) - 0.5 + shift) + 1)
    disp = displacement_field(core, tf.elastic) if elastic else None
    shape = tuple(n + 2 * pad for n in core)
    # Output voxel v reads the affine pre-image of v + u(v): one resampling, not two.
    return _Warp(shape, c + shift + t + pad, pad, np.linalg.inv(m), c, disp)


def _pad(a: np.ndarray, shape, mode: str) -> np.ndarray:
    """Centre-pad the trailing 3 axes of ``a`` to ``shape`` (identity warps with a pad)."""
    extra = [(n - s) // 2 for s, n in zip(a.shape[-3:], shape, strict=True)]
    if not any(extra):
        return a.copy()
    width = [(0, 0)] * (a.ndim - 3) + [(e, e) for e in extra]
    return np.pad(a, width, mode=mode)


def warp_mask(lesion: Lesion, warp: _Warp, aug: LesionAugment) -> np.ndarray:
    """The lesion's binary mask resampled on the warp (threshold of linear, or nearest)."""
    if aug.mask_mode == "threshold":
        return warp.resample(lesion.mask.astype(np.float32), 1) >= 0.5
    return warp.resample(lesion.mask.view(np.uint8), 0) > 0


def transform_lesion(lesion: Lesion, tf: LesionTransform, aug: LesionAugment, pad: int = 0):
    """Apply a drawn transform to a lesion crop.

    Returns
    -------
    image : (C, *shape) float32
    mask : (*shape) bool
    label : (*shape) integer, non-zero exactly on ``mask``
    warp : _Warp
    """
    warp = lesion_warp(lesion, tf, pad)
    mask = warp_mask(lesion, warp, aug)
    image = np.stack([warp.resample(ch, aug.image_order, "nearest").astype(np.float32) for ch in lesion.image])
    lab = warp.resample(lesion.label, 0)
    # Threshold resampling can mark voxels nearest-neighbour labels miss: give them the
    # lesion's most frequent class, so the label is non-zero exactly on the mask.
    values = lesion.label[lesion.mask]
    common = np.bincount(values).argmax() if values.size else 1
    lab = np.where(mask, np.where(lab != 0, lab, common), 0).astype(lesion.label.dtype)
    if tf.intensity:
        image = apply_intensity(image, tf.intensity)
    return image, mask, lab, warp


def _placement(position, warp: _Warp, host_shape):
    """Host box and crop box for a crop whose centroid goes to ``position`` (clipped to the host)."""
    # floor(x + 0.5), not np.round (half to even), so that a pad shifts the origin by exactly the pad.
    origin = np.asarray(position, int) - np.floor(warp.center + 0.5).astype(int)
    host_box, crop_box = [], []
    for o, n, h in zip(origin, warp.shape, host_shape, strict=True):
        a, b = max(o, 0), min(o + n, h)
        if a >= b:
            return None, None
        host_box.append(slice(a, b))
        crop_box.append(slice(a - o, b - o))
    return tuple(host_box), tuple(crop_box)


# --------------------------------------------------------------------------- sampling


def _check_bank_grid(host: Case, lesions: Sequence[Lesion]) -> None:
    if lesions and np.max(np.abs(np.asarray(lesions[0].spacing) - np.asarray(host.spacing))) > AFFINE_TOLERANCE_MM:
        raise LesionMixError(
            f"Host '{host.case_id}' has voxel size {tuple(round(s, 4) for s in host.spacing)} mm but the lesion "
            f"bank's cases have {tuple(round(s, 4) for s in lesions[0].spacing)} mm; resample to one grid."
        )


def _tolerance(target: float, tolerance_ml: float, tolerance_frac: float) -> float:
    return max(float(tolerance_ml), float(tolerance_frac) * float(target))


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
        target = distribution.sample(rng)
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
        removals, reached, reason = _draw_removals(rng, host, bank.connectivity, host_load, target, tol)
        params = LesionMixParams(**common, reached_load_ml=reached, target_reached=abs(reached - target) <= tol,
                                 removals=removals)
    else:
        insertions, reached, reason, refused = _draw_insertions(
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


def _draw_removals(rng, host: Case, connectivity: int, host_load: float, target: float, tol: float):
    """Remove whole lesions in random order while the load stays >= target - tol."""
    comps, n = label_components(host.label, connectivity)
    counts = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    vols = counts * voxel_volume_ml(host.spacing)
    load, removals = host_load, []
    if host_load < target - tol:
        return (), host_load, "inpainting only removes lesions and the host load is below the target"
    for k in rng.permutation(n):
        if load <= target + tol:
            break
        if load - vols[k] >= target - tol:
            removals.append(int(k))
            load -= float(vols[k])
    # Recount from voxels: the running sum accumulates float error.
    kept = int(np.count_nonzero(host.label)) - int(counts[removals].sum()) if removals else int(np.count_nonzero(host.label))
    load = kept * voxel_volume_ml(host.spacing)
    reason = "" if abs(load - target) <= tol else remaining_note(np.delete(vols, removals))
    return tuple(sorted(removals)), load, reason


def remaining_note(volumes_ml) -> str:
    """Why inpainting stopped short, naming what is left (e.g. "the remaining load is one 45.0 mL lesion")."""
    v = np.asarray(volumes_ml, float)
    if not v.size:
        return "no lesion remains"
    if v.size == 1:
        return f"the remaining load is one {v[0]:.1f} mL lesion, which cannot go without undershooting the target"
    return (f"the remaining load is {v.size} lesions of {v.sum():.1f} mL (the smallest {v.min():.1f} mL, the "
            f"largest {v.max():.1f} mL), none of which can go without undershooting the target")


def inpaint_shortfall(host: Case, params: LesionMixParams) -> str | None:
    """:func:`remaining_note` of inpainting params that missed their target (``None`` otherwise)."""
    if params.mode != "inpaint" or params.target_reached:
        return None
    if params.host_load_ml < params.target_load_ml:
        return "inpainting only removes lesions and the host load is below the target"
    comps, n = label_components(host.label, params.connectivity)
    counts = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    return remaining_note(np.delete(counts, list(params.removals)) * voxel_volume_ml(host.spacing))


def _draw_insertions(rng, host, bank, likelihood, brain, aug, source_cases, lesion_sampling, host_load, target,
                     tol, max_insertions, max_attempts, max_overlap, min_brain_fraction):
    vox_ml = voxel_volume_ml(host.spacing)
    if host_load > target + tol:
        return (), host_load, "populating only adds lesions and the host load is above the target", (0, 0)
    if host_load >= target - tol:
        return (), host_load, "", (0, 0)
    if likelihood is None:
        raise LesionMixError("Populating needs a lesion likelihood map for the insertion positions.")
    lmap = likelihood if isinstance(likelihood, LikelihoodMap) else LikelihoodMap(normalise(likelihood))
    if lmap.shape != host.shape:
        raise LesionMixError(
            f"The likelihood map has shape {lmap.shape} but host '{host.case_id}' has {host.shape}; "
            "they must share a grid."
        )
    if lmap.affine is not None and np.max(np.abs(lmap.affine - host.affine)) > AFFINE_TOLERANCE_MM:
        raise LesionMixError(
            f"The likelihood map and host '{host.case_id}' have different affines; they must share a grid."
        )
    cdf = lmap.cdf(brain)  # cached per brain mask; fails early if the map is empty inside it
    cases = list(source_cases) if source_cases is not None else bank.case_ids
    by_case = {cid: bank.lesions(cid) for cid in cases}
    by_case = {cid: les for cid, les in by_case.items() if les}
    if not by_case:
        raise LesionMixError("The lesion bank holds no lesions to populate with.")
    _check_bank_grid(host, next(iter(by_case.values())))
    occupied = host.label != 0
    n_occupied = int(np.count_nonzero(occupied))
    insertions: list[Insertion] = []
    attempts = outside_brain = 0
    reason = ""
    smin3 = aug.min_scale**3
    while n_occupied * vox_ml < target - tol:
        if len(insertions) >= max_insertions:
            reason = f"the cap of {max_insertions} insertions was hit"
            break
        if attempts >= max_attempts:
            reason = f"the cap of {max_attempts} attempts was hit"
            break
        attempts += 1
        room = target + tol - n_occupied * vox_ml
        fits = {cid: [les for les in ls if les.volume_ml * smin3 <= room] for cid, ls in by_case.items()}
        fits = {cid: ls for cid, ls in fits.items() if ls}
        if not fits:
            reason = f"no bank lesion is small enough for the remaining {room:.3f} mL"
            break
        if lesion_sampling == "case":
            ids = sorted(fits)
            group = fits[ids[int(rng.integers(len(ids)))]]
            lesion = group[int(rng.integers(len(group)))]
        else:
            flat = [les for cid in sorted(fits) for les in fits[cid]]
            lesion = flat[int(rng.integers(len(flat)))]
        tf = draw_transform(rng, aug)
        pos = tuple(int(v) for v in positions_from_cdf(rng, cdf, host.shape, 1)[0])
        # Cheap pre-check before any resampling: the resized volume (volume x scale^3)
        # far above the room left would overshoot; overlap and clipping rarely save it.
        if lesion.volume_ml * float(np.prod(tf.affine.scale)) > OVERSHOOT_SLACK * room:
            continue
        warp = lesion_warp(lesion, tf, 0)  # the mask needs no soft-mask pad (see lesion_warp)
        hard = warp_mask(lesion, warp, aug)
        host_box, crop_box = _placement(pos, warp, host.shape)
        if host_box is None:
            continue
        total = int(np.count_nonzero(hard))
        hard = hard[crop_box]
        if total == 0:
            continue
        if brain is not None:
            inside = hard & brain[host_box]
            if np.count_nonzero(inside) < min_brain_fraction * total:
                outside_brain += 1
                continue
            hard = inside
        elif np.count_nonzero(hard) < min_brain_fraction * total:  # mostly outside the volume
            continue
        n_hard = int(np.count_nonzero(hard))
        overlap = int(np.count_nonzero(hard & occupied[host_box]))
        if n_hard == 0 or overlap > max_overlap * n_hard:
            continue
        if (n_occupied + n_hard - overlap) * vox_ml > target + tol:
            continue
        occupied[host_box] |= hard
        n_occupied += n_hard - overlap
        insertions.append(Insertion(lesion.case_id, lesion.index, pos, tf))
    return tuple(insertions), n_occupied * vox_ml, reason, (attempts - len(insertions), outside_brain)


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
        image, label, mask = _apply_inpaint(host, params)
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
        image, label, mask = _apply_populate(host, params, bank, brain_mask if params.brain_clip else None, timings)
    if check_load:
        load = lesion_load_ml(label, host.spacing)
        if abs(load - params.reached_load_ml) > 0.5 * voxel_volume_ml(host.spacing):
            raise LesionMixError(
                f"Replaying gave {load:.4f} mL but the params record {params.reached_load_ml:.4f} mL; the host, "
                "lesion bank or brain mask differ from those the params were drawn with."
            )
    return Synthetic(image=image, label=label, mask=mask, params=params)


def _soft_pad(params: LesionMixParams) -> int:
    """Voxels added around a transformed crop so the soft mask's dilation fits inside it."""
    return int(params.soft_dilate) + 1


def blend_weights(mask: np.ndarray, params: LesionMixParams, spacing) -> np.ndarray:
    """Soft blending mask ``S`` of a transformed lesion mask (Soft-CP's soft mask)."""
    return soft_mask(mask, params.soft_a, params.soft_erode, params.soft_dilate, spacing)


def _apply_populate(host: Case, params: LesionMixParams, bank, brain, timings: dict[str, float] | None = None):
    clock = {"transform": 0.0, "soft mask": 0.0, "blend": 0.0}
    image = host.image.astype(np.float32, copy=True)
    label = host.label.copy()
    mask = np.zeros(host.shape, np.float32)
    aug = params.augment
    for ins in params.insertions:
        lesion = bank.lesion(ins.case_id, ins.lesion_index)
        _check_bank_grid(host, [lesion])
        # Pad so the soft mask's dilation is not cut by the crop edge.
        t0 = time.perf_counter()
        matched = map_for(params.intensity, ins.case_id)
        if matched is not None and matched.mode != "none":
            # The registry's shared intensity step, per source case (registry.fit_intensity recorded the map).
            lesion = dataclasses.replace(lesion, image=matched.apply(lesion.image))
        img, hard, lab, warp = transform_lesion(lesion, ins.transform, aug, pad=_soft_pad(params))
        if params.intensity_match == "median":
            ratio = [h / r if r != 0 else 1.0 for h, r in zip(params.host_reference, lesion.reference, strict=True)]
            img *= np.asarray(ratio, np.float32)[:, None, None, None]
        host_box, crop_box = _placement(ins.position, warp, host.shape)
        if host_box is None:
            raise LesionMixError(f"Insertion at {ins.position} lies outside host '{host.case_id}' of shape {host.shape}.")
        t1 = time.perf_counter()
        s = blend_weights(hard, params, host.spacing)[crop_box].astype(np.float32)
        t2 = time.perf_counter()
        hard, lab, img = hard[crop_box], lab[crop_box], img[(slice(None), *crop_box)]
        if brain is not None:
            b = brain[host_box]
            s = s * b
            hard = hard & b
        # Soft-CP Eq. (1): I = S * I_paste + (1 - S) * I_host
        soft_paste(image, mask, host_box, s, img)
        # Soft-CP Eq. (2): Y = Y_host U Y_paste, host values kept where both are lesion.
        lbox = label[host_box]
        if lab.dtype.itemsize > label.dtype.itemsize:
            label = label.astype(lab.dtype)
            lbox = label[host_box]
        np.copyto(lbox, lab.astype(label.dtype), where=hard & (lbox == 0))
        for step, dt in (("transform", t1 - t0), ("soft mask", t2 - t1), ("blend", time.perf_counter() - t2)):
            clock[step] += dt
    if timings is not None:
        for step, dt in clock.items():
            timings[step] = timings.get(step, 0.0) + dt
    return image, label, mask


def inpaint_region(host_label: np.ndarray, removals: Sequence[int], connectivity: int, dilate: int):
    """(removed lesion voxels, voxels to inpaint) for host component indices ``removals``."""
    comps, n = label_components(host_label, connectivity)
    bad = [k for k in removals if not 0 <= k < n]
    if bad:
        raise LesionMixError(f"The host label has {n} lesion(s); removal index {bad[0]} does not exist.")
    keep = np.zeros(n + 1, bool)
    keep[np.asarray(removals, int) + 1] = True
    removed = keep[comps]
    region = removed
    if dilate > 0 and removed.any():
        # Dilate on the removed lesions' box (plus the rim), not the whole volume.
        box = ndi.find_objects(removed.view(np.uint8))[0]
        box = tuple(slice(max(b.start - dilate, 0), min(b.stop + dilate, n)) for b, n in zip(box, removed.shape, strict=True))
        region = removed.copy()
        rim = ndi.binary_dilation(removed[box], ndi.generate_binary_structure(3, 1), iterations=int(dilate))
        region[box] = rim & ((host_label[box] == 0) | removed[box])
    return removed, region


def _apply_inpaint(host: Case, params: LesionMixParams):
    removed, region = inpaint_region(host.label, params.removals, params.connectivity, params.inpaint_dilate)
    image = inpaint_telea(host.image, region, params.inpaint_radius, params.inpaint_axes)
    label = host.label.copy()
    label[removed] = 0
    return image, label, region.astype(np.float32)


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
    distribution : LoadDistribution
        The target load's distribution.
    source_ids : tuple of str
        The cases lesions may come from.
    """

    bank: LesionBank
    likelihood: LikelihoodMap | None
    distribution: LoadDistribution
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
            raise LesionMixError("LesionMix needs a training set (a dataset folder) as its lesion source.")
        bank = LesionBank(records=ds.cases, connectivity=options.connectivity)
        if options.likelihood:
            lmap = load_likelihood(options.likelihood)
        else:
            lmap = likelihood_map(ds, sigma_mm=options.sigma_mm)  # training labels, inside the brain masks
        return LesionMixResources(bank, lmap, options.distribution(dataset_loads(ds)), tuple(ds.case_ids))

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
