"""Classical harmonization baselines of the ARHNet paper's Table 1 (no torch).

``composite``
    No harmonization: the synthetic image as it is.
``hm``
    As the ARHNet paper describes it (Sec. 3.2.1): the pasted foreground's
    histogram is matched to the host's own lesions ("the background lesions"):
    the pasted lesion voxels (label > 0 inside the mask) are mapped, rank for
    rank, onto the quantiles of the host's lesion voxels (label > 0 outside the
    mask), all pasted lesions together. It needs the synthetic label; without
    one, or when the host keeps no lesion of its own, it falls back to ``hm-ring``.
    Mask voxels that are not lesion (Soft-CP's soft halo) go through ``hm-ring``.
``hm-ring``
    Histogram matching of each foreground component to the ring of tissue
    around it (``ring_width`` voxels around each connected component, other
    foreground and padding at the image minimum excluded; our earlier reading
    of "HM"). It matches a lesion to normal tissue, erasing its contrast.

Both follow the contract of :func:`napari_lesionmix.harmonize.harmonize`:
voxels where ``mask == 0`` are returned bit-identical, and a soft mask blends
``out = I + M * (H(I) - I)`` as ARHNet's ``I^ = I~ + G * M`` does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.morphology import connected_components


def check_image_mask(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a ``(C, I, J, K)`` image and an ``(I, J, K)`` mask; return the image and a float32 mask.

    Integer or boolean masks become 0/1 (any label > 0 is foreground); float
    masks are soft weights and must lie in [0, 1].
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 4:
        raise LesionMixError(f"The image must have shape (C, I, J, K); got shape {image.shape}.")
    if mask.shape != image.shape[1:]:
        raise LesionMixError(f"The mask has shape {mask.shape} but the image grid is {image.shape[1:]}.")
    if mask.dtype.kind == "f" and (not np.all(np.isfinite(mask)) or mask.min() < 0 or mask.max() > 1):
        raise LesionMixError("A soft mask must hold values in [0, 1].")
    if not np.all(np.isfinite(image)):
        raise LesionMixError("The image holds NaN or infinite values.")
    if mask.dtype.kind != "f":
        # Boolean or label masks: every labelled voxel is foreground (M = 1).
        return image, (mask > 0).astype(np.float32)
    return image, mask.astype(np.float32)


def output_array(image: np.ndarray) -> np.ndarray:
    """A writable copy of ``image`` in its own float dtype (float32 for integer images)."""
    return image.copy() if image.dtype.kind == "f" else image.astype(np.float32)


def composite(image: np.ndarray, mask: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The "Composite" row of Table 1: no harmonization (a copy of ``image``)."""
    image, _ = check_image_mask(image, mask)
    if progress is not None:
        progress(1, 1)
    return output_array(image)


def match_to_reference(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``values`` rank for rank onto the quantiles of ``reference`` (1D arrays).

    Equal values get equal outputs (their mean rank is used).
    """
    values = np.asarray(values, dtype=np.float64)
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    # Mid-rank quantile of each distinct value, then the reference's value there.
    q = (np.cumsum(counts) - 0.5 * counts) / values.size
    ref_q = (np.arange(ref.size) + 0.5) / ref.size
    return np.interp(q, ref_q, ref)[inverse]


def histogram_matching(
    image: np.ndarray,
    mask: np.ndarray,
    ring_width: int = 3,
    connectivity: int = 26,
    progress: Callable[[int, int], None] | None = None,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """``hm-ring``: match each foreground component to its surrounding ring.

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K)
    mask : ndarray, shape (I, J, K), bool or soft in [0, 1]
        Voxels with ``mask > 0`` are harmonized.
    ring_width : int
        Width in voxels of the reference ring (dilation of the component by a
        cube of side ``2 * ring_width + 1``, minus all foreground).
    connectivity : {6, 18, 26}
        Connectivity of the foreground components.
    exclude : ndarray of bool, optional
        Voxels never used as reference (besides the foreground and padding).

    Returns
    -------
    ndarray
        Same shape and dtype as ``image``; voxels outside the mask unchanged.
    """
    image, m = check_image_mask(image, mask)
    if ring_width < 1:
        raise LesionMixError(f"The ring width must be >= 1 voxel, got {ring_width}.")
    fg = m > 0
    rank = {6: 1, 18: 2, 26: 3}.get(connectivity)
    if rank is None:
        raise LesionMixError(f"Connectivity must be 6, 18 or 26, got {connectivity}.")
    comps, n = connected_components(fg, rank)
    out = output_array(image)
    # Voxels at the image minimum in every channel are padding outside the head (skull-stripped
    # scans): matching tissue to them punched black holes where a lesion touches the brain edge,
    # so they are neither matched nor used as reference.
    minima = image.reshape(image.shape[0], -1).min(axis=1)
    outside = np.all(image == minima[:, None, None, None], axis=0)
    objects = ndi.find_objects(comps)
    shape = fg.shape
    for idx, sl in enumerate(objects, start=1):
        # Work in the component's box grown by the ring width.
        box = tuple(slice(max(s.start - ring_width, 0), min(s.stop + ring_width, n_)) for s, n_ in zip(sl, shape, strict=True))
        comp = comps[box] == idx
        ring = ndi.binary_dilation(comp, np.ones((3, 3, 3), bool), iterations=ring_width) & ~fg[box]
        ring &= ~outside[box]
        if exclude is not None:
            ring &= ~exclude[box]
        comp &= ~outside[box]
        if ring.any() and comp.any():
            w = m[box][comp]
            for c in range(image.shape[0]):
                region = image[c][box]
                matched = match_to_reference(region[comp], region[ring])
                vals = region[comp].astype(np.float64)
                new = vals + w * (matched - vals)
                target = out[c][box]
                target[comp] = new.astype(out.dtype)
        if progress is not None:
            progress(idx, n)
    if progress is not None and n == 0:
        progress(1, 1)
    return out


def histogram_matching_lesions(
    image: np.ndarray,
    mask: np.ndarray,
    label: np.ndarray | None,
    ring_width: int = 3,
    connectivity: int = 26,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The "HM" row of Table 1 as the paper describes it: pasted lesions matched to the host's lesions.

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K)
    mask : ndarray, shape (I, J, K), bool or soft in [0, 1]
        The mixing mask; voxels with ``mask > 0`` are harmonized.
    label : ndarray, shape (I, J, K), or None
        The synthetic label map. Pasted lesions = ``label > 0`` inside the
        mask, the host's own lesions = ``label > 0`` outside it.
    ring_width, connectivity
        For the fall-back (:func:`histogram_matching`), used without a label,
        without host lesions, and for the mask's non-lesion voxels.

    Returns
    -------
    ndarray
        Same shape and dtype as ``image``; voxels outside the mask unchanged;
        a soft mask blends ``I + M * (H(I) - I)``.

    Examples
    --------
    >>> img = np.full((1, 6, 6, 6), 100.0, np.float32)
    >>> lab = np.zeros((6, 6, 6), np.uint8); lab[0, 0, :3] = 1; lab[4, 4, :3] = 1
    >>> img[0][lab > 0] = [150, 160, 170, 300, 320, 340]
    >>> m = np.zeros((6, 6, 6), bool); m[4, 4, :3] = True
    >>> histogram_matching_lesions(img, m, lab)[0, 4, 4, :3].tolist()
    [150.0, 160.0, 170.0]
    """
    image, m = check_image_mask(image, mask)
    fg = m > 0
    if label is None:
        return histogram_matching(image, mask, ring_width, connectivity, progress)
    lab = np.asarray(label) > 0
    if lab.shape != fg.shape:
        raise LesionMixError(f"The label has shape {lab.shape} but the image grid is {fg.shape}.")
    host_lesions = lab & ~fg
    pasted = lab & fg
    if not host_lesions.any() or not pasted.any():
        return histogram_matching(image, mask, ring_width, connectivity, progress)
    out = output_array(image)
    w = m[pasted]
    for c in range(image.shape[0]):
        vals = image[c][pasted].astype(np.float64)
        matched = match_to_reference(vals, image[c][host_lesions])
        out[c][pasted] = (vals + w * (matched - vals)).astype(out.dtype)
    rest = fg & ~lab
    if rest.any():
        # Soft-CP's halo around a pasted lesion is tissue: matched to its ring, never to the lesion inside it.
        ring = histogram_matching(image, np.where(rest, m, 0.0).astype(np.float32), ring_width, connectivity,
                                  exclude=pasted)
        out[:, rest] = ring[:, rest]
    if progress is not None:
        progress(1, 1)
    return out
