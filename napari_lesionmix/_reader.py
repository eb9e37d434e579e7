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

import base64
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import NIFTI_SUFFIXES, as_label_array

#: Axis codes of the layer's data axes (see the module docstring).
DISPLAY_AXCODES = ("S", "P", "L")
#: File-name endings that mark a label map.
LABEL_NAME_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "_brainmask", "_brain")
#: An integer volume with at most this many distinct values is read as labels.
MAX_LABEL_VALUES = 32
#: Key of our entry in ``layer.metadata``.
META_KEY = "lesionmix"


class DisplayOrientation:
    """Permutation and flips between a file's voxel order and the display order.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-RAS affine of the file.
    shape : sequence of 3 ints
        Spatial shape in the file's voxel order.

    Attributes
    ----------
    transform : ndarray, shape (3, 2)
        nibabel orientation transform from file order to display order.
    display_shape : tuple of 3 ints
    display_affine : ndarray, shape (4, 4)
        Voxel-to-RAS affine of the reoriented array.
    """

    def __init__(self, affine: np.ndarray, shape: Sequence[int]):
        self.affine = np.asarray(affine, dtype=float)
        self.shape = tuple(int(s) for s in shape[:3])
        start = nio.io_orientation(self.affine)
        self.transform = nio.ornt_transform(start, nio.axcodes2ornt(DISPLAY_AXCODES))
        self.inverse = nio.ornt_transform(nio.axcodes2ornt(DISPLAY_AXCODES), start)
        self.display_affine = self.affine @ nio.inv_ornt_aff(self.transform, self.shape)
        self.display_shape = tuple(
            int(self.shape[int(np.where(self.transform[:, 0] == d)[0][0])]) for d in range(3)
        )

    # -- arrays ---------------------------------------------------------------
    def to_display(self, data: np.ndarray) -> np.ndarray:
        """A view of a 3D array (or ``(C, I, J, K)``) in display order; no copy."""
        data = np.asarray(data)
        if data.ndim == 4:  # leading channel axis
            return _apply_lead(data, self.transform)
        return nio.apply_orientation(data, self.transform)

    def to_original(self, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_display`."""
        data = np.asarray(data)
        if data.ndim == 4:
            return _apply_lead(data, self.inverse)
        return nio.apply_orientation(data, self.inverse)

    def display_index(self, ijk: Sequence[float]) -> tuple[float, float, float]:
        """File voxel index -> display voxel index."""
        out = [0.0, 0.0, 0.0]
        for a, (d, flip) in enumerate(self.transform):
            v = float(ijk[a])
            out[int(d)] = (self.shape[a] - 1 - v) if flip < 0 else v
        return tuple(out)  # type: ignore[return-value]

    def original_index(self, zyx: Sequence[float]) -> tuple[float, float, float]:
        """Display voxel index -> file voxel index."""
        out = [0.0, 0.0, 0.0]
        for a, (d, flip) in enumerate(self.transform):
            v = float(zyx[int(d)])
            out[a] = (self.shape[a] - 1 - v) if flip < 0 else v
        return tuple(out)  # type: ignore[return-value]

    # -- napari geometry ------------------------------------------------------
    @property
    def scale(self) -> tuple[float, float, float]:
        """Voxel size in mm along the display axes."""
        return tuple(float(s) for s in np.sqrt((self.display_affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def translate(self) -> tuple[float, float, float]:
        """World position of display voxel 0 in LPS mm, ``(z, y, x)`` order."""
        x, y, z = self.display_affine[:3, 3]
        return float(z), float(-y), float(-x)


def _apply_lead(data: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``apply_orientation`` on the last three axes of a ``(C, I, J, K)`` array (a view)."""
    moved = np.moveaxis(data, 0, -1)  # nibabel keeps trailing axes untouched
    return np.moveaxis(nio.apply_orientation(moved, transform), -1, 0)


def affine_from_layer_geometry(scale: Sequence[float], translate: Sequence[float]) -> np.ndarray:
    """RAS affine of display-order data placed at ``scale``/``translate`` (LPS, z-y-x).

    Used for layers that did not come from our reader (e.g. a Labels layer the
    user painted): display axis 0 points S, 1 points P, 2 points L.
    """
    s = [float(v) for v in scale][-3:]
    t = [float(v) for v in translate][-3:]
    aff = np.zeros((4, 4))
    aff[2, 0] = s[0]
    aff[1, 1] = -s[1]
    aff[0, 2] = -s[2]
    aff[:3, 3] = (-t[2], -t[1], t[0])
    aff[3, 3] = 1.0
    return aff


# -- metadata -------------------------------------------------------------------
def header_to_text(header: nib.Nifti1Header) -> str:
    """The 348-byte NIfTI-1 header (or 540-byte NIfTI-2) as base64 text (JSON-safe)."""
    return base64.b64encode(header.binaryblock).decode("ascii")


def header_from_text(text: str) -> nib.Nifti1Header:
    raw = base64.b64decode(text)
    cls = nib.Nifti2Header if len(raw) == 540 else nib.Nifti1Header
    return cls(binaryblock=raw, check=False)


def geometry_metadata(affine: np.ndarray, header: nib.Nifti1Header | None, shape: Sequence[int],
                      source: str | None = None, kind: str = "image") -> dict[str, Any]:
    """The serialisable ``layer.metadata["lesionmix"]`` entry the writer restores from."""
    hdr = header if header is not None else nib.Nifti1Header()
    return {
        "affine": np.asarray(affine, dtype=float).tolist(),
        "header": header_to_text(hdr),
        "shape": [int(s) for s in shape[:3]],
        "display_axcodes": list(DISPLAY_AXCODES),
        "source": source,
        "kind": kind,
    }


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
