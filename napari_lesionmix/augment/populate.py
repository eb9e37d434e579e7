"""LesionMix's populate apply: each drawn insertion warped, soft-masked and blended into the host (Soft-CP Eqs. 1-2)."""

from __future__ import annotations

import time

import numpy as np

from napari_lesionmix.augment.intensity import map_for
from napari_lesionmix.augment.lesionmix_params import LesionMixParams
from napari_lesionmix.augment.load_target import check_bank_grid
from napari_lesionmix.augment.paste.warp import (
    lesion_warp,
    placement_boxes,
    warp_image,
    warp_label,
    warp_mask,
)
from napari_lesionmix.augment.softmask import soft_mask, soft_mask_box, soft_paste
from napari_lesionmix.augment.transforms import apply_intensity
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import Case
from napari_lesionmix.io.position import format_position


def soft_pad(params: LesionMixParams) -> int:
    """Voxels added around a transformed crop so the soft mask's dilation fits inside it."""
    return int(params.soft_dilate) + 1


def blend_weights(mask: np.ndarray, params: LesionMixParams, spacing) -> np.ndarray:
    """Soft blending mask ``S`` of a transformed lesion mask (Soft-CP's soft mask)."""
    return soft_mask(mask, params.soft_a, params.soft_erode, params.soft_dilate, spacing)


def _finite(lesion) -> bool:
    """Whether a bank lesion's image is finite everywhere (cached on the lesion: it never changes)."""
    key = "_lesionmix_finite"
    ok = getattr(lesion, key, None)
    if ok is None:
        ok = bool(np.isfinite(lesion.image).all())
        try:
            object.__setattr__(lesion, key, ok)
        except (AttributeError, TypeError):
            pass
    return ok


def _within(box: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...] | None:
    """``box`` clipped to ``outer`` (same frame), or ``None`` where they do not meet."""
    out = tuple(slice(max(b.start, o.start), min(b.stop, o.stop)) for b, o in zip(box, outer, strict=True))
    return None if any(b.start >= b.stop for b in out) else out


def _shift(box: tuple[slice, ...], by) -> tuple[slice, ...]:
    return tuple(slice(b.start + d, b.stop + d) for b, d in zip(box, by, strict=True))


def _weights(soft, box, brain, host_box) -> np.ndarray:
    """S on ``box`` (crop frame) from :func:`soft_mask_box`'s ``(box, S)``, clipped to the brain."""
    s = np.zeros(tuple(b.stop - b.start for b in box), np.float32)
    if soft is not None:
        both = _within(soft[0], box)
        if both is not None:
            s[_shift(both, [-b.start for b in box])] = soft[1][_shift(both, [-b.start for b in soft[0]])]
    return s * brain[host_box] if brain is not None else s


def apply_populate(host: Case, params: LesionMixParams, bank, brain, timings: dict[str, float] | None = None):
    clock = {"transform": 0.0, "soft mask": 0.0, "blend": 0.0}
    image = host.image.astype(np.float32, copy=True)
    label = host.label.copy()
    mask = np.zeros(host.shape, np.float32)
    aug = params.augment
    for ins in params.insertions:
        lesion = bank.lesion(ins.case_id, ins.lesion_index)
        check_bank_grid(host, [lesion])
        # Pad so the soft mask's dilation is not cut by the crop edge.
        t0 = time.perf_counter()
        matched = map_for(params.intensity, ins.case_id)
        if matched is not None and matched.mode != "none":
            # The registry's shared intensity step, per source case (registry.fit_intensity recorded the map).
            lesion = lesion.with_image(matched.apply(lesion.image))
        tf = ins.transform
        warp = lesion_warp(lesion, tf, pad=soft_pad(params))
        # The pasted image only matters where S > 0, unless noise needs the whole crop's sd.
        partial = _finite(lesion) and not any(op.kind == "noise" for op in tf.intensity)
        if not partial and warp.disp is not None:
            warp.coords()  # the whole crop is resampled below: compute its coordinates once, here
        hard = warp_mask(lesion, warp, aug)
        lab = warp_label(lesion, warp, hard)
        host_box, crop_box = placement_boxes(ins.position, warp, host.shape)
        if host_box is None:
            raise LesionMixError(f"Insertion at {format_position(ins.position, host.affine)} lies outside host "
                                 f"'{host.case_id}' of shape {host.shape}.")
        t1 = time.perf_counter()
        soft = soft_mask_box(hard, params.soft_a, params.soft_erode, params.soft_dilate, host.spacing)
        t2 = time.perf_counter()
        # Eq. (1) with S = 0 returns the host's value exactly, so the blend runs on the soft mask's
        # box only, unless it would not: a host voxel of -0.0 (0 * patch + -0.0 keeps the sign of
        # 0 * patch) or a non-finite patch voxel (0 * inf is nan) outside it. Then, and for an
        # empty mask, the whole crop is blended as before.
        hreg = image[(slice(None), *host_box)]
        negzero = np.signbit(hreg)
        negzero &= hreg == 0
        negzero = negzero.any(axis=0) if negzero.any() else None
        box = None if soft is None or negzero is not None else _within(soft[0], crop_box)
        if box is None:
            box = crop_box
        to_host = [h.start - c.start for h, c in zip(host_box, crop_box, strict=True)]
        hbox = _shift(box, to_host)
        s = _weights(soft, box, brain, hbox)
        where = None
        if partial:
            where = np.zeros(warp.shape, bool)
            where[box] = s > 0
            if negzero is not None:
                where[crop_box] |= negzero
        img = warp_image(lesion, warp, aug, where)
        if tf.intensity:
            img = apply_intensity(img, tf.intensity)
        if params.intensity_match == "median":
            ratio = [h / r if r != 0 else 1.0 for h, r in zip(params.host_reference, lesion.reference, strict=True)]
            img *= np.asarray(ratio, np.float32)[:, None, None, None]
        if box != crop_box and not partial and not np.isfinite(img).all():
            box, hbox = crop_box, host_box  # a non-finite patch voxel outside the soft box: blend it all
            s = _weights(soft, box, brain, hbox)
        t3 = time.perf_counter()
        hard, lab, img = hard[box], lab[box], img[(slice(None), *box)]
        if brain is not None:
            hard = hard & brain[hbox]
        # Soft-CP Eq. (1): I = S * I_paste + (1 - S) * I_host
        soft_paste(image, mask, hbox, s, img)
        # Soft-CP Eq. (2): Y = Y_host U Y_paste, host values kept where both are lesion.
        lbox = label[hbox]
        if lab.dtype.itemsize > label.dtype.itemsize:
            label = label.astype(lab.dtype)
            lbox = label[hbox]
        np.copyto(lbox, lab.astype(label.dtype), where=hard & (lbox == 0))
        for step, dt in (("transform", t1 - t0 + t3 - t2), ("soft mask", t2 - t1), ("blend", time.perf_counter() - t3)):
            clock[step] += dt
    if timings is not None:
        for step, dt in clock.items():
            timings[step] = timings.get(step, 0.0) + dt
    return image, label, mask
