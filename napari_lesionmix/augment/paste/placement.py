"""Where a lesion may go: the reference region of Soft-CP's Eq. (3) and the placement search of Eqs. (3)-(4).

    |M_lesion n M_refer| / |M_lesion|  >= delta1                 (Eq. 3)
    |M_lesion n M_host lesions| / |M_lesion|  <= delta2          (Eq. 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_lesionmix.augment.paste.objects import PasteObject, lesion_mask
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import case_brain, estimate_brain
from napari_lesionmix.io.nifti import Case


def check_delta(delta1: float, delta2: float) -> None:
    if not 0.0 <= delta1 <= 1.0:
        raise LesionMixError(f"delta1 must be a fraction in [0, 1], got {delta1!r}.")
    if not 0.0 <= delta2 <= 1.0:
        raise LesionMixError(f"delta2 must be a fraction in [0, 1], got {delta2!r}.")


def parse_reference(reference: str) -> int | None:
    """The label value of a "label:N" reference, else None (and check the name)."""
    if reference in ("brain_mask", "foreground", "tissue", "none"):
        return None
    if reference.startswith("label:"):
        try:
            value = int(reference[6:])
        except ValueError:
            value = -1
        if value > 0:
            return value
    raise LesionMixError(
        f"Unknown reference '{reference}'; use 'brain_mask', 'label:N' (N > 0), 'foreground', 'tissue' or 'none'."
    )


def reference_region(host: Case, reference: str, reference_mask: np.ndarray | None) -> np.ndarray | None:
    """The reference of Eq. (3) on the host grid (``None`` for "none": the whole volume)."""
    value = parse_reference(reference)
    if reference == "brain_mask":
        if reference_mask is None:
            raise LesionMixError("The reference is 'brain_mask' but no brain mask was given.")
        ref = np.asarray(reference_mask)
        ref = ref if ref.dtype == bool else ref != 0
        if ref.shape != host.shape:
            raise LesionMixError(
                f"The brain mask has shape {ref.shape} but host '{host.case_id}' has {host.shape}."
            )
    elif value is not None:
        if host.label is None:
            raise LesionMixError(f"Host '{host.case_id}' has no label map for reference '{reference}'.")
        ref = host.label == value
    elif reference == "foreground":
        # Not "the non-zero image": a z-scored scan's background is a non-zero constant.
        ref = case_brain(host).mask
    elif reference == "tissue":
        ref = tissue_region(host.image[0], case_brain(host, reference_mask).mask)
    else:
        return None
    if not ref.any():
        raise LesionMixError(f"The reference region '{reference}' of host '{host.case_id}' is empty.")
    return ref


#: Percentile of the brain's (or non-zero image's) intensities below which a voxel is not tissue
#: for the "tissue" reference: on FLAIR, CSF (ventricles, sulci) is the dark end of the brain.
TISSUE_PERCENTILE = 10.0


def tissue_region(image: np.ndarray, brain_mask: np.ndarray | None = None,
                  percentile: float = TISSUE_PERCENTILE) -> np.ndarray:
    """Brain tissue without the dark end of its intensities (FLAIR's CSF): a placement reference.

    The brain is ``brain_mask`` when given, else the estimated brain
    (:func:`~napari_lesionmix.io.brain.estimate_brain`); voxels
    darker than its ``percentile``-th intensity percentile are left out, so a
    lesion is not pasted into a ventricle or a sulcus. Where the paper is
    silent: an option (``reference="tissue"``), not the default.
    """
    brain = np.asarray(brain_mask, bool) if brain_mask is not None else estimate_brain(image)
    if not brain.any():
        return brain
    return brain & (image >= np.percentile(image[brain], percentile))


def host_lesions(label: np.ndarray, lesion_labels: Sequence[int], reference: str) -> np.ndarray:
    """Host voxels that count as lesion in Eq. (4) (a reference label never does)."""
    mask = lesion_mask(label, lesion_labels)
    value = parse_reference(reference)
    if value is not None:
        mask &= label != value
    return mask


def reference_name(reference: str) -> str:
    value = parse_reference(reference)
    if value is not None:
        return f"host label {value}"
    return {"brain_mask": "the brain mask", "foreground": "the host's estimated brain",
            "tissue": "the host's brain tissue (CSF left out)", "none": "the volume"}[reference]


def fits(offset, obj: PasteObject, shape_vol) -> bool:
    """Whether the lesion itself lies inside the volume (its soft band may be clipped)."""
    return all(0 <= o + b.start and o + b.stop <= s
               for o, b, s in zip(offset, obj.lesion_box, shape_vol, strict=True))


def paste_boxes(offset, obj_shape, shape_vol):
    """(host box, crop box) of a crop at ``offset``, clipped to the volume."""
    host, crop = [], []
    for o, n, s in zip(offset, obj_shape, shape_vol, strict=True):
        lo, hi = max(o, 0), min(o + n, s)
        host.append(slice(lo, hi))
        crop.append(slice(lo - o, hi - o))
    return tuple(host), tuple(crop)


def constraints(obj: PasteObject, offset, reference, occupied) -> tuple[float, float]:
    """(fraction of the lesion in the reference, fraction on host lesions): Eqs. (3)-(4)."""
    box, cbox = paste_boxes(offset, obj.shape, occupied.shape)
    lesion = obj.lesion[cbox]
    n = obj.n_voxels
    inside = 1.0 if reference is None else np.count_nonzero(reference[box] & lesion) / n
    overlap = np.count_nonzero(occupied[box] & lesion) / n
    return float(inside), float(overlap)


def place(
    rng: np.random.Generator,
    obj: PasteObject,
    reference: np.ndarray | None,
    ref_box: tuple[slice, ...],
    occupied: np.ndarray,
    delta1: float,
    delta2: float,
    max_tries: int,
    source: np.ndarray | None = None,
    jitter: np.ndarray | None = None,
) -> tuple[tuple[int, int, int] | None, dict]:
    """Draw positions until Eqs. (3)-(4) hold; returns (offset or None, failure counts).

    The lesion's centre of mass goes to a voxel drawn uniformly from the
    reference or, with ``source``, to ``source + N(0, jitter)`` (voxels).
    """
    com = np.round(np.argwhere(obj.lesion).mean(axis=0)).astype(int)
    counts = {"outside": 0, "reference": 0, "overlap": 0}
    shape = occupied.shape
    for _ in range(max_tries):
        if source is not None:
            v = [int(x) for x in np.round(source + rng.normal(0.0, 1.0, 3) * jitter)]
        else:
            # A voxel of the reference, by rejection inside its bounding box.
            for _draw in range(64):
                v = [int(rng.integers(b.start, b.stop)) for b in ref_box]
                if reference is None or reference[tuple(v)]:
                    break
        offset = tuple(int(x - c) for x, c in zip(v, com, strict=True))
        if not fits(offset, obj, shape):
            counts["outside"] += 1
            continue
        inside, overlap = constraints(obj, offset, reference, occupied)
        if inside < delta1:                     # Eq. (3)
            counts["reference"] += 1
        elif overlap > delta2:                  # Eq. (4)
            counts["overlap"] += 1
        else:
            return offset, counts
    return None, counts


def placement_message(component, obj, counts, reference, delta1, delta2, max_tries, placement) -> str:
    worst = max(counts, key=counts.get)
    why = {
        "outside": "the lesion did not fit inside the volume",
        "reference": f"less than {delta1:.0%} of the lesion lay in {reference_name(reference)}",
        "overlap": f"more than {delta2:.0%} of the lesion overlapped the host's lesions",
    }[worst]
    return (
        f"No position keeps >= {delta1:.0%} of donor lesion {component} ({int(obj.lesion.sum())} voxels) "
        f"inside {reference_name(reference)} and <= {delta2:.0%} on the host's lesions after {max_tries} "
        f"tries (most often {why}); lower delta1, raise delta2, "
        + ("use a larger reference or place near the source." if placement == "random"
           else "use a larger reference or a larger jitter.")
    )
