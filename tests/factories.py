"""Small synthetic cases for the tests: the one place their factories live (``from factories import ...``)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.io.nifti import Case

SHAPE = (24, 28, 20)
SPACING = (1.2, 1.0, 1.5)


def make_affine(spacing=SPACING, oblique: bool = False) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    if oblique:
        t = np.deg2rad(12.0)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = (-10.0, 12.5, -7.0)
    return aff


def blob_label(rng: np.random.Generator, shape=SHAPE, n: int = 3, radius: float = 3.0) -> np.ndarray:
    """``n`` roughly spherical lesions (label 1) at random places."""
    zz = np.indices(shape).astype(float)
    label = np.zeros(shape, np.uint8)
    for _ in range(n):
        c = [rng.uniform(radius + 1, s - radius - 1) for s in shape]
        r = rng.uniform(radius * 0.6, radius * 1.3)
        d2 = sum((zz[a] - c[a]) ** 2 for a in range(3))
        label[d2 <= r * r] = 1
    return label


def make_case(seed: int = 0, n_lesions: int = 3, n_channels: int = 1, case_id: str | None = None,
              shape=SHAPE, spacing=SPACING) -> Case:
    rng = np.random.default_rng(seed)
    label = blob_label(rng, shape, n_lesions)
    base = ndi.gaussian_filter(rng.normal(100, 20, (n_channels, *shape)), (0, 2, 2, 2)).astype(np.float32)
    image = base + 40.0 * label[None].astype(np.float32)
    return Case(image=image.astype(np.float32), label=label, affine=make_affine(spacing),
                header=nib.Nifti1Header(), case_id=case_id or f"case{seed}")


def write_case(case: Case, folder, name: str | None = None, label_suffix: str = "_seg") -> dict:
    """Write a case as ``NAME.nii.gz`` (or ``NAME_000c`` per channel) and ``NAME<suffix>.nii.gz``."""
    name = name or case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c, ch in enumerate(case.image):
        fname = f"{name}.nii.gz" if case.n_channels == 1 else f"{name}_{c:04d}.nii.gz"
        p = folder / fname
        nib.save(nib.Nifti1Image(ch, case.affine), p)
        paths.append(p)
    lp = folder / f"{name}{label_suffix}.nii.gz"
    nib.save(nib.Nifti1Image(case.label, case.affine), lp)
    return {"images": paths, "label": lp}
