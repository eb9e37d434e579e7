"""Shared 3D transform primitives for lesion-level and image-level augmentation.

Every transform is split, as TorchIO's ``RandomGamma``/``Gamma``, into a
``sample_*(rng, ...)`` function that only draws a frozen, JSON-serialisable
params dataclass and an ``apply``/``warp`` function that only uses it, so a
transform recorded in a method's params replays bit for bit. Random fields
(noise, elastic displacements) are regenerated from an integer ``seed`` stored
in the params.

Spatial transforms act on a crop: an image ``(C, ...)`` and a mask of the same
spatial shape, rotated/scaled/flipped about the crop centre, with the output
grown (``expand=True``) so that nothing of the transformed crop is cut off.
Images are resampled with spline order 1 or 3 (edge values repeated outside),
masks by nearest neighbour (``mask_mode="nearest"``), by linear interpolation
thresholded at 0.5 (``"threshold"``, smoother for binary masks) or linearly
(``"linear"``, for soft masks).

Intensity transforms act on ``(C, ...)`` arrays, channel by channel:

* ``gamma``: ``x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma`` with
  the channel's min/max (nnU-Net's gamma; works for any intensity scale);
* ``noise``: additive Gaussian noise with std ``value`` times the channel std;
* ``blur``: Gaussian smoothing with sigma ``value`` voxels;
* ``brightness``: multiplication by ``value``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.errors import LesionMixError

RIGID_KINDS = ("none", "flip", "rotation", "scaling", "translation")
INTENSITY_KINDS = ("none", "gamma", "noise", "blur", "brightness")
MASK_MODES = ("nearest", "threshold", "linear")

_SEED_MAX = 2**31 - 1


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class AffineParams:
    """One affine transform about a crop's centre.

    The forward map, in mm about the centre ``c``, is
    ``y = R @ Z @ F @ (x - c) + c + t`` with ``F`` the flips, ``Z = diag(scale)``,
    ``R`` the rotation by ``angles`` (degrees, about array axes 0, 1, 2, applied
    in that order) and ``t`` the translation (voxels).

    Attributes
    ----------
    kind : str
        What was drawn (``"none"``, ``"flip"``, ``"rotation"``, ``"scaling"``,
        ``"translation"``, or ``"affine"`` for a combined draw); informational.
    flip : tuple of bool
        Mirror each array axis.
    angles : tuple of float
        Rotation angles in degrees about array axes 0, 1, 2.
    scale : tuple of float
        Scale factor per axis (> 0).
    translation : tuple of float
        Shift in voxels per axis.
    """

    kind: str = "none"
    flip: tuple[bool, bool, bool] = (False, False, False)
    angles: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if any(not (math.isfinite(s) and s > 0) for s in self.scale):
            raise LesionMixError(f"Scale factors must be positive, got {self.scale}.")
        if any(not math.isfinite(v) for v in (*self.angles, *self.translation)):
            raise LesionMixError("Rotation angles and translations must be finite numbers.")

    @property
    def is_identity(self) -> bool:
        return (not any(self.flip) and not any(self.angles) and all(s == 1 for s in self.scale)
                and not any(self.translation))

    def linear(self) -> np.ndarray:
        """The 3x3 linear part ``R @ Z @ F`` (acting on mm offsets)."""
        f = np.diag([-1.0 if fl else 1.0 for fl in self.flip])
        z = np.diag([float(s) for s in self.scale])
        r = np.eye(3)
        for axis, deg in enumerate(self.angles):
            if deg:
                r = _rotation(axis, math.radians(deg)) @ r
        return r @ z @ f


@dataclass(frozen=True)
class ElasticParams:
    """A smooth random displacement field.

    The field is Gaussian-smoothed white noise (Simard et al. 2003), one
    component per axis, regenerated from ``seed`` and scaled so that its
    largest displacement is ``magnitude`` voxels.

    Attributes
    ----------
    sigma : float
        Smoothing sigma in voxels (larger: smoother, more global warps).
    magnitude : float
        Largest displacement in voxels (0: identity).
    seed : int
        Seed of the noise.
    """

    sigma: float = 3.0
    magnitude: float = 2.0
    seed: int = 0

    def __post_init__(self):
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise LesionMixError(f"Elastic sigma must be positive, got {self.sigma!r}.")
        if not (math.isfinite(self.magnitude) and self.magnitude >= 0):
            raise LesionMixError(f"Elastic magnitude must be >= 0 voxels, got {self.magnitude!r}.")


@dataclass(frozen=True)
class IntensityParams:
    """One intensity transform (see the module docstring for each ``kind``).

    Attributes
    ----------
    kind : str
        ``"none"``, ``"gamma"``, ``"noise"``, ``"blur"`` or ``"brightness"``.
    value : float
        gamma exponent, noise std (fraction of the channel std), blur sigma
        (voxels) or brightness factor.
    seed : int or None
        Seed of the noise (``"noise"`` only).
    """

    kind: str = "none"
    value: float = 0.0
    seed: int | None = None

    def __post_init__(self):
        if self.kind not in INTENSITY_KINDS:
            raise LesionMixError(
                f"Unknown intensity transform '{self.kind}'; choose one of {', '.join(INTENSITY_KINDS)}."
            )
        if not math.isfinite(self.value):
            raise LesionMixError(f"The {self.kind} value must be finite, got {self.value!r}.")
        if self.kind in ("gamma", "brightness") and self.value <= 0:
            raise LesionMixError(f"The {self.kind} value must be positive, got {self.value!r}.")
        if self.kind in ("noise", "blur") and self.value < 0:
            raise LesionMixError(f"The {self.kind} value must be >= 0, got {self.value!r}.")
        if self.kind == "noise" and self.seed is None:
            raise LesionMixError("Noise params need a seed so that they replay.")


# --------------------------------------------------------------------------- sampling


def _draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_MAX))


def sample_rigid(
    rng: np.random.Generator,
    kind: str,
    max_angle: float = 30.0,
    scale_range: tuple[float, float] = (0.75, 1.25),
    max_translation: float = 3.0,
    flip_axes: Sequence[int] = (0, 1, 2),
) -> AffineParams:
    """Draw one of Soft-CP's rigid object transforms (section 3.3).

    ``flip`` mirrors one axis drawn from ``flip_axes``; ``rotation`` draws
    three angles from U(-max_angle, max_angle) degrees; ``scaling`` one
    isotropic factor from U(*scale_range) (a lesion keeps its shape);
    ``translation`` a shift from U(-max_translation, max_translation) voxels
    per axis; ``none`` is the identity.
    """
    if kind == "none":
        return AffineParams("none")
    if kind == "flip":
        axis = int(flip_axes[int(rng.integers(len(flip_axes)))])
        return AffineParams("flip", flip=tuple(a == axis for a in range(3)))
    if kind == "rotation":
        angles = tuple(float(v) for v in rng.uniform(-max_angle, max_angle, 3))
        return AffineParams("rotation", angles=angles)
    if kind == "scaling":
        s = float(rng.uniform(*scale_range))
        return AffineParams("scaling", scale=(s, s, s))
    if kind == "translation":
        t = tuple(float(v) for v in rng.uniform(-max_translation, max_translation, 3))
        return AffineParams("translation", translation=t)
    raise LesionMixError(f"Unknown rigid transform '{kind}'; choose one of {', '.join(RIGID_KINDS)}.")


#: Default ranges of the intensity transforms (the paper gives none).
INTENSITY_RANGES: dict[str, tuple[float, float]] = {
    "gamma": (0.7, 1.5),       # exponent, drawn log-uniformly
    "noise": (0.0, 0.1),       # std as a fraction of the channel std
    "blur": (0.5, 1.0),        # sigma in voxels
    "brightness": (0.9, 1.1),  # multiplicative factor
}


def sample_intensity(
    rng: np.random.Generator,
    kind: str,
    value_range: tuple[float, float] | None = None,
) -> IntensityParams:
    """Draw one intensity transform of the given ``kind`` (ranges: :data:`INTENSITY_RANGES`)."""
    if kind == "none":
        return IntensityParams("none")
    if kind not in INTENSITY_RANGES:
        raise LesionMixError(
            f"Unknown intensity transform '{kind}'; choose one of {', '.join(INTENSITY_KINDS)}."
        )
    lo, hi = value_range or INTENSITY_RANGES[kind]
    if kind == "gamma":
        value = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    else:
        value = float(rng.uniform(lo, hi))
    return IntensityParams(kind, value, _draw_seed(rng) if kind == "noise" else None)


# --------------------------------------------------------------------------- spatial


def _rotation(axis: int, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def compose(transforms: Sequence[AffineParams], spacing: Sequence[float] | None = None):
    """Compose affine params (first applied first) into ``(L, t)``, both in voxel units.

    The forward map about the centre is ``y - c_out = L @ (x - c_in) + t``;
    rotations act in mm so that anisotropic voxels stay round.
    """
    p = np.diag([float(s) for s in (spacing or (1.0, 1.0, 1.0))])
    p_inv = np.linalg.inv(p)
    lin = np.eye(3)
    t = np.zeros(3)
    for tr in transforms:
        a = p_inv @ tr.linear() @ p
        lin = a @ lin
        t = a @ t + np.asarray(tr.translation, float)
    return lin, t


def _as_list(transform) -> list[AffineParams]:
    if isinstance(transform, AffineParams):
        return [transform]
    return list(transform)


def _resample_mask(mask: np.ndarray, mode: str, warp) -> np.ndarray:
    if mode == "nearest":
        return warp(mask, 0, 0.0).astype(mask.dtype, copy=False)
    if mode == "threshold":
        return warp(mask.astype(np.float32), 1, 0.0) >= 0.5
    if mode == "linear":
        return np.clip(warp(mask.astype(np.float32), 1, 0.0), 0.0, None).astype(np.float32)
    raise LesionMixError(f"Unknown mask mode '{mode}'; choose one of {', '.join(MASK_MODES)}.")


def _check_crop(image: np.ndarray, mask: np.ndarray | None, order: int) -> None:
    if image.ndim != 4:
        raise LesionMixError(f"Expected an image crop of shape (C, I, J, K), got shape {image.shape}.")
    if mask is not None and mask.shape != image.shape[1:]:
        raise LesionMixError(f"Mask shape {mask.shape} does not match image shape {image.shape[1:]}.")
    if order not in (0, 1, 3):
        raise LesionMixError(f"Image interpolation order must be 0, 1 or 3, got {order}.")


def warped_shape(shape: Sequence[int], transform, spacing: Sequence[float] | None = None) -> tuple[int, ...]:
    """Shape that holds the whole crop after ``transform`` about its centre (``expand=True``)."""
    lin, t = compose(_as_list(transform), spacing)
    n = np.asarray(shape, float)
    half = (n - 1) / 2
    corners = np.array(np.meshgrid(*[(-h, h) for h in half], indexing="ij")).reshape(3, -1)
    reach = np.abs(lin @ corners + t[:, None]).max(axis=1)
    return tuple(int(math.ceil(2 * r - 1e-6)) + 1 for r in reach)


def warp_crop(
    image: np.ndarray,
    mask: np.ndarray | None,
    transform: AffineParams | Sequence[AffineParams],
    spacing: Sequence[float] | None = None,
    order: int = 1,
    mask_mode: str = "threshold",
    expand: bool = True,
    output_shape: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flip/rotate/scale/translate a crop and its mask about the crop centre.

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K)
        Image channels (all share the transform).
    mask : ndarray, shape (I, J, K), or None
        Binary or soft mask resampled with ``mask_mode``.
    transform : AffineParams or sequence of them
        Applied in order, composed into one resampling.
    spacing : sequence of 3 floats, optional
        Voxel size in mm (rotations are then round in mm).
    order : {0, 1, 3}
        Spline order for the image.
    mask_mode : {"nearest", "threshold", "linear"}
    expand : bool
        Grow the output so that the transformed crop fits (see :func:`warped_shape`);
        otherwise keep the input shape (or ``output_shape``).

    Returns
    -------
    image, mask
        The crop centre maps to the output centre ``(n - 1) / 2`` plus the translation.
    """
    image = np.asarray(image)
    _check_crop(image, mask, order)
    transforms = _as_list(transform)
    shape_in = image.shape[1:]
    if output_shape is None:
        output_shape = warped_shape(shape_in, transforms, spacing) if expand else shape_in
    output_shape = tuple(int(s) for s in output_shape)
    if all(t.is_identity for t in transforms) and output_shape == tuple(shape_in):
        return image.astype(np.float32, copy=True), (None if mask is None else mask.copy())
    lin, t = compose(transforms, spacing)
    inv = np.linalg.inv(lin)
    c_in = (np.asarray(shape_in, float) - 1) / 2
    c_out = (np.asarray(output_shape, float) - 1) / 2
    # input = inv @ (output - c_out - t) + c_in
    offset = c_in - inv @ (c_out + t)

    def warp(vol, ord_, cval, mode="constant"):
        return ndi.affine_transform(vol, inv, offset=offset, output_shape=output_shape, order=ord_,
                                    mode=mode, cval=cval, prefilter=ord_ > 1)

    out = np.empty((image.shape[0], *output_shape), np.float32)
    for c in range(image.shape[0]):
        out[c] = warp(image[c].astype(np.float32, copy=False), order, 0.0, "nearest")
    out_mask = None if mask is None else _resample_mask(mask, mask_mode, warp)
    return out, out_mask


def displacement_field(shape: Sequence[int], params: ElasticParams) -> np.ndarray:
    """The displacement field of ``params`` on ``shape``: ``(3, I, J, K)`` float32, voxels."""
    rng = np.random.default_rng(params.seed)
    field = np.empty((len(shape), *shape), np.float32)
    for a in range(len(shape)):
        field[a] = ndi.gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), params.sigma,
                                       mode="reflect")
    peak = float(np.abs(field).max())
    if peak > 0:
        field *= params.magnitude / peak
    return field


# --------------------------------------------------------------------------- intensity


def apply_intensity(
    image: np.ndarray,
    params: IntensityParams | Sequence[IntensityParams],
    region: np.ndarray | None = None,
) -> np.ndarray:
    """Apply intensity transform(s), in order, to a ``(C, ...)`` array; returns a new float32 array.

    ``region`` (bool, spatial shape) restricts where the channel statistics
    (min/max for gamma, std for noise) are measured; the transform itself
    acts on the whole array.
    """
    ops = [params] if isinstance(params, IntensityParams) else list(params)
    out = np.array(image, dtype=np.float32, copy=True)
    if out.ndim < 2:
        raise LesionMixError(f"Expected a (C, ...) image for intensity transforms, got shape {out.shape}.")
    for op in ops:
        if op.kind == "none" or (op.kind in ("gamma", "brightness") and op.value == 1.0):
            continue  # exact identities stay exact
        for c in range(out.shape[0]):
            ch = out[c]
            stats = ch[region] if region is not None and region.any() else ch
            if op.kind == "gamma":
                lo, hi = float(stats.min()), float(stats.max())
                if hi > lo:
                    # In place: a full-volume (image-level) gamma needs no temporaries.
                    ch -= np.float32(lo)
                    ch *= np.float32(1.0 / (hi - lo))
                    np.maximum(ch, 0.0, out=ch)
                    if op.value > 0 and not (lo == 0 and math.copysign(1.0, lo) < 0):
                        # 0 ** g is 0 for g > 0, so the zeros (a scan's background, often most of
                        # the volume) are left as they are: the same bytes, several times faster.
                        # (With lo = -0.0 a kept -0.0 would end as -0.0, not +0.0: take the plain path.)
                        np.power(ch, np.float32(op.value), out=ch, where=ch != 0)
                    else:
                        np.power(ch, np.float32(op.value), out=ch)
                    ch *= np.float32(hi - lo)
                    ch += np.float32(lo)
            elif op.kind == "noise":
                std = float(stats.std()) * op.value
                if std > 0:
                    rng = np.random.default_rng([op.seed, c])
                    noise = rng.standard_normal(ch.shape, dtype=np.float32)
                    noise *= np.float32(std)
                    ch += noise
            elif op.kind == "blur":
                if op.value > 0:
                    out[c] = ndi.gaussian_filter(ch, op.value, mode="nearest")
            elif op.kind == "brightness":
                ch *= np.float32(op.value)
    return out
