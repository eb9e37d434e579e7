"""How LesionMix reaches a target lesion load: the lesions populate inserts, the lesions inpaint removes.

The draws only draw (from the sample's generator); :mod:`~napari_lesionmix.augment.lesionmix`
applies what they drew, inpainting here (:func:`apply_inpaint`: the removed lesions filled by
Telea's method, :func:`inpaint_region`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_lesionmix.augment.distance import bounding_box
from napari_lesionmix.augment.inpaint import dilate_cross, inpaint_telea
from napari_lesionmix.augment.lesion_load import voxel_volume_ml
from napari_lesionmix.augment.lesionmix_params import Insertion, LesionMixParams
from napari_lesionmix.augment.lesions import Lesion, components_box, label_components
from napari_lesionmix.augment.likelihood import LikelihoodMap, normalise, positions_from_cdf
from napari_lesionmix.augment.paste.warp import (
    draw_transform,
    lesion_warp,
    placement_boxes,
    warp_mask,
)
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import AFFINE_TOLERANCE_MM, Case


def check_bank_grid(host: Case, lesions: Sequence[Lesion]) -> None:
    if lesions and np.max(np.abs(np.asarray(lesions[0].spacing) - np.asarray(host.spacing))) > AFFINE_TOLERANCE_MM:
        raise LesionMixError(
            f"Host '{host.case_id}' has voxel size {tuple(round(s, 4) for s in host.spacing)} mm but the lesion "
            f"bank's cases have {tuple(round(s, 4) for s in lesions[0].spacing)} mm; resample to one grid."
        )


#: A draw whose resized lesion volume exceeds this factor times the load still
#: allowed is rejected before resampling (the exact check follows for the rest).
OVERSHOOT_SLACK = 1.25


def draw_removals(rng, host: Case, connectivity: int, host_load: float, target: float, tol: float):
    """Remove whole lesions in random order while the load stays >= target - tol."""
    _, comps, n = components_box(host.label, connectivity)  # the lesions' box: no full-volume pass
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
    total = int(counts.sum())  # every lesion voxel lies in the box
    kept = total - int(counts[removals].sum()) if removals else total
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


def draw_insertions(rng, host, bank, likelihood, brain, aug, source_cases, lesion_sampling, host_load, target,
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
    by_case = bank.lesions_of(cases)  # labels not read yet are read in threads
    by_case = {cid: les for cid, les in by_case.items() if les}
    if not by_case:
        raise LesionMixError("The lesion bank holds no lesions to populate with.")
    check_bank_grid(host, next(iter(by_case.values())))
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
        host_box, crop_box = placement_boxes(pos, warp, host.shape)
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


def inpaint_shortfall(host: Case, params: LesionMixParams) -> str | None:
    """:func:`remaining_note` of inpainting params that missed their target (``None`` otherwise)."""
    if params.mode != "inpaint" or params.target_reached:
        return None
    if params.host_load_ml < params.target_load_ml:
        return "inpainting only removes lesions and the host load is below the target"
    comps, n = label_components(host.label, params.connectivity)
    counts = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    return remaining_note(np.delete(counts, list(params.removals)) * voxel_volume_ml(host.spacing))


def inpaint_region(host_label: np.ndarray, removals: Sequence[int], connectivity: int, dilate: int):
    """(removed lesion voxels, voxels to inpaint) for host component indices ``removals``."""
    box, removed_box, region_box = inpaint_region_box(host_label, removals, connectivity, dilate)
    removed = np.zeros(np.shape(host_label), bool)
    region = np.zeros(np.shape(host_label), bool)
    if box is not None:
        removed[box] = removed_box
        region[box] = region_box
    return removed, region


def inpaint_region_box(host_label: np.ndarray, removals: Sequence[int], connectivity: int, dilate: int):
    """:func:`inpaint_region` on a box: ``(box, removed[box], region[box])``, both empty outside ``box``.

    ``box`` is the removed lesions' bounding box grown by ``dilate`` (clipped to
    the volume), or ``None`` when nothing is removed; no full-volume array is made.
    """
    lbox, comps, n = components_box(host_label, connectivity)
    bad = [k for k in removals if not 0 <= k < n]
    if bad:
        raise LesionMixError(f"The host label has {n} lesion(s); removal index {bad[0]} does not exist.")
    if lbox is None or not len(removals):
        return None, None, None
    keep = np.zeros(n + 1, bool)
    keep[np.asarray(removals, int) + 1] = True
    removed_l = keep[comps]  # on the lesions' box
    tight = bounding_box(removed_l)
    shape = np.shape(host_label)
    box = tuple(slice(max(lb.start + t.start - dilate, 0), min(lb.start + t.stop + dilate, n_))
                for lb, t, n_ in zip(lbox, tight, shape, strict=True))
    removed = np.zeros(tuple(b.stop - b.start for b in box), bool)
    # The removed voxels all lie in both boxes: copy their intersection.
    both = tuple(slice(max(b.start, lb.start), min(b.stop, lb.stop)) for b, lb in zip(box, lbox, strict=True))
    removed[tuple(slice(o.start - b.start, o.stop - b.start) for o, b in zip(both, box, strict=True))] = removed_l[
        tuple(slice(o.start - lb.start, o.stop - lb.start) for o, lb in zip(both, lbox, strict=True))]
    if dilate <= 0:
        return box, removed, removed
    # The partial-volume rim: `dilate` steps of the 6-neighbour cross, never into kept lesions.
    rim = dilate_cross(removed, int(dilate))
    region = rim & ((np.asarray(host_label)[box] == 0) | removed)
    return box, removed, region


def apply_inpaint(host: Case, params: LesionMixParams):
    box, removed, region = inpaint_region_box(host.label, params.removals, params.connectivity,
                                              params.inpaint_dilate)
    label = host.label.copy()
    mask = np.zeros(host.shape, np.float32)
    if box is None:
        return host.image.astype(np.float32, copy=True), label, mask
    image = inpaint_telea(host.image, region, params.inpaint_radius, params.inpaint_axes, box=box)
    label[box][removed] = 0
    mask[box] = region
    return image, label, mask
