"""One lesion's 3D augmentation (LesionMix): flips, rotations, resizing, elastic deformation, brightness, noise.

The drawn transform (:class:`LesionTransform`, from the ranges of
:class:`LesionAugment`) is composed into one resampling of the lesion's crop
(:func:`lesion_warp`): the image and the mask are resampled once, on the crop,
never on the full volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.lesions import Lesion
from napari_lesionmix.augment.transforms import (
    AffineParams,
    ElasticParams,
    IntensityParams,
    apply_intensity,
    compose,
    displacement_field,
)
from napari_lesionmix.errors import LesionMixError


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
class Warp:
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
            return pad_to(vol, self.shape, "edge" if mode == "nearest" else "constant")
        if self.disp is None:  # affine only: no coordinate array needed
            return ndi.affine_transform(vol, self.inverse, offset=self.offset(), output_shape=self.shape,
                                        order=order, mode=mode, cval=cval, prefilter=order > 1)
        return ndi.map_coordinates(vol, self.coords(), order=order, mode=mode, cval=cval, prefilter=order > 1)


def lesion_warp(lesion: Lesion, tf: LesionTransform, pad: int = 0) -> Warp:
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
        return Warp(tuple(int(s + 2 * pad) for s in in_shape), c + pad, pad)
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in in_shape], indexing="ij")).reshape(3, -1)
    out = m @ (corners - c[:, None]) + c[:, None] + t[:, None]
    shift = -np.floor(out.min(axis=1) + 0.5)  # whole voxels
    core = tuple(int(v) for v in np.ceil(out.max(axis=1) - 0.5 + shift) + 1)
    disp = displacement_field(core, tf.elastic) if elastic else None
    shape = tuple(n + 2 * pad for n in core)
    # Output voxel v reads the affine pre-image of v + u(v): one resampling, not two.
    return Warp(shape, c + shift + t + pad, pad, np.linalg.inv(m), c, disp)


def pad_to(a: np.ndarray, shape, mode: str) -> np.ndarray:
    """Centre-pad the trailing 3 axes of ``a`` to ``shape`` (identity warps with a pad)."""
    extra = [(n - s) // 2 for s, n in zip(a.shape[-3:], shape, strict=True)]
    if not any(extra):
        return a.copy()
    width = [(0, 0)] * (a.ndim - 3) + [(e, e) for e in extra]
    return np.pad(a, width, mode=mode)


def warp_mask(lesion: Lesion, warp: Warp, aug: LesionAugment) -> np.ndarray:
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
    warp : Warp
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


def placement_boxes(position, warp: Warp, host_shape):
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
