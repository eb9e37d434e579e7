"""Image-level transforms of the host (Soft-CP section 3.3): crop-and-resize, gamma, Gaussian noise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.transforms import IntensityParams, apply_intensity, sample_intensity
from napari_lesionmix.errors import LesionMixError

IMAGE_CHOICES = ("none", "crop_resize", "gamma", "noise")


@dataclass(frozen=True)
class ImageOp:
    """One image-level transform of the host.

    Attributes
    ----------
    kind : str
        ``"none"``, ``"crop_resize"``, ``"gamma"`` or ``"noise"``.
    value : float
        Gamma exponent, or noise std as a fraction of the channel std.
    seed : int or None
        Noise seed.
    start, size : tuple of int
        Crop box (voxels) zoomed back to the full grid by ``"crop_resize"``.
    """

    kind: str = "none"
    value: float = 0.0
    seed: int | None = None
    start: tuple[int, ...] = ()
    size: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in IMAGE_CHOICES:
            raise LesionMixError(
                f"Unknown image-level transform '{self.kind}'; choose one of {', '.join(IMAGE_CHOICES)}."
            )
        if self.kind == "crop_resize" and (len(self.start) != 3 or len(self.size) != 3
                                           or any(s < 2 for s in self.size)):
            raise LesionMixError("crop_resize needs a 3D start and a size of at least 2 voxels per axis.")


def source_coords(op: ImageOp, shape) -> list[np.ndarray]:
    """Per axis, the crop coordinate each output voxel samples ("crop first, then resize").

    Output voxel ``o`` samples ``start + (o + 1/2) * size / shape - 1/2``
    (voxel centres aligned, as ``cv2.resize``), clamped to the crop so that
    its edge values repeat.
    """
    coords = []
    for st, sz, n in zip(op.start, op.size, shape, strict=True):
        x = st + (np.arange(n, dtype=np.float64) + 0.5) * (sz / n) - 0.5
        coords.append(np.clip(x, st, st + sz - 1))
    return coords


def zoom_nearest(vol: np.ndarray, coords) -> np.ndarray:
    """Nearest-neighbour crop-and-resize: a separable gather (exact, cheap on 1 mm volumes).

    One ``take`` per axis (whole planes, then rows, then voxels) rather than one
    ``np.ix_`` gather: the same voxels, 3-5x faster on a 1 mm label.
    """
    out = vol
    for axis, x in enumerate(coords):
        out = out.take(np.floor(x + 0.5).astype(np.intp), axis=axis)
    return out


def zoom_linear(vol: np.ndarray, op: ImageOp) -> np.ndarray:
    """Trilinear crop-and-resize of a 3D volume with ``cv2.resize`` (separable: in-plane, then axis 0).

    Equal (to float rounding) to sampling :func:`source_coords` trilinearly,
    and about 10x faster than ``scipy.ndimage`` on a 1 mm brain.
    """
    import cv2

    box = tuple(slice(st, st + sz) for st, sz in zip(op.start, op.size, strict=True))
    crop = np.ascontiguousarray(vol[box], dtype=np.float32)
    n0, n1, n2 = vol.shape
    plane = np.empty((crop.shape[0], n1, n2), np.float32)
    for i in range(crop.shape[0]):
        plane[i] = cv2.resize(crop[i], (n2, n1), interpolation=cv2.INTER_LINEAR)
    out = cv2.resize(plane.reshape(crop.shape[0], n1 * n2), (n1 * n2, n0), interpolation=cv2.INTER_LINEAR)
    return out.reshape(n0, n1, n2)


def apply_image_ops(
    image: np.ndarray,
    label: np.ndarray,
    reference: np.ndarray | None,
    ops: Sequence[ImageOp],
    image_order: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Image-level transforms of the host (section 3.3): crop-and-resize, gamma, noise.

    Crop-and-resize crops the box ``[start, start + size)`` and resizes it to
    the full grid: image trilinear (or cubic with ``image_order=3``), label and
    reference nearest neighbour.
    """
    for op in ops:
        if op.kind == "crop_resize":
            coords = source_coords(op, label.shape)
            out = np.empty(image.shape, np.float32)
            for c, ch in enumerate(image):
                if image_order == 1:
                    out[c] = zoom_linear(ch, op)
                else:
                    grid = np.meshgrid(*coords, indexing="ij")
                    out[c] = ndi.map_coordinates(ch, grid, order=image_order, mode="nearest")
            image = out
            label = zoom_nearest(label, coords)
            if reference is not None:
                reference = zoom_nearest(reference, coords)
        elif op.kind in ("gamma", "noise") and image.shape[0]:
            image = apply_intensity(image, IntensityParams(op.kind, op.value, op.seed))
    return image, label, reference


def sample_image_ops(rng: np.random.Generator, shape, choices, n: int,
                      crop_range=(0.85, 1.0)) -> tuple[ImageOp, ...]:
    ops = []
    for _ in range(n):
        kind = str(choices[int(rng.integers(len(choices)))])
        if kind == "crop_resize":
            f = float(rng.uniform(*crop_range))
            size = tuple(max(2, int(round(f * s))) for s in shape)
            start = tuple(int(rng.integers(0, s - z + 1)) for s, z in zip(shape, size, strict=True))
            ops.append(ImageOp("crop_resize", start=start, size=size))
        elif kind in ("gamma", "noise"):
            p = sample_intensity(rng, kind)
            ops.append(ImageOp(kind, p.value, p.seed))
        elif kind == "none":
            ops.append(ImageOp("none"))
        else:
            raise LesionMixError(
                f"Unknown image-level transform '{kind}'; choose from {', '.join(IMAGE_CHOICES)}."
            )
    return tuple(ops)
