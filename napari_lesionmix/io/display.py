"""Display geometry of a NIfTI volume in napari, Qt-free: reorientation and the layer metadata.

The voxels are reoriented (nibabel's :func:`~nibabel.orientations.io_orientation`,
the closest canonical orientation, no resampling) so that a layer's data axes
are ``(S, P, L)``: anterior up, patient right on the left of the screen (the
radiological convention). :class:`DisplayOrientation` maps between file and
display order; :func:`geometry_metadata` is what the reader stores in
``layer.metadata["lesionmix"]`` and the writer and widgets read back. The npe2
reader (:mod:`napari_lesionmix._reader`) and the widgets both use this module.
:class:`Plane` and the plane sources are what the studio's triplanar preview
draws (Qt-free, so the live paths can be tested and benchmarked headless).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from napari_lesionmix.io.brain import foreground

#: Axis codes of the layer's data axes (see the module docstring).
DISPLAY_AXCODES = ("S", "P", "L")
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


# -- preview planes: what a triplanar view draws ------------------------------------
@dataclass
class Plane:
    """One 2D preview plane in display order (rows, cols), before the preview's flips."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray


class PlaneSource(Protocol):
    """What the triplanar preview draws: three planes through a display voxel.

    ``planes((z, y, x))`` returns ``{"axial": Plane, "coronal": Plane,
    "sagittal": Plane}`` with axial = ``vol[z]``, coronal = ``vol[:, y]``,
    sagittal = ``vol[:, :, x]`` of display-order volumes (see
    :class:`DisplayOrientation`). A widget that can compute just those
    planes cheaply (CarveMix while the slider moves) provides its own source;
    otherwise :class:`VolumePlanes` slices full volumes.
    """

    display_shape: tuple[int, int, int]

    def planes(self, zyx: tuple[int, int, int]) -> dict[str, Plane]: ...


def slice_planes(image: np.ndarray, label: np.ndarray, mask: np.ndarray, zyx) -> dict[str, Plane]:
    """Axial, coronal and sagittal planes of three display-order volumes."""
    z, y, x = (int(v) for v in zyx)
    return {
        "axial": Plane(image[z], label[z], mask[z]),
        "coronal": Plane(image[:, y], label[:, y], mask[:, y]),
        "sagittal": Plane(image[:, :, x], label[:, :, x], mask[:, :, x]),
    }


class VolumePlanes:
    """Plane source over full volumes in file order (e.g. a finished :class:`Synthetic`)."""

    def __init__(self, image: np.ndarray, label: np.ndarray, mask: np.ndarray,
                 orientation: DisplayOrientation, channel: int = 0):
        img = image[channel] if image.ndim == 4 else image
        self.image = orientation.to_display(img)
        self.label = orientation.to_display(label)
        self.mask = orientation.to_display(mask)
        self.display_shape = tuple(self.image.shape)

    def planes(self, zyx) -> dict[str, Plane]:
        return slice_planes(self.image, self.label, self.mask, zyx)


# -- contrast -----------------------------------------------------------------------
def brain_window(channels: Sequence[np.ndarray], labels: Sequence[np.ndarray | None] = (),
                 brain_masks: Sequence[np.ndarray | None] = (), percentiles: tuple[float, float] = (0.5, 99.5),
                 step: int = 2) -> tuple[float, float]:
    """A display window ``(lo, hi)`` for visual QA of lesion intensities.

    Whole-volume percentiles are mostly background (about 84 % of a 1 mm head volume), so they
    put the top of the window inside the lesions and clip them white. The window here comes from
    brain voxels only (the brain mask when given, else the voxels above the background,
    :func:`~napari_lesionmix.io.brain.foreground`) of every volume, and
    is then widened to hold the same percentiles of each volume's lesion voxels.

    Parameters
    ----------
    channels : sequence of ndarray
        One 3D image per volume (e.g. host and donor, first channel), all in the same units.
    labels, brain_masks : sequence of ndarray or None
        Per volume, aligned with ``channels`` (missing entries count as ``None``).
    percentiles : (float, float)
    step : int
        Brain voxels are subsampled by ``step`` along each axis (the window is a percentile;
        every 8th voxel of a 1 mm volume is plenty); lesion voxels are all used.

    Returns
    -------
    (float, float)
        With ``hi > lo``.
    """
    brain, lesion_lo, lesion_hi = [], [], []
    for k, ch in enumerate(channels):
        ch = np.asarray(ch)
        label = labels[k] if k < len(labels) else None
        mask = brain_masks[k] if k < len(brain_masks) else None
        sub = ch[::step, ::step, ::step]
        # Without a mask, the brain's threshold step (io.brain.foreground): "non-zero" is the whole
        # volume on a z-scored scan whose background is a negative constant.
        inside = np.asarray(mask)[::step, ::step, ::step] != 0 if mask is not None else foreground(sub)
        brain.append(sub[inside] if inside.any() else sub.ravel())
        if label is not None and np.any(label):
            values = ch[np.asarray(label) != 0]
            lo_k, hi_k = np.percentile(values, percentiles)
            lesion_lo.append(float(lo_k))
            lesion_hi.append(float(hi_k))
    if not brain:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(np.concatenate(brain), percentiles))
    lo = min([lo, *lesion_lo])
    hi = max([hi, *lesion_hi])
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


# -- layers back to volumes -----------------------------------------------------------
def layer_volume(data: np.ndarray, metadata: dict | None, scale: Sequence[float] = (1.0, 1.0, 1.0),
                 translate: Sequence[float] = (0.0, 0.0, 0.0)):
    """A layer's data in its file's voxel order, with the file's geometry.

    Layers our reader made carry the file's affine, header and path in ``metadata["lesionmix"]``
    (:func:`geometry_metadata`); for any other layer the geometry comes from its ``scale`` and
    ``translate`` (:func:`affine_from_layer_geometry`), with the data taken as display order.

    Returns
    -------
    data : ndarray
        3D, or ``(C, I, J, K)`` for channels-first data; a view where possible.
    affine : ndarray, shape (4, 4)
    header : nibabel header or None
    source : str or None
        The file the layer was read from.
    """
    data = np.asarray(data)
    meta = (metadata or {}).get(META_KEY)
    if meta:
        affine = np.asarray(meta["affine"], dtype=float)
        shape = meta["shape"]
        header = header_from_text(meta["header"]) if meta.get("header") else None
        source = meta.get("source")
    else:
        affine = affine_from_layer_geometry(scale, translate)
        header, source = None, None
        shape = data.shape[-3:]  # that affine's voxel axes are the display axes
    return DisplayOrientation(affine, shape).to_original(data), affine, header, source


def case_from_layers(image: dict, label: dict, case_id: str | None = None):
    """A :class:`~napari_lesionmix.io.nifti.Case` from two layers, without reading any file again.

    Parameters
    ----------
    image, label : dict
        ``{"data", "metadata", "scale", "translate", "name"}`` of an image layer and of its lesion
        label layer (plain values, so this stays Qt-free).
    case_id : str, optional
        Default: from the image's file (:func:`~napari_lesionmix.io.nifti.case_id_from_path`),
        else the layer's name.

    Raises
    ------
    LesionMixError
        Label and image not on one grid, or a label that is not an integer map.
    """
    from napari_lesionmix.io.nifti import Case, as_label_array, case_id_from_path, check_affines

    img, affine, header, source = layer_volume(image["data"], image.get("metadata"), image.get("scale", (1, 1, 1))[-3:],
                                               image.get("translate", (0, 0, 0))[-3:])
    lab, lab_affine, _, lab_source = layer_volume(label["data"], label.get("metadata"),
                                                  label.get("scale", (1, 1, 1))[-3:],
                                                  label.get("translate", (0, 0, 0))[-3:])
    name, lab_name = image.get("name", "image"), label.get("name", "label")
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3:
        img = img[None]
    if tuple(img.shape[1:]) != tuple(lab.shape):
        from napari_lesionmix.errors import LesionMixError

        raise LesionMixError(f"Layer '{lab_name}' has shape {tuple(lab.shape)} but layer '{name}' has "
                             f"{tuple(img.shape[1:])}; choose the label of that image.")
    check_affines(affine, lab_affine, name, lab_name)
    if case_id is None:
        case_id = case_id_from_path(source) if source else str(name)
    import nibabel as nib

    return Case(image=img, label=as_label_array(np.asarray(lab), where=f"Layer '{lab_name}'"), affine=affine,
                header=header if header is not None else nib.Nifti1Header(), case_id=case_id,
                image_paths=(source,) if source else (), label_path=lab_source)
