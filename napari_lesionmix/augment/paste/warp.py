"""One lesion's 3D augmentation (LesionMix): flips, rotations, resizing, elastic deformation, brightness, noise.

The drawn transform (:class:`LesionTransform`, from the ranges of
:class:`LesionAugment`) is composed into one resampling of the lesion's crop
(:func:`lesion_warp`): the image and the mask are resampled once, on the crop,
never on the full volume.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import suppress
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
    _peak: float | None = None

    def offset(self) -> np.ndarray:
        return self.source_center - self.inverse @ self.center

    def coords(self) -> np.ndarray:
        """Source coordinates of every output voxel, ``(3, *shape)`` float64, computed once.

        Elastic warps: the affine pre-image of ``v + u(v)``. Affine warps: the
        very numbers ``scipy.ndimage.affine_transform`` computes internally
        (``((0 + i a0 + j a1) + k a2) + offset`` per row, in float64), so
        ``map_coordinates`` on them or on any subset of them gives the same
        bytes as ``affine_transform`` on the whole crop.
        """
        if self._coords is None:
            grid = np.indices(self.shape, dtype=np.float64)
            if self.disp is None:
                self._coords = self._affine_points(grid)
            else:
                p = self.pad
                core = (slice(None), *(slice(p, n - p) for n in self.shape))
                grid[core] += self.disp
                self._coords = np.tensordot(self.inverse, grid, axes=1) + self.offset()[:, None, None, None]
        return self._coords

    def resample(self, vol: np.ndarray, order: int, mode: str = "constant", cval: float = 0.0) -> np.ndarray:
        if self.inverse is None:
            return pad_to(vol, self.shape, "edge" if mode == "nearest" else "constant")
        if self.disp is None and self._coords is None:  # affine only: no coordinate array needed
            return ndi.affine_transform(vol, self.inverse, offset=self.offset(), output_shape=self.shape,
                                        order=order, mode=mode, cval=cval, prefilter=order > 1)
        return ndi.map_coordinates(vol, self.coords(), order=order, mode=mode, cval=cval, prefilter=order > 1)

    def coords_at(self, where: np.ndarray) -> np.ndarray:
        """``coords()[:, where]``, ``(3, n)`` float64, computed on those voxels only (unless cached).

        The same operations, in the same order, as :meth:`coords` on the whole
        crop, one voxel at a time: the same numbers. For an elastic warp that is
        ``v + u(v)`` (``u`` read where ``v`` lies off the pad ring) and one
        3x3 product per voxel: BLAS computes each column of ``inverse @ points``
        from that column alone, whatever the number of columns.
        """
        if self._coords is not None:
            return self._coords[:, where]
        if self.disp is None:
            return self._affine_points([i.astype(np.float64) for i in np.nonzero(where)])
        n = int(np.count_nonzero(where))
        if 2 * n > where.size:  # most of the crop: its coordinates cost less memory than the subset's
            return self.coords()[:, where]
        nz = np.nonzero(where)
        points = np.empty((3, n))
        for a in range(3):
            points[a] = nz[a]
        p = self.pad
        core = np.ones(n, bool)
        for i, m in zip(nz, self.disp.shape[1:], strict=True):
            core &= (i >= p) & (i < p + m)
        points[:, core] += self.disp[(slice(None), *(i[core] - p for i in nz))]
        del nz
        out = np.tensordot(self.inverse, points, axes=1)
        out += self.offset()[:, None]
        return out

    def _affine_points(self, idx) -> np.ndarray:
        """The affine source coordinates of voxels ``idx`` (3 float64 arrays of one shape), in
        ``affine_transform``'s order of operations: ``((0 + i a0 + j a1) + k a2) + offset``."""
        inv, off = np.ascontiguousarray(self.inverse, np.float64), self.offset().astype(np.float64)
        out = np.empty((3, *idx[0].shape))
        for h in range(3):
            c = out[h]
            np.multiply(idx[0], inv[h, 0], out=c)
            c += 0.0
            c += idx[1] * inv[h, 1]
            c += idx[2] * inv[h, 2]
            c += off[h]
        return out

    def resample_at(self, vol: np.ndarray, where: np.ndarray, order: int, mode: str = "constant",
                    cval: float = 0.0) -> np.ndarray:
        """``resample(vol, ...)[where]`` (``where``: bool, ``shape``), computed on those voxels only."""
        if self.inverse is None:
            return self.resample(vol, order, mode, cval)[where]
        return ndi.map_coordinates(vol, self.coords_at(where), order=order, mode=mode, cval=cval,
                                   prefilter=order > 1)

    def reaches(self, box_lo, box_hi) -> np.ndarray:
        """Output voxels whose source coordinate lies within one voxel of the source box ``[lo, hi]``.

        A superset of the voxels where an order-0/1, constant-mode resampling of
        a volume that is zero outside that box can be non-zero.
        """
        if self.disp is None and self._coords is None:
            return self._affine_reaches(box_lo, box_hi)
        if self._coords is None:
            # The field moves a source coordinate by at most sum_j |A_hj| max|u| along axis h: the
            # affine reach of the box grown by that is a superset, found without any coordinates.
            grow = np.abs(self.inverse).sum(axis=1) * self._disp_peak() + 1e-6
            return self._affine_reaches(np.asarray(box_lo) - grow, np.asarray(box_hi) + grow)
        c = self.coords()
        ok = np.ones(self.shape, bool)
        for a in range(3):
            ok &= c[a] > box_lo[a] - 1.001
            ok &= c[a] < box_hi[a] + 1.001
        return ok

    def _disp_peak(self) -> float:
        """``max |u|`` of the elastic field (0 without one)."""
        if self._peak is None:
            self._peak = 0.0 if self.disp is None else float(np.abs(self.disp).max())
        return self._peak

    def _affine_reaches(self, box_lo, box_hi) -> np.ndarray:
        """:meth:`reaches` of an affine warp without its coordinates: an interval of ``k`` per ``(i, j)`` row.

        Along a row the source coordinate is linear in ``k``, so each axis's
        test bounds ``k`` to an interval. The bounds are widened by 1e-6 voxel,
        far above the rounding of the coordinates (about 1e-13 voxel): a
        superset of the coordinate test, which is all a caller needs.
        """
        n0, n1, n2 = self.shape
        inv, off = self.inverse, self.offset()
        i = np.arange(n0, dtype=np.float64)[:, None]
        j = np.arange(n1, dtype=np.float64)[None, :]
        k_lo = np.zeros((n0, n1))
        k_hi = np.full((n0, n1), n2 - 1.0)
        for a in range(3):
            base = i * inv[a, 0] + j * inv[a, 1] + off[a]
            lo, hi, s = box_lo[a] - 1.001 - 1e-6, box_hi[a] + 1.001 + 1e-6, inv[a, 2]
            if s == 0:
                k_hi = np.where((base > lo) & (base < hi), k_hi, -1.0)
                continue
            a_end, b_end = (lo - base) / s, (hi - base) / s
            k_lo = np.maximum(k_lo, np.minimum(a_end, b_end))
            k_hi = np.minimum(k_hi, np.maximum(a_end, b_end))
        k = np.arange(n2)
        return (k >= np.ceil(k_lo)[..., None]) & (k <= np.floor(k_hi)[..., None])


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
    c, core, center, inv = _geometry(lesion, tf)
    if core is None:
        return Warp(tuple(int(s + 2 * pad) for s in lesion.mask.shape), c + pad, pad)
    elastic = tf.elastic is not None and tf.elastic.magnitude > 0
    disp = _field(core, tf.elastic) if elastic else None
    shape = tuple(n + 2 * pad for n in core)
    # Output voxel v reads the affine pre-image of v + u(v): one resampling, not two.
    return Warp(shape, center + pad, pad, inv, c, disp)


#: :func:`_geometry` by (crop shape, centroid, spacing, affine, elastic), most recent last:
#: populate warps each inserted lesion when it draws and again when it applies.
_GEOMETRY: OrderedDict[tuple, tuple] = OrderedDict()
_GEOMETRY_MAX = 1024
_EYE = np.eye(3)


def _geometry(lesion: Lesion, tf: LesionTransform):
    """``(c, core, centre, inverse)`` of :func:`lesion_warp` before its pad (``core`` None: the identity).

    The arrays are read-only and shared between calls with the same key.
    """
    centroid = np.asarray(lesion.centroid_in_crop, np.float64)
    key = (lesion.mask.shape, tuple(centroid.tolist()), tuple(lesion.spacing), tf.affine, tf.elastic)
    hit = _GEOMETRY.get(key)
    if hit is not None:
        with suppress(KeyError):  # evicted meanwhile by another thread (the studio's workers)
            _GEOMETRY.move_to_end(key)
        return hit
    # Centre on the half-voxel grid nearest the centroid, and keep the output grid
    # offset from it by whole voxels: flips (and the identity) then map voxel
    # centres onto voxel centres exactly, with no interpolation loss.
    c = np.round(2 * centroid) / 2
    m, t = compose([tf.affine], lesion.spacing)  # voxel units; rotations act in mm
    elastic = tf.elastic is not None and tf.elastic.magnitude > 0
    # |m - I| <= 1e-12 everywhere (np.allclose with rtol=0, NaN-safe), no translation, no field.
    if np.abs(m - _EYE).max() <= 1e-12 and not elastic and not np.any(t):
        hit = (c, None, None, None)
    else:
        in_shape = lesion.mask.shape
        corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in in_shape], indexing="ij")).reshape(3, -1)
        out = m @ (corners - c[:, None]) + c[:, None] + t[:, None]
        shift = -np.floor(out.min(axis=1) + 0.5)  # whole voxels
        core = tuple(int(v) for v in np.ceil(out.max(axis=1) - 0.5 + shift) + 1)
        hit = (c, core, c + shift + t, np.linalg.inv(m))
    for a in hit:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    _GEOMETRY[key] = hit
    if len(_GEOMETRY) > _GEOMETRY_MAX:
        _GEOMETRY.popitem(last=False)
    return hit


#: Elastic fields by (shape, params), most recent last: populate warps each inserted lesion's
#: mask when it draws (``pad=0``) and again when it applies (with the soft-mask pad), on the
#: same unpadded box, so the apply reuses the draw's field instead of smoothing it again.
_FIELDS: OrderedDict[tuple, np.ndarray] = OrderedDict()
_FIELDS_MAX_BYTES = 64 * 2**20
_fields_bytes = 0


def _field(shape: tuple[int, ...], params: ElasticParams) -> np.ndarray:
    """:func:`displacement_field` (read-only), from a small most-recently-used cache."""
    key = (shape, params.sigma, params.magnitude, params.seed)
    disp = _FIELDS.get(key)
    if disp is not None:
        with suppress(KeyError):  # evicted meanwhile by another thread (the studio's workers)
            _FIELDS.move_to_end(key)
        return disp
    global _fields_bytes
    disp = displacement_field(shape, params)
    disp.flags.writeable = False
    _FIELDS[key] = disp
    _fields_bytes += disp.nbytes
    while _fields_bytes > _FIELDS_MAX_BYTES and len(_FIELDS) > 1:
        _fields_bytes -= _FIELDS.popitem(last=False)[1].nbytes
    return disp


def pad_to(a: np.ndarray, shape, mode: str) -> np.ndarray:
    """Centre-pad the trailing 3 axes of ``a`` to ``shape`` (identity warps with a pad)."""
    extra = [(n - s) // 2 for s, n in zip(a.shape[-3:], shape, strict=True)]
    if not any(extra):
        return a.copy()
    width = [(0, 0)] * (a.ndim - 3) + [(e, e) for e in extra]
    return np.pad(a, width, mode=mode)


def _mask_box(lesion: Lesion):
    """Inclusive voxel bounds of the lesion's mask in its crop (cached on the bank lesion)."""
    key = "_lesionmix_mask_box"
    box = lesion.__dict__.get(key) if hasattr(lesion, "__dict__") else None
    if box is None:
        idx = np.nonzero(lesion.mask)
        box = (None if idx[0].size == 0 else
               (np.array([i.min() for i in idx]), np.array([i.max() for i in idx])))
        try:
            object.__setattr__(lesion, key, box)
        except (AttributeError, TypeError):
            pass
    return box


def warp_mask(lesion: Lesion, warp: Warp, aug: LesionAugment) -> np.ndarray:
    """The lesion's binary mask resampled on the warp (threshold of linear, or nearest).

    Resampled only on the output voxels that can reach the mask (the rest are
    exactly 0): the same result as resampling the whole crop.
    """
    box = _mask_box(lesion) if warp.inverse is not None else None
    if box is None:
        if aug.mask_mode == "threshold":
            return warp.resample(lesion.mask.astype(np.float32), 1) >= 0.5
        return warp.resample(lesion.mask.view(np.uint8), 0) > 0
    near = warp.reaches(*box)
    out = np.zeros(warp.shape, bool)
    if aug.mask_mode == "threshold":
        out[near] = warp.resample_at(lesion.mask.astype(np.float32), near, 1) >= 0.5
    else:
        out[near] = warp.resample_at(lesion.mask.view(np.uint8), near, 0) > 0
    return out


def warp_label(lesion: Lesion, warp: Warp, mask: np.ndarray) -> np.ndarray:
    """The lesion's label on the warped mask: nearest-neighbour values, the most frequent class where they miss."""
    # Threshold resampling can mark voxels nearest-neighbour labels miss: give them the
    # lesion's most frequent class, so the label is non-zero exactly on the mask.
    values = lesion.label[lesion.mask]
    common = np.bincount(values).argmax() if values.size else 1
    lab = np.zeros(warp.shape, lesion.label.dtype)
    if warp.inverse is None:
        full = warp.resample(lesion.label, 0)
        lab[mask] = np.where(full[mask] != 0, full[mask], common)
        return lab
    v = warp.resample_at(lesion.label, mask, 0)
    lab[mask] = np.where(v != 0, v, common)
    return lab


def warp_image(lesion: Lesion, warp: Warp, aug: LesionAugment, where: np.ndarray | None = None) -> np.ndarray:
    """The lesion's image channels resampled on the warp, ``(C, *shape)`` float32.

    ``where`` (bool, ``shape``): resample those voxels only and leave the others 0.
    """
    if where is None or warp.inverse is None:
        return np.stack([warp.resample(ch, aug.image_order, "nearest").astype(np.float32) for ch in lesion.image])
    out = np.zeros((len(lesion.image), *warp.shape), np.float32)
    if where.any():
        for c, ch in enumerate(lesion.image):
            out[c][where] = warp.resample_at(ch, where, aug.image_order, "nearest").astype(np.float32)
    return out


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
    image = warp_image(lesion, warp, aug)
    lab = warp_label(lesion, warp, mask)
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
