"""ARHNet at the checkpoint's training spacing: crop, resample to the model's grid, harmonize, resample back.

A generator learns lesion boundaries and texture at the voxel size of its
training scans; the shipped one saw 2 mm voxels. On a 1 mm scan its 24-voxel
patches would cover half the field of view it was trained on, at twice the
detail, and cost 8 times the voxels. So when the input's spacing is known and
differs from the checkpoint's (:func:`model_spacing`, from the training domain
it records) by more than :data:`SPACING_TOLERANCE`, inference runs on the
model's grid:

1. the box around the mixing mask, with the context a patch needs, is cut out
   of the (normalised) volume;
2. it is resampled to the model's spacing: the image linearly, after a box
   prefilter when a model voxel spans more than two native ones (so no
   aliasing), the mask linearly too (a soft mask in [0, 1] on the model grid);
3. the generator's difference map is computed there in batched patches
   (:func:`~napari_lesionmix.harmonize.inference.difference_field`);
4. the map is extended outside the model-grid mask by its nearest value (so the
   pasted mask's border is not diluted by zeros when interpolating), resampled
   linearly back to the native box, and applied as Fig. 1's
   ``I^ = I~ + G * M`` with the native mask: voxels where the mask is 0 keep
   their bits.

Both grids tile the same extent: model voxel ``j`` of an axis is centred on
native coordinate ``(j + 0.5) f - 0.5`` of the box, with ``f`` the ratio of
the model spacing to the native one (``f = 2`` for a 2 mm model on 1 mm voxels:
each model voxel is the mean of a 2x2x2 block).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

#: Relative spacing difference (any axis) below which the model runs on the native grid, no resampling.
SPACING_TOLERANCE = 0.05


def model_spacing(domain: dict | None) -> tuple[float, float, float] | None:
    """The voxel spacing (mm) a checkpoint was trained at, or ``None`` when it does not record one.

    The geometric mean of the recorded per-axis range (``spacing_min``, ``spacing_max``): the
    training spacing itself when all training scans shared it, as the shipped 2 mm ones do.
    """
    if not domain or domain.get("spacing_min") is None or domain.get("spacing_max") is None:
        return None
    lo = np.asarray(domain["spacing_min"], np.float64)
    hi = np.asarray(domain["spacing_max"], np.float64)
    if lo.shape != (3,) or hi.shape != (3,) or not (np.all(lo > 0) and np.all(hi > 0)):
        return None
    return tuple(float(v) for v in np.sqrt(lo * hi))


def run_spacing(
    spacing: Sequence[float] | None, trained: Sequence[float] | None
) -> tuple[float, ...] | None:
    """The spacing inference runs at for an input of ``spacing``: ``trained`` when :func:`resamples`, else ``spacing``.

    ``None`` when the input's spacing is unknown (the model then runs on the native grid, whatever it is).
    """
    if spacing is None:
        return None
    if resamples(spacing, trained):
        return tuple(float(t) for t in trained)
    return tuple(float(s) for s in spacing)


def resamples(spacing: Sequence[float] | None, trained: Sequence[float] | None) -> bool:
    """Whether an input of ``spacing`` is harmonized on the model's grid of ``trained`` spacing.

    Not when either is unknown, when ``spacing`` is not three positive finite
    sizes (nothing to resample from), or when it is within :data:`SPACING_TOLERANCE`.
    """
    if spacing is None or trained is None:
        return False
    native = tuple(float(s) for s in spacing)
    if len(native) != 3 or not all(math.isfinite(s) and s > 0 for s in native):
        return False
    return not needs_no_resampling(native, trained)


def needs_no_resampling(spacing: Sequence[float], trained: Sequence[float]) -> bool:
    """Whether every axis of ``spacing`` is within :data:`SPACING_TOLERANCE` of ``trained``."""
    s, t = np.asarray(spacing, np.float64), np.asarray(trained, np.float64)
    return bool(np.all(np.abs(s - t) <= SPACING_TOLERANCE * t))


def context_box(fg: np.ndarray, context: Sequence[int]) -> tuple[slice, ...]:
    """The bounding box of ``fg`` grown by ``context`` native voxels per axis, inside the volume."""
    box = []
    for axis, c in enumerate(context):
        others = tuple(a for a in range(fg.ndim) if a != axis)
        hit = np.flatnonzero(fg.any(axis=others))
        box.append(slice(max(int(hit[0]) - c, 0), min(int(hit[-1]) + 1 + c, fg.shape[axis])))
    return tuple(box)


def model_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, int, int]:
    """Model-grid size of a native box: enough model voxels to cover it."""
    return tuple(max(1, math.ceil(n / f)) for n, f in zip(shape, factors, strict=True))


def to_model_grid(
    volume: np.ndarray, factors: Sequence[float], out_shape: Sequence[int]
) -> np.ndarray:
    """Resample a native box (``(C, I, J, K)`` or ``(I, J, K)``) to the model grid (module docstring)."""
    if volume.ndim == 4:
        return np.stack([to_model_grid(ch, factors, out_shape) for ch in volume])
    v = np.asarray(volume, np.float32)
    for axis, f in enumerate(factors):
        width = int(round(f)) - 1
        if (
            width >= 2
        ):  # linear sampling averages two native voxels; wider model voxels need a box first
            v = ndi.uniform_filter1d(v, width, axis=axis, mode="nearest")
    offset = [0.5 * f - 0.5 for f in factors]
    return ndi.affine_transform(
        v,
        np.asarray(factors, np.float64),
        offset=offset,
        output_shape=tuple(out_shape),
        order=1,
        mode="nearest",
        prefilter=False,
    ).astype(np.float32)


def at_native_voxels(volume: np.ndarray, factors: Sequence[float], where: np.ndarray) -> np.ndarray:
    """A model-grid map (C, ...) interpolated linearly at the native voxels ``where`` of its box: (C, N).

    Only the voxels that change are interpolated (the mask is a small part of its box).
    """
    idx = np.nonzero(where)
    coords = np.stack([(i + 0.5) / f - 0.5 for i, f in zip(idx, factors, strict=True)])
    return np.stack(
        [
            ndi.map_coordinates(
                np.asarray(ch, np.float32), coords, order=1, mode="nearest", prefilter=False
            )
            for ch in volume
        ]
    ).astype(np.float32)


def extend_nearest(field: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``field`` (C, ...) with every voxel outside ``where`` set to the value of the nearest voxel inside."""
    if where.all() or not where.any():
        return field
    _, idx = ndi.distance_transform_edt(~where, return_indices=True)
    return field[(slice(None), *idx)]
