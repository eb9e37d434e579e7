"""Shared fixtures: small synthetic cases written to disk, and the shipped sample data."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

# Torch and BLAS threads fight over the 2 cores of CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from napari_lesionmix.io.nifti import Case  # noqa: E402

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


@pytest.fixture
def host_case() -> Case:
    return make_case(seed=1, n_lesions=2, case_id="host")


@pytest.fixture
def donor_case() -> Case:
    return make_case(seed=2, n_lesions=4, case_id="donor")


@pytest.fixture
def pair_on_disk(tmp_path, host_case, donor_case):
    """Host and donor written as NIfTI files: {"host": {...}, "donor": {...}}."""
    return {
        "host": write_case(host_case, tmp_path / "in", "host"),
        "donor": write_case(donor_case, tmp_path / "in", "donor"),
    }


@pytest.fixture(scope="session")
def sample_dataset():
    """The shipped sample subjects (plain pairs layout)."""
    from napari_lesionmix.sample_data import sample_dataset as _sample

    return _sample()


def load_pair(qtbot, load, session, pair: dict | None = None, until=lambda: True, timeout: int = 20000) -> None:
    """Load a host/donor pair through the Load widget and wait until the session has it.

    ``pair`` is :func:`pair_on_disk`'s dict (typed into the file fields), or
    ``None`` for the shipped sample pair; ``until`` is any further condition
    to wait for (e.g. the CarveMix widget's first mix).
    """
    if pair is None:
        load.load_sample_pair()
    else:
        fill_pair(load, pair)
        load.load_files()
    qtbot.waitUntil(lambda: session.has_pair and not session.busy and until(), timeout=timeout)


def fill_pair(load, pair: dict) -> None:
    """Type a pair's file names (:func:`pair_on_disk`'s dict) into the Load widget's fields."""
    load.host_image.setText(str(pair["host"]["images"][0]))
    load.host_label.setText(str(pair["host"]["label"]))
    load.donor_image.setText(str(pair["donor"]["images"][0]))
    load.donor_label.setText(str(pair["donor"]["label"]))
