"""npe2 reader: NIfTI files as napari Image and Labels layers, the right way round.

Display convention
------------------
The voxels are reoriented (nibabel's :func:`~nibabel.orientations.io_orientation`,
i.e. the closest canonical orientation, no resampling) so that the layer's
data axes are

``(S, P, L)``: axis 0 runs inferior -> superior (the slider walks through axial
slices), axis 1 anterior -> posterior (row 0 is anterior: **anterior up**),
axis 2 patient right -> left (radiological convention, as ITK-SNAP and most
clinical viewers: the patient's right is on the left of the screen).

With a positive ``scale`` (the voxel size in mm) and ``translate`` (the position
of voxel 0), napari's world coordinates are then the ITK/DICOM LPS patient
coordinates in ``(z, y, x)`` order. Only a permutation and flips are applied, so
2D slicing stays orthogonal and a round trip is lossless; for an oblique file the
rotation is dropped from the display (the layer shows the voxel grid) and kept,
with the full header, in ``layer.metadata["lesionmix"]``, which the writer uses
to restore the original voxel order, affine and header.

Integer label maps (file names ending in ``_seg``, ``_label``, ``_mask``,
``_brainmask`` or ``_brain``, or integer volumes with few distinct values) become
Labels layers; everything else an Image layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import (
    META_KEY,
    DisplayOrientation,
    geometry_metadata,
)
from napari_lesionmix.io.nifti import NIFTI_SUFFIXES, as_label_array

#: File-name endings that mark a label map.
LABEL_NAME_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "_brainmask", "_brain")
#: An integer volume with at most this many distinct values is read as labels.
MAX_LABEL_VALUES = 32


# -- reading ----------------------------------------------------------------------
def is_nifti(path: str | os.PathLike) -> bool:
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(NIFTI_SUFFIXES)


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suf in NIFTI_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def looks_like_labels(data: np.ndarray, name: str) -> bool:
    """Integer label map? Named like one, or integer with few distinct values."""
    if data.ndim != 3:
        return False
    integer = data.dtype.kind in "iub"
    if data.dtype.kind == "f" and name.lower().endswith(LABEL_NAME_SUFFIXES):
        # Float-stored masks are common; accept them when every value is a whole number.
        integer = bool(np.all(np.isfinite(data)) and np.all(data == np.round(data)))
    if not integer or (data.size and data.min() < 0):
        return False
    if name.lower().endswith(LABEL_NAME_SUFFIXES):
        return True
    # Cheap rejection on a strided subsample before the exact count.
    if np.unique(data.ravel()[:: max(1, data.size // 20000)]).size > MAX_LABEL_VALUES:
        return False
    return np.unique(data).size <= MAX_LABEL_VALUES


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any], str]:
    """One NIfTI file as napari layer data: ``(data, kwargs, layer_type)``."""
    p = Path(path)
    if not p.is_file():
        raise LesionMixError(f"NIfTI file '{os.fspath(p)}' does not exist.")
    try:
        img = nib.load(p)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds for a bad file
        raise LesionMixError(
            f"File '{os.fspath(p)}' could not be read as NIfTI ({type(exc).__name__}: {exc})."
        ) from None
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (3, 4):
        raise LesionMixError(f"File '{os.fspath(p)}' has shape {data.shape}; expected a 3D or 4D volume.")
    name = _stem(p)
    orient = DisplayOrientation(img.affine, data.shape[:3])
    kind = "labels" if looks_like_labels(data, name) else "image"
    if kind == "labels":
        data = as_label_array(data, where=f"Label file '{os.fspath(p)}'")
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)  # channels first: a slider, not a spatial axis
    if data.ndim == 3 and data.dtype.kind == "f" and not np.isfinite(data).all():
        raise LesionMixError(f"Image file '{os.fspath(p)}' contains NaN or infinite voxels.")
    display = np.ascontiguousarray(orient.to_display(data))
    meta = geometry_metadata(img.affine, img.header, orient.shape, os.fspath(p), kind)
    meta["channels_first"] = data.ndim == 4
    scale, translate = list(orient.scale), list(orient.translate)
    if data.ndim == 4:
        scale, translate = [1.0, *scale], [0.0, *translate]
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "metadata": {META_KEY: meta},
    }
    if kind == "image":
        kwargs["colormap"] = "gray"
    return display, kwargs, kind


def read_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple]:
    """Layer data tuples for one or more NIfTI files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [read_nifti(p) for p in paths]


def napari_get_reader(path: str | os.PathLike | list) -> Callable | None:
    """npe2 reader hook: a reader function for ``*.nii``/``*.nii.gz`` paths, else ``None``."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths or not all(is_nifti(p) for p in paths):
        return None
    return read_files
