"""The fair protocol and the metrics that cannot be gamed (small arrays, no training but one tiny run)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesionmix.evaluate.metrics import case_metrics, lesion_detection, lesions, match_lesions
from napari_lesionmix.evaluate.train import (
    Volume,
    best_threshold,
    block_mean,
    patch_batches,
    sample_plan,
    synthetic_share,
)

pytest.importorskip("monai", reason="lesionmix evaluate needs the monai extra")


def _two_lesions():
    ref = np.zeros((16, 16, 16), bool)
    ref[2:5, 2:5, 2:5] = True           # 27 voxels
    ref[2:5, 7:10, 2:5] = True          # 27 voxels, two voxels apart from the first
    return ref


def test_a_component_merging_two_lesions_matches_one_of_them():
    ref = _two_lesions()
    pred = np.zeros_like(ref)
    pred[2:5, 2:10, 2:5] = True          # one component covering both lesions and the gap between them
    m = case_metrics(pred, ref, voxel_ml=0.001)
    assert m["true_lesions"] == 2 and m["pred_lesions"] == 1
    assert m["lesion_recall"] == 0.5 and m["lesion_precision"] == 1.0
    assert m["lesion_f1"] == pytest.approx(2 / 3)
    assert m["overlap_f1"] == 1.0        # the any-overlap count calls it perfect


def test_a_whole_volume_prediction_does_not_score_f1_one():
    ref = _two_lesions()
    m = case_metrics(np.ones_like(ref), ref, voxel_ml=0.001)
    assert m["lesion_f1"] == 0.0 and m["lesion_recall"] == 0.0 and m["lesion_precision"] == 0.0
    assert m["overlap_f1"] == 1.0
    assert m["volume_ratio"] == pytest.approx(16**3 / 54)


def test_a_component_far_larger_than_its_lesion_is_a_false_positive_and_a_miss():
    ref = np.zeros((20, 20, 20), bool)
    ref[9:11, 9:11, 9:11] = True                         # 8 voxels
    big = np.zeros_like(ref)
    big[5:15, 5:15, 5:15] = True                         # 1000 voxels around it: IoU 0.008
    assert lesion_detection(big, ref) == (0.0, 0.0, 0.0)
    near = np.zeros_like(ref)
    near[9:12, 9:12, 9:11] = True                        # 18 voxels: IoU 8/18
    assert lesion_detection(near, ref) == (1.0, 1.0, 1.0)


def test_matching_is_one_to_one_and_maximises_the_overlap():
    ref = _two_lesions()
    pred = np.zeros_like(ref)
    pred[2:5, 2:5, 2:4] = True                            # half of lesion 1
    pred[2:5, 2:5, 4] = False
    pred[2:4, 7:10, 2:5] = True                           # most of lesion 2
    rl, nr = lesions(ref)
    pl, npred = lesions(pred)
    pairs = match_lesions(rl, nr, pl, npred)
    assert len(pairs) == 2 and len({a for a, _, _ in pairs}) == 2 and len({b for _, b, _ in pairs}) == 2
    assert match_lesions(rl, nr, pl, 0) == []


@pytest.mark.parametrize("share", [0.25, 0.5, 16 / 18])
def test_added_synthetic_patches_keep_every_real_patch(share):
    plan = sample_plan(3, iterations=40, batch=2, share=share, extra_iterations=True)
    assert int((~plan).sum()) == 80                           # exactly the real slots of "none"
    assert abs(plan.mean() - share) < 2 / plan.size + 1e-9     # the asked share, to a slot
    fixed = sample_plan(3, iterations=40, batch=2, share=share, extra_iterations=False)
    assert fixed.shape == (40, 2) and (~fixed).sum() < 80      # swapped in: real patches are lost
    assert not sample_plan(3, 40, 2, 0.0, True).any() and sample_plan(3, 40, 2, 0.0, True).shape == (40, 2)


def test_pooled_sampling_share_is_the_synthetic_cases_share():
    assert synthetic_share("pooled", 2, 16, 0.5) == pytest.approx(16 / 18)
    assert synthetic_share("pooled", 2, 2, 0.9) == 0.5
    assert synthetic_share("ratio", 2, 16, 0.25) == 0.25
    assert synthetic_share("ratio", 2, 0, 0.25) == 0.0


def _vol(rng, cid, value):
    lab = np.zeros((12, 12, 12), bool)
    lab[4:7, 4:7, 4:7] = True
    return Volume((rng.normal(size=(1, 12, 12, 12)) + value).astype(np.float32), lab, cid)


def test_the_real_patches_are_the_same_with_and_without_synthetic_data():
    rng = np.random.default_rng(0)
    real = [_vol(rng, "r0", 0.0), _vol(rng, "r1", 0.0)]
    synthetic = [_vol(rng, "s0", 100.0), _vol(rng, "s1", 100.0)]   # synthetic patches are easy to tell apart
    none = [img for imgs, _ in patch_batches(real, [], sample_plan(5, 10, 2, 0.0, True), 5, 8, 0.33)
            for img in imgs]
    plan = sample_plan(5, 10, 2, synthetic_share("pooled", 2, 2, 0.5), True)
    mixed = [img for imgs, _ in patch_batches(real, synthetic, plan, 5, 8, 0.33) for img in imgs]
    real_seen = [img for img in mixed if img.mean() < 50]
    assert len(real_seen) == len(none) == 20 and len(mixed) == 40
    for a, b in zip(real_seen, none, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_calibration_finds_the_threshold_of_a_shifted_map():
    lab = np.zeros((10, 10, 10), bool)
    lab[3:7, 3:7, 3:7] = True
    prob = np.where(lab, 0.32, 0.1).astype(np.float32)        # under-confident: nothing above 0.5
    t, d = best_threshold([prob], [lab])
    assert 0.1 <= t <= 0.3 and d == 1.0
    t, d = best_threshold([np.where(lab, 0.9, 0.1).astype(np.float32)], [lab])
    assert t == 0.5 and d == 1.0                               # ties go to 0.5


def test_block_mean_downsamples_images_and_keeps_half_filled_label_blocks():
    a = np.arange(4 * 4 * 5, dtype=np.float32).reshape(1, 4, 4, 5)
    b = block_mean(a, 2)
    assert b.shape == (1, 2, 2, 2) and b[0, 0, 0, 0] == pytest.approx(a[0, :2, :2, :2].mean())
    lab = np.zeros((4, 4, 4), bool)
    lab[:2, :2, :1] = True                                     # half of one block
    assert (block_mean(lab, 2) >= 0.5).sum() == 1
