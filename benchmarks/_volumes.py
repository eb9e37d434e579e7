"""Benchmark inputs: shipped 2 mm subjects, and 1 mm 197x233x189 cases made from them.

The 1 mm cases upsample a 2 mm sample subject x2 (linear for the image,
nearest for labels and masks) and crop/pad to the MNI 1 mm grid size
197x233x189, so lesion shapes stay realistic (real MS and stroke-like
geometry, not random blobs).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.io.nifti import Case
from napari_lesionmix.sample_data import sample_data_dir, sample_dataset

ONE_MM_SHAPE = (197, 233, 189)


def subjects_of_kind(kind: str) -> list[str]:
    meta = json.loads((sample_data_dir() / "subjects.json").read_text())
    meta = meta.get("subjects", meta)
    return sorted(k for k, v in meta.items() if v.get("kind") == kind)


def _fit(arr: np.ndarray, shape) -> np.ndarray:
    out = np.zeros(shape, arr.dtype)
    src, dst = [], []
    for n, m in zip(arr.shape, shape, strict=True):
        if n >= m:
            a = (n - m) // 2
            src.append(slice(a, a + m))
            dst.append(slice(0, m))
        else:
            a = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(a, a + n))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def load_2mm(case_id: str) -> Case:
    return sample_dataset()[case_id].load()


def load_1mm(case_id: str) -> Case:
    """A sample subject upsampled to 1 mm on a 197x233x189 grid."""
    rec = sample_dataset()[case_id]
    case = rec.load()
    image = np.stack([_fit(ndi.zoom(ch, 2, order=1), ONE_MM_SHAPE) for ch in case.image]).astype(np.float32)
    label = _fit(ndi.zoom(case.label, 2, order=0), ONE_MM_SHAPE)
    affine = case.affine.copy()
    affine[:3, :3] /= 2
    return Case(image, label, affine, case.header.copy(), case_id=f"{case_id}-1mm")


def load_1mm_brain_mask(case_id: str) -> np.ndarray | None:
    mask = sample_dataset()[case_id].load_brain_mask()
    return None if mask is None else _fit(ndi.zoom(mask.astype(np.uint8), 2, order=0), ONE_MM_SHAPE) > 0


#: Grid of the real 1 mm MS scans the renovation was measured on.
MS_1MM_SHAPE = (182, 218, 182)


def ms_like_1mm(seed: int, load_ml: float, n_small: int) -> Case:
    """A 182x218x182 1 mm case with MS-like lesions: confluent periventricular ones and many small ones.

    The image is a smooth brain-shaped ellipsoid (FLAIR-like float
    intensities with a few bright outliers) with hyperintense lesions; the
    label holds two periventricular bands grown into confluent lesions until
    the load reaches ``load_ml`` mL (it overshoots by one growth step), and
    ``n_small`` lesions of 1-60 voxels scattered in the brain (some merge).
    """
    rng = np.random.default_rng(seed)
    shape = MS_1MM_SHAPE
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = np.array(shape) / 2
    r = np.array(shape) * np.array([0.42, 0.42, 0.40])
    brain = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
    label = np.zeros(shape, np.uint8)
    for x0 in (c[2] - 14, c[2] + 14):
        # A periventricular band: a curved tube along the lateral ventricle's wall.
        t = np.linspace(-1, 1, 80)
        for tz, ty in zip(c[0] + 18 * t, c[1] + 40 * np.sin(t * 1.3), strict=True):
            label[int(tz), int(ty), int(x0)] = 1
    small = 0
    while small < n_small:
        p = [int(rng.integers(s // 5, 4 * s // 5)) for s in shape]
        if not brain[tuple(p)]:
            continue
        rad = rng.uniform(0.5, 2.4)
        sl = tuple(slice(max(q - 3, 0), q + 4) for q in p)
        sub = np.indices([s.stop - s.start for s in sl]).astype(float)
        d2 = sum((sub[a] + sl[a].start - p[a]) ** 2 for a in range(3))
        label[sl][d2 <= rad * rad] = 1
        small += 1
    # Grow the confluent lesions (not the small ones) until the load is reached.
    grown = label.astype(bool)
    seedmask = np.zeros(shape, bool)
    seedmask[:, :, int(c[2] - 16): int(c[2] + 17)] = True
    it = 0
    while grown.sum() / 1000 < load_ml and it < 40:
        grown |= ndi.binary_dilation(grown & seedmask, iterations=1) & brain & (rng.random(shape) < 0.85)
        it += 1
    label = grown.astype(np.uint8)
    image = ndi.gaussian_filter(rng.normal(80.0, 6.0, shape), 2).astype(np.float32) * brain
    image[label > 0] *= 1.45
    out = rng.random(shape) < 1e-5
    image[out & brain] = 900.0  # bright outliers, as real FLAIR has
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -np.array(shape) / 2
    return Case(image[None], label, affine, nib.Nifti1Header(), case_id=f"ms1mm-{seed}")
