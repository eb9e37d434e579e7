"""The QA contrast window: from brain voxels, wide enough for the lesions of host and donor."""

from __future__ import annotations

import numpy as np

from napari_lesionmix.io.display import brain_window


def _head(rng, lesion_value: float):
    """84 % background (0), brain around 100, a bright lesion: like a 1 mm FLAIR."""
    img = np.zeros((40, 40, 40), np.float32)
    brain = np.zeros_like(img, bool)
    brain[10:30, 10:30, 8:32] = True
    img[brain] = rng.normal(100, 10, brain.sum())
    label = np.zeros(img.shape, np.uint8)
    label[18:22, 18:22, 18:22] = 1
    img[label != 0] = rng.normal(lesion_value, 15, int(label.sum()))
    return img, label, brain


def test_window_holds_the_lesions_of_host_and_donor():
    rng = np.random.default_rng(0)
    h_img, h_lab, _ = _head(rng, 160.0)
    d_img, d_lab, _ = _head(rng, 230.0)  # a brighter donor: its lesions must fit too
    whole = np.percentile(h_img, (1.0, 99.5))  # the old window: clips the lesions
    assert (h_img[h_lab != 0] > whole[1]).mean() > 0.5
    lo, hi = brain_window([h_img, d_img], [h_lab, d_lab])
    for img, lab in ((h_img, h_lab), (d_img, d_lab)):
        inside = (img[lab != 0] >= lo) & (img[lab != 0] <= hi)
        assert inside.mean() >= 0.98  # the 0.5th-99.5th percentiles of 64 voxels
    assert lo > 30  # from brain voxels, not the background's zeros


def test_window_uses_a_brain_mask_and_survives_empty_input():
    rng = np.random.default_rng(1)
    img, lab, brain = _head(rng, 160.0)
    img[~brain] = 5.0  # non-zero background: only the mask tells brain apart
    lo, _ = brain_window([img], [lab], [brain])
    assert lo > 30
    assert brain_window([np.zeros((4, 4, 4))]) == (0.0, 1.0)
    assert brain_window([]) == (0.0, 1.0)


def test_case_ids_tell_patients_apart():
    from napari_lesionmix.io.nifti import case_id_from_path

    assert case_id_from_path("/d/patient07/flair.nii.gz") == "patient07"
    assert case_id_from_path("/d/patient19/FLAIR.nii") == "patient19"
    assert case_id_from_path("/d/patient19/t1_0000.nii.gz") == "patient19"
    assert case_id_from_path("/d/imagesTr/sub-01_0000.nii.gz") == "sub-01"
    assert case_id_from_path("flair.nii.gz") == "flair"  # no folder to tell it by
