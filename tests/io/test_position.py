"""The one position format: the file's voxel (i, j, k) and its mm through the affine."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.position import format_position, voxel_to_mm


def test_voxel_and_mm_through_the_affine():
    affine = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    assert voxel_to_mm((84, 124, 92), affine) == (6.0, -2.0, 112.0)
    assert (
        format_position((84, 124, 92), affine)
        == "voxel (i, j, k) = (84, 124, 92) · (x, y, z) = (6.0, -2.0, 112.0) mm"
    )
    # numpy integers and float indices print as voxel numbers; without an affine, the voxel only.
    assert format_position(np.array([1, 2, 3])) == "voxel (i, j, k) = (1, 2, 3)"
    assert format_position((1.0, 2.4, 2.6)) == "voxel (i, j, k) = (1, 2, 3)"


def test_three_indices_or_one_sentence():
    with pytest.raises(LesionMixError, match=r"three voxel indices \(i, j, k\), got \(1, 2\)"):
        format_position((1, 2))
