"""Fast-marching (Telea) inpainting of removed lesions, for LesionMix's inpainting mode.

LesionMix (Basaran et al., 2023, Sec. 2) removes lesions "using the fast
marching method" of Telea (2004): unknown voxels are filled in order of their
distance to the known region, each as a weighted average of known neighbours
within a radius ``eps`` (weights: direction, distance and level-set terms,
Telea's Eq. 7), so the fill continues the surrounding tissue inwards.

**Slice-wise OpenCV, three orthogonal passes, averaged (the choice made here).**
OpenCV's ``cv2.inpaint(..., cv2.INPAINT_TELEA)`` is the reference C++
implementation of Telea's method, but 2D. A 3D fast-marching implementation
would have to be hand-written in Python (per-voxel heap updates: slow for a
100k-voxel stroke lesion at 1 mm, and an unreviewed re-implementation), against
the project's rule of using well-kept libraries. A single slice-wise pass fills
each slice only from in-plane neighbours and leaves seams across slices; we
therefore run the slice-wise pass along each of the three axes (``axes=(0, 1,
2)``) and average the three fills, so every voxel receives information from all
six directions, and the seams of one pass are averaged with two passes that cut
across them. ``axes=(2,)`` gives the plain axial slice-wise method. Only the
bounding box of the region plus ``radius + 2`` voxels is processed.

**Float intensities.** ``cv2.inpaint`` accepts 32-bit float single-channel
images, but its Telea update adds a gradient term in absolute intensity units
(bounded by about 1.4), tuned for 0..255 images: on a [0, 1] image it
overshoots wildly, on a [0, 1e5] image it vanishes. Each channel's crop is
therefore mapped linearly to [0, 255] in float32 (no 8-bit quantisation),
inpainted, and mapped back, which makes the fill equivariant to intensity
scaling and offset. Channels are inpainted independently.

**Range.** With ``clip=True`` (default) the fill is clipped to the range of
the known voxels within ``radius`` of the region (the voxels Telea's averages
draw from), so a fill never leaves the surrounding tissue's intensity range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.distance import bounding_box
from napari_lesionmix.errors import LesionMixError


def dilate_cross(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """``scipy.ndimage.binary_dilation`` of a 3D bool mask by the 6-neighbour cross, ``iterations`` times.

    The same voxels (nothing beyond the array's edge, as ``border_value=0``), from
    shifted ORs: several times faster than scipy's per-voxel structuring loop on
    the boxes inpainting works on.
    """
    out = np.array(mask, dtype=bool, copy=True)
    for _ in range(int(iterations)):
        prev = out.copy()
        out[1:] |= prev[:-1]
        out[:-1] |= prev[1:]
        out[:, 1:] |= prev[:, :-1]
        out[:, :-1] |= prev[:, 1:]
        out[:, :, 1:] |= prev[:, :, :-1]
        out[:, :, :-1] |= prev[:, :, 1:]
    return out


def _grow(box: tuple[slice, ...], by: int, shape) -> tuple[slice, ...]:
    return tuple(slice(max(b.start - by, 0), min(b.stop + by, n)) for b, n in zip(box, shape, strict=True))


def _telea_slices(sub: np.ndarray, mask_u8: np.ndarray, axis: int, radius: float, margin: int,
                  total: np.ndarray, count: np.ndarray) -> None:
    """Inpaint every slice of ``sub`` across ``axis`` that holds region voxels; add the fill to ``total``.

    Each slice is inpainted on the box of its own region pixels plus ``margin``
    (``ceil(radius) + 2``): Telea's update reads known pixels within ``radius``
    only, so the fill is the same as on the whole slice (checked pixel for pixel
    by the tests) at a fraction of OpenCV's per-image set-up. The fill of each
    region voxel is added to ``total`` (float64) and ``count`` incremented, in
    place: a pass touches only the region, not more arrays of the whole box.
    """
    import cv2

    s_t, s_c = np.moveaxis(total, axis, 0), np.moveaxis(count, axis, 0)
    s_m = np.moveaxis(mask_u8, axis, 0)
    s_i = np.moveaxis(sub, axis, 0)
    rows = s_m.any(axis=2)  # (slice, row): which rows of each slice hold region pixels
    cols = s_m.any(axis=1)
    for z in np.flatnonzero(rows.any(axis=1)):
        m = s_m[z]
        r, c = np.flatnonzero(rows[z]), np.flatnonzero(cols[z])
        if min(m.shape) < 2 or (r.size == m.shape[0] and c.size == m.shape[1] and m.all()):
            continue  # nothing known in this slice (or a degenerate one): the other axes fill it
        crop = (slice(max(int(r[0]) - margin, 0), min(int(r[-1]) + 1 + margin, m.shape[0])),
                slice(max(int(c[0]) - margin, 0), min(int(c[-1]) + 1 + margin, m.shape[1])))
        m_crop = np.ascontiguousarray(m[crop])
        filled = cv2.inpaint(np.ascontiguousarray(s_i[z][crop]), m_crop, float(radius), cv2.INPAINT_TELEA)
        here = m_crop.view(bool)
        s_t[z][crop][here] += filled[here]
        s_c[z][crop][here] += 1


def inpaint_telea(
    image: np.ndarray,
    region: np.ndarray,
    radius: float = 3.0,
    axes: Sequence[int] = (0, 1, 2),
    clip: bool = True,
    *,
    box: tuple[slice, ...] | None = None,
) -> np.ndarray:
    """Fill ``region`` of a 3D image (or ``(C, I, J, K)`` channels) from the surrounding tissue.

    Parameters
    ----------
    image : ndarray, shape (I, J, K) or (C, I, J, K)
        Intensities (any float range).
    region : ndarray of bool, shape (I, J, K), or the shape of ``box``
        Voxels to fill (e.g. removed lesions).
    radius : float
        Telea's neighbourhood radius ``eps`` in voxels (``inpaintRadius`` of OpenCV).
    axes : sequence of int
        Slicing axes of the slice-wise passes; their fills are averaged.
    clip : bool
        Clip the fill to the range of known voxels within ``radius`` of the region.
    box : tuple of slices, optional
        ``region`` is given on this box of the volume (and is empty outside it):
        the same fill, without a pass over a full-volume region.

    Returns
    -------
    ndarray
        A float32 copy of ``image`` with ``region`` filled; other voxels unchanged.
    """
    image = np.asarray(image)
    region = np.asarray(region, bool)
    squeeze = image.ndim == 3
    img = image[None] if squeeze else image
    if img.ndim != 4 or (box is None and img.shape[1:] != region.shape):
        raise LesionMixError(
            f"Inpainting needs an image of shape {region.shape} (or channels of it), got {image.shape}."
        )
    shape = img.shape[1:]
    where = tuple(slice(0, n) for n in shape) if box is None else tuple(slice(*b.indices(n)[:2]) for b, n in
                                                                         zip(box, shape, strict=True))
    if region.shape != tuple(b.stop - b.start for b in where):
        raise LesionMixError(f"The inpainting region has shape {region.shape} but its box {box} of the "
                             f"{shape} volume has {tuple(b.stop - b.start for b in where)}.")
    if not np.isfinite(radius) or radius <= 0:
        raise LesionMixError(f"Inpainting radius must be > 0 voxels, got {radius}.")
    axes = tuple(int(a) for a in axes)
    if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise LesionMixError(f"Inpainting axes must be distinct values among 0, 1, 2, got {axes}.")
    out = img.astype(np.float32, copy=True)
    tight = bounding_box(region)
    if tight is None:
        return out[0] if squeeze else out
    if region.all() and region.shape == shape:
        raise LesionMixError("The inpainting region covers the whole volume; there is no tissue to fill from.")
    margin = int(np.ceil(radius)) + 2
    box = _grow(tuple(slice(t.start + w.start, t.stop + w.start) for t, w in zip(tight, where, strict=True)),
                margin, shape)
    m = np.zeros(tuple(b.stop - b.start for b in box), bool)
    both = tuple(slice(max(b.start, w.start), min(b.stop, w.stop)) for b, w in zip(box, where, strict=True))
    m[tuple(slice(o.start - b.start, o.stop - b.start) for o, b in zip(both, box, strict=True))] = region[
        tuple(slice(o.start - w.start, o.stop - w.start) for o, w in zip(both, where, strict=True))]
    m_u8 = m.view(np.uint8)
    # The known voxels Telea draws from: within `radius` of the region.
    band = dilate_cross(m, int(np.ceil(radius)))
    band &= ~m
    has_band = bool(band.any())
    known_mask = ~m
    for c in range(out.shape[0]):
        sub = out[c][box]  # a view: filled in place
        known = sub[known_mask]
        lo, hi = float(known.min()), float(known.max())
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        norm = ((sub - lo) * scale).astype(np.float32)  # see module docstring: cv2's 32F Telea assumes 0..255
        # Each region voxel's fills, summed in the order of `axes`; calloc'd, so only the region's pages are touched.
        total = np.zeros(sub.shape, np.float64)
        count = np.zeros(sub.shape, np.int32)
        for axis in axes:
            _telea_slices(norm, m_u8, axis, radius, margin, total, count)
        todo = m & (count > 0)
        values = (total[todo] / count[todo]) / scale + lo
        if clip and has_band:
            values = np.clip(values, float(sub[band].min()), float(sub[band].max()))
        sub[todo] = values.astype(np.float32)
        rest = m & (count == 0)
        if rest.any():  # no pass could fill these (degenerate slices): nearest known voxel
            idx = ndi.distance_transform_edt(m, return_distances=False, return_indices=True)
            sub[rest] = sub[tuple(i[rest] for i in idx)]
    return out[0] if squeeze else out
