"""npe2 writers: Image and Labels layers back to ``.nii.gz`` with their original geometry.

A layer read by :mod:`napari_lesionmix._reader` (or made by the studio) carries
``metadata["lesionmix"]`` with the source affine and header: its data is put back
into the file's voxel order and saved with that affine and header, so a
read -> write round trip gives identical voxels and affine. Any other layer is
written as displayed, with an affine built from its ``scale``/``translate``
(the reader's LPS z-y-x convention). Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import (
    META_KEY,
    DisplayOrientation,
    affine_from_layer_geometry,
    header_from_text,
)
from napari_lesionmix.io.nifti import NIFTI_SUFFIXES, save_image, save_label, save_nifti_atomic


def _target(path: str) -> Path:
    p = Path(path)
    if not p.name.lower().endswith(NIFTI_SUFFIXES):
        p = p.with_name(p.name + ".nii.gz")
    return p


def restore_geometry(data: np.ndarray, meta: dict[str, Any]):
    """``(data in file order, affine, header)`` for a layer's data and its napari metadata."""
    data = np.asarray(data)
    ours = (meta.get("metadata") or {}).get(META_KEY)
    if ours:
        affine = np.asarray(ours["affine"], dtype=float)
        orient = DisplayOrientation(affine, ours["shape"])
        if tuple(data.shape[-3:]) == orient.display_shape:
            return orient.to_original(data), affine, header_from_text(ours["header"])
    scale = meta.get("scale") or (1.0,) * data.ndim
    translate = meta.get("translate") or (0.0,) * data.ndim
    return data, affine_from_layer_geometry(scale, translate), None


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for Image layers (3D, or 4D with channels first)."""
    target = _target(path)
    vol, affine, header = restore_geometry(data, meta)
    if vol.ndim == 3:
        dtype = header.get_data_dtype() if header is not None else None
        save_image(vol, target, affine, header, dtype)
    elif vol.ndim == 4:
        arr = np.moveaxis(vol, 0, -1)  # NIfTI keeps channels last
        hdr = nib.Nifti1Header() if header is None else header.copy()
        hdr.set_data_dtype(arr.dtype)
        hdr.set_slope_inter(1.0, 0.0)
        save_nifti_atomic(nib.Nifti1Image(arr, affine, hdr), target)
    else:
        raise LesionMixError(
            f"Cannot write '{os.fspath(target)}': a {vol.ndim}D layer is not a 3D or 4D volume."
        )
    return [os.fspath(target)]


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers (3D)."""
    target = _target(path)
    vol, affine, header = restore_geometry(data, meta)
    if vol.ndim != 3:
        raise LesionMixError(f"Cannot write '{os.fspath(target)}': a label map must be 3D, got {vol.ndim}D.")
    save_label(vol, target, affine, header)
    return [os.fspath(target)]
