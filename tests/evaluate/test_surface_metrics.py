"""HD95 and normalised surface distance of ``lesionmix evaluate`` (MONAI's metrics, with the voxel spacing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

pytest.importorskip("monai", reason="the boundary metrics are MONAI's (pip install 'napari-lesionmix[monai]')")

from napari_lesionmix.errors import LesionMixError  # noqa: E402
from napari_lesionmix.evaluate.metrics import METRICS, case_metrics, surface_metrics  # noqa: E402
from napari_lesionmix.evaluate.protocol import EvalConfig  # noqa: E402
from napari_lesionmix.evaluate.report import mean_ci  # noqa: E402


def cube(half: int, size: int = 21) -> np.ndarray:
    m = np.zeros((size,) * 3, bool)
    c = size // 2
    m[c - half:c + half + 1, c - half:c + half + 1, c - half:c + half + 1] = True
    return m


def brute_hd95(pred, ref, spacing) -> float:
    """The symmetric HD95 from scratch: boundary voxels (mask minus its erosion), all pairwise distances in mm."""
    def boundary(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing, float)

    d = cdist(boundary(pred), boundary(ref))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_identical_and_empty_masks():
    m = cube(3)
    assert surface_metrics(m, m) == (0.0, 1.0)
    assert surface_metrics(np.zeros_like(m), np.zeros_like(m)) == (0.0, 1.0)  # nothing to find, nothing claimed
    hd, nsd = surface_metrics(np.zeros_like(m), m)
    assert math.isnan(hd) and nsd == 0.0


def test_concentric_cubes_two_voxels_apart_scale_with_the_spacing():
    inner, outer = cube(3), cube(5)
    hd1, _ = surface_metrics(inner, outer, spacing=(1, 1, 1))
    hd2, _ = surface_metrics(inner, outer, spacing=(2, 2, 2))
    assert 2.0 <= hd1 <= 2 * math.sqrt(3) + 1e-6  # faces 2 voxels apart, corners 2*sqrt(3)
    assert hd2 == pytest.approx(2 * hd1)
    # Every boundary voxel is at least 2 mm from the other boundary and at most 2*sqrt(3) mm.
    assert surface_metrics(inner, outer, tolerance_mm=1.5)[1] == 0.0
    assert surface_metrics(inner, outer, tolerance_mm=3.5)[1] == 1.0
    assert 0.0 < surface_metrics(inner, outer, tolerance_mm=2.5)[1] < 1.0


def test_hd95_matches_a_brute_force_computation_on_anisotropic_blobs():
    rng = np.random.default_rng(0)
    ref = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((24, 20, 16)), 2) > 0.52)
    pred = ndimage.binary_dilation(ref, iterations=1) ^ (rng.random(ref.shape) > 0.97)
    spacing = (1.0, 1.5, 3.0)
    hd, nsd = surface_metrics(pred, ref, spacing=spacing)
    assert hd == pytest.approx(brute_hd95(pred, ref, spacing), rel=1e-4)
    assert 0.0 < nsd <= 1.0


def test_case_metrics_carry_hd95_and_nsd_and_the_summary_skips_undefined_ones():
    m = case_metrics(cube(3), cube(5), voxel_ml=0.001, spacing=(1, 1, 1), nsd_tolerance_mm=3.5)
    assert set(METRICS) <= set(m) and m["nsd"] == 1.0 and m["hd95_mm"] >= 2.0
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0
    assert all(math.isnan(x) for x in mean_ci([float("nan")]))


def test_a_bad_tolerance_is_one_sentence(tmp_path):
    with pytest.raises(LesionMixError, match="NSD tolerance must be > 0 mm"):
        EvalConfig(dataset=str(tmp_path), out=str(tmp_path / "r"), nsd_tolerance_mm=0)
    with pytest.raises(LesionMixError, match="NSD tolerance must be > 0 mm"):
        surface_metrics(cube(2), cube(3), tolerance_mm=-1)
