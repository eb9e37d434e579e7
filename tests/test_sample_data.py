"""The shipped synthetic sample subjects: discovery, grid, lesion statistics, size budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_lesionmix.sample_data import sample_data_dir, sample_dataset

VOXEL_ML_TOL = 1e-3
STRUCT26 = np.ones((3, 3, 3), bool)


@pytest.fixture(scope="module")
def subjects():
    """Every subject loaded once: (record, case, brain mask, subjects.json entry)."""
    ds = sample_dataset()
    meta = json.loads((sample_data_dir() / "subjects.json").read_text())
    out = []
    for rec in ds.cases:
        out.append((rec, rec.load(), rec.load_brain_mask(), meta[rec.case_id]))
    return out


def _components(label: np.ndarray) -> tuple[np.ndarray, int]:
    return ndi.label(label, structure=STRUCT26)


def _voxel_ml(case) -> float:
    return float(np.prod(case.spacing)) / 1000.0


def test_discovers_8_to_10_subjects_with_brain_masks(subjects):
    assert 8 <= len(subjects) <= 10
    kinds = [m["kind"] for *_, m in subjects]
    assert set(kinds) == {"ms", "stroke"}
    for rec, case, brain, _ in subjects:
        assert rec.brain_mask_path is not None, rec.case_id
        assert brain is not None and brain.dtype == bool and brain.shape == case.shape
        assert case.n_channels == 1 and case.label is not None


def test_all_subjects_share_one_2mm_grid(subjects):
    _, ref, _, _ = subjects[0]
    assert all(n >= 80 for n in ref.shape)
    assert np.allclose(ref.spacing, 2.0)
    for _, case, _, _ in subjects[1:]:
        assert case.shape == ref.shape, case.case_id
        assert np.allclose(case.affine, ref.affine), case.case_id


def test_skull_stripped_and_lesions_inside_brain(subjects):
    for _, case, brain, _ in subjects:
        img = case.image[0]
        assert np.all(img[~brain] == 0), case.case_id
        assert np.all(img[brain] >= 0)
        les = case.label > 0
        assert set(np.unique(case.label)) == {0, 1}, case.case_id
        assert not np.any(les & ~brain), case.case_id
        # a real brain: 1.2-2.2 L at these deformations
        assert 1200 < brain.sum() * _voxel_ml(case) < 2200


def test_subjects_json_agrees_with_labels(subjects):
    for _, case, _, meta in subjects:
        les = case.label > 0
        _, n = _components(les)
        assert meta["n_components"] == n, case.case_id
        assert meta["lesion_load_ml"] == pytest.approx(
            les.sum() * _voxel_ml(case), abs=VOXEL_ML_TOL
        )


def test_ms_lesion_statistics(subjects):
    ms = [case for _, case, _, meta in subjects if meta["kind"] == "ms"]
    assert len(ms) >= 4
    for case in ms:
        les = case.label > 0
        _, n = _components(les)
        load = les.sum() * _voxel_ml(case)
        assert 15 <= n <= 150, (case.case_id, n)
        assert 0.3 <= load <= 50.0, (case.case_id, load)


def test_stroke_lesion_statistics(subjects):
    strokes = [(case, meta) for _, case, _, meta in subjects if meta["kind"] == "stroke"]
    assert len(strokes) >= 3
    for case, meta in strokes:
        les = case.label > 0
        _, n = _components(les)
        load = les.sum() * _voxel_ml(case)
        assert 1 <= n <= 3, (case.case_id, n)
        assert 5.0 <= load <= 150.0, (case.case_id, load)
        # one hemisphere only: world x (RAS) of every lesion voxel has one sign
        ijk = np.argwhere(les)
        x = ijk @ case.affine[0, :3] + case.affine[0, 3]
        side = "right" if np.all(x > 0) else "left" if np.all(x < 0) else "both"
        assert side == meta["hemisphere"], (case.case_id, side)


def _wm_like(img: np.ndarray, brain: np.ndarray, les: np.ndarray) -> float:
    """Median of the normal-appearing tissue in a 2-6 mm shell around the lesions.

    CSF (darker than half the brain median) is left out; what remains is mostly
    white matter with some grey matter, so the ratio reads a little low.
    """
    shell = ndi.binary_dilation(les, STRUCT26, iterations=3) & ~ndi.binary_dilation(les, STRUCT26)
    shell &= brain
    vals = img[shell]
    vals = vals[vals > 0.5 * np.median(img[brain])]
    return float(np.median(vals))


def test_lesions_are_hyperintense_with_plausible_contrast(subjects):
    for _, case, brain, meta in subjects:
        img = case.image[0]
        les = case.label > 0
        ratio = float(np.median(img[les])) / _wm_like(img, brain, les)
        lo, hi = (1.15, 1.6) if meta["kind"] == "ms" else (1.2, 1.9)
        assert lo <= ratio <= hi, (case.case_id, ratio)
        # FLAIR tissue order: CSF (darkest decile) well below the lesion-free brain median
        normal = img[brain & ~les]
        assert np.percentile(normal, 5) < 0.65 * np.median(normal), case.case_id
        # the generator's own WM reference agrees
        assert 1.25 <= meta["measured_lesion_wm_ratio"] <= 1.65, case.case_id


def test_flair_contrast_grey_brighter_than_white():
    """On the template grid, cortex (outer brain rim) is brighter than deep tissue around the ventricles."""
    ds = sample_dataset()
    rec = ds.cases[0]
    case, brain = rec.load(), rec.load_brain_mask()
    img = case.image[0]
    depth = ndi.distance_transform_edt(brain)
    normal = brain & (case.label == 0)
    rim = normal & (depth > 1) & (depth <= 3) & (img > 0.6 * np.median(img[brain]))
    deep = normal & (depth >= 12) & (img > 0.6 * np.median(img[brain]))
    assert np.median(img[rim]) > 1.04 * np.median(img[deep])


def test_sample_folder_under_5_mb():
    root = sample_data_dir()
    total = sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert total < 5 * 1024 * 1024, total
