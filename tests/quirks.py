"""Real-world quirks applied to sample-data cases, for the tests that must run everywhere.

The sample data is kind: an exact-zero background, a brain mask with every case,
lesions that fit anywhere. Real scans are not (``../shared/realdata`` and
``design.md`` section 8). Each function takes a :class:`Case` and its true brain
mask and returns a new case with one quirk of real data; the tests then drop the
mask (the nnU-Net layout has none) and check that "brain" still means the brain.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.io.nifti import Case


def _with(case: Case, **kw) -> Case:
    return dataclasses.replace(case, **kw)


def ringing(case: Case, brain: np.ndarray) -> Case:
    """Skull-stripped FLAIR after resampling: exact-zero background, negative ringing around the brain.

    The voxels just outside the brain dip to -12 .. -20 (interpolation ringing,
    as measured on real 1 mm FLAIR): the minimum is no longer the background.
    """
    rng = np.random.default_rng(0)
    image = np.where(brain, case.image, 0.0).astype(np.float32)
    shell = ndi.binary_dilation(brain, iterations=2) & ~brain
    image[:, shell] = rng.uniform(-20.0, -12.0, int(shell.sum())).astype(np.float32)
    return _with(case, image=image, case_id=case.case_id + "-ringing")


def zscored(case: Case, brain: np.ndarray) -> Case:
    """A z-scored scan (BraTS): brain voxels on both sides of 0, the background a negative constant."""
    values = case.image[:, brain]
    mean, std = float(values.mean()), float(values.std())
    image = np.where(brain, (case.image - mean) / std, -mean / std).astype(np.float32)
    return _with(case, image=image, case_id=case.case_id + "-zscored")


def offset_background(case: Case, brain: np.ndarray, level: float = 30.0) -> Case:
    """A constant non-zero background with noise around it (an unmasked scan with a bias in its zero)."""
    rng = np.random.default_rng(1)
    noise = rng.normal(level, 3.0, case.image.shape).astype(np.float32)
    image = np.where(brain, case.image + level, noise).astype(np.float32)
    return _with(case, image=image, case_id=case.case_id + "-offset")


def bright_outliers(case: Case, brain: np.ndarray, n: int = 40, factor: float = 20.0) -> Case:
    """A few hot voxels at 20 times the brain's maximum (spikes, saturated vessels)."""
    rng = np.random.default_rng(2)
    image = case.image.copy()
    coords = np.argwhere(brain)[rng.choice(int(brain.sum()), n, replace=False)]
    image[:, coords[:, 0], coords[:, 1], coords[:, 2]] = factor * float(case.image.max())
    return _with(case, image=image, case_id=case.case_id + "-outliers")


def lps(case: Case, brain: np.ndarray) -> Case:
    """The same scan stored LPS (BraTS' orientation): the first two axes flipped in the affine."""
    affine = case.affine.copy()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = affine @ flip
    affine[:3, 3] = case.affine[:3, :3] @ (np.array(case.shape) - 1) * np.array([1, 1, 0]) + case.affine[:3, 3]
    return _with(case, affine=affine, case_id=case.case_id + "-lps")


def float_multilabel(case: Case, brain: np.ndarray) -> Case:
    """Float labels with several values (BraTS' 0-4): each lesion gets 1, 2 or 4."""
    comps, n = ndi.label(case.label != 0)
    values = np.array([0.0] + [(1.0, 2.0, 4.0)[k % 3] for k in range(n)], np.float32)
    return _with(case, label=values[comps], case_id=case.case_id + "-multilabel")


def anisotropic(case: Case, brain: np.ndarray) -> Case:
    """Thick-slice clinical acquisition: 0.47 x 0.47 x 7.5 mm voxels (every 4th slice kept, spacing set)."""
    keep = slice(None, None, 4)
    affine = np.diag([0.47, 0.47, 7.5, 1.0])
    label = case.label[:, :, keep] if case.label is not None else None
    return _with(case, image=np.ascontiguousarray(case.image[:, :, :, keep]), label=label, affine=affine,
                 case_id=case.case_id + "-aniso")


#: Every quirk, by name (the tests are parametrised over them).
QUIRKS = {f.__name__: f for f in (ringing, zscored, offset_background, bright_outliers, lps, float_multilabel,
                                  anisotropic)}
