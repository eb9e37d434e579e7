"""LesionMix's populate apply: each drawn insertion warped, soft-masked and blended into the host (Soft-CP Eqs. 1-2)."""

from __future__ import annotations

import dataclasses
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
from napari_lesionmix.augment.softmask import soft_mask, soft_paste
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
            lesion = dataclasses.replace(lesion, image=matched.apply(lesion.image))
        tf = ins.transform
        warp = lesion_warp(lesion, tf, pad=soft_pad(params))
        hard = warp_mask(lesion, warp, aug)
        lab = warp_label(lesion, warp, hard)
        host_box, crop_box = placement_boxes(ins.position, warp, host.shape)
        if host_box is None:
            raise LesionMixError(f"Insertion at {format_position(ins.position, host.affine)} lies outside host "
                                 f"'{host.case_id}' of shape {host.shape}.")
        t1 = time.perf_counter()
        s = blend_weights(hard, params, host.spacing)[crop_box].astype(np.float32)
        t2 = time.perf_counter()
        if brain is not None:
            s = s * brain[host_box]
        # The pasted image only matters where S > 0 (elsewhere Eq. (1) returns the host's value
        # exactly), unless noise needs the whole crop's sd, the crop is not finite, or a host
        # voxel is -0.0 (0 * patch + -0.0 keeps the sign of 0 * patch).
        partial = (not any(op.kind == "noise" for op in tf.intensity)
                   and bool(np.isfinite(lesion.image).all()))
        where = None
        if partial:
            need = s > 0
            hreg = image[(slice(None), *host_box)]
            negzero = (hreg == 0) & np.signbit(hreg)
            if negzero.any():
                need |= negzero.any(axis=0)
            where = np.zeros(warp.shape, bool)
            where[crop_box] = need
        img = warp_image(lesion, warp, aug, where)
        if tf.intensity:
            img = apply_intensity(img, tf.intensity)
        if params.intensity_match == "median":
            ratio = [h / r if r != 0 else 1.0 for h, r in zip(params.host_reference, lesion.reference, strict=True)]
            img *= np.asarray(ratio, np.float32)[:, None, None, None]
        t3 = time.perf_counter()
        hard, lab, img = hard[crop_box], lab[crop_box], img[(slice(None), *crop_box)]
        if brain is not None:
            hard = hard & brain[host_box]
        # Soft-CP Eq. (1): I = S * I_paste + (1 - S) * I_host
        soft_paste(image, mask, host_box, s, img)
        # Soft-CP Eq. (2): Y = Y_host U Y_paste, host values kept where both are lesion.
        lbox = label[host_box]
        if lab.dtype.itemsize > label.dtype.itemsize:
            label = label.astype(lab.dtype)
            lbox = label[host_box]
        np.copyto(lbox, lab.astype(label.dtype), where=hard & (lbox == 0))
        for step, dt in (("transform", t1 - t0 + t3 - t2), ("soft mask", t2 - t1), ("blend", time.perf_counter() - t3)):
            clock[step] += dt
    if timings is not None:
        for step, dt in clock.items():
            timings[step] = timings.get(step, 0.0) + dt
    return image, label, mask
