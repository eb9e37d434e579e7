"""One way to print a position in a volume, for every face: the file's voxel index and its mm.

ITK-SNAP and 3D Slicer show one cursor position everywhere; the studio's preview caption, the
placement refusals of the core (which the CLI prints too) and the studio's messages all use
:func:`format_position`, so the voxel a user clicked reads the same in each of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_lesionmix.errors import LesionMixError

#: Separates the voxel index from the millimetres (a middle dot, as in the studio's caption).
SEPARATOR = " · "


def voxel_to_mm(ijk: Sequence[float], affine: np.ndarray) -> tuple[float, float, float]:
    """The scanner position (x, y, z) in mm of the file voxel index ``ijk`` through ``affine``."""
    a = np.asarray(affine, dtype=float)
    xyz = a[:3, :3] @ np.asarray(ijk, dtype=float)[:3] + a[:3, 3]
    return tuple(float(v) for v in xyz)  # type: ignore[return-value]


def format_position(ijk: Sequence[float], affine: np.ndarray | None = None) -> str:
    """``"voxel (i, j, k) = (84, 124, 92) · (x, y, z) = (-12.0, 30.5, 8.0) mm"``.

    Parameters
    ----------
    ijk : sequence of 3 numbers
        Voxel index in the file's array order (the NIfTI ``i, j, k`` order, as the core and
        ``Case.image[c]`` index it), not the studio's display order.
    affine : ndarray, shape (4, 4), optional
        The file's voxel-to-scanner affine; without it only the voxel index is printed.
    """
    if len(ijk) != 3:
        raise LesionMixError(f"A position needs three voxel indices (i, j, k), got {tuple(ijk)}.")
    idx = ", ".join(f"{int(round(float(v)))}" for v in ijk)
    text = f"voxel (i, j, k) = ({idx})"
    if affine is not None:
        mm = ", ".join(f"{v:.1f}" for v in voxel_to_mm(ijk, affine))
        text += f"{SEPARATOR}(x, y, z) = ({mm}) mm"
    return text
