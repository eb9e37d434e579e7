"""Benchmark inputs: shipped 2 mm subjects, and 1 mm 197x233x189 cases made from them.

The 1 mm cases upsample a 2 mm sample subject x2 (linear for the image,
nearest for labels and masks) and crop/pad to the MNI 1 mm grid size
197x233x189, so lesion shapes stay realistic (real MS and stroke-like
geometry, not random blobs).
"""

from __future__ import annotations

import json

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
