"""Self-supervised training pairs for ARHNet (Sec. 2.1): real scans with perturbed lesions.

Each case is scaled to [0, 1] (min-max per channel over the whole volume, the
normalisation recorded in every checkpoint and reused at inference); a patch
is cut around a lesion and its foreground perturbed by Eq. 1,

    I~ = [(1 + alpha) I + lambda] * M + I * (1 - M),  alpha, lambda ~ U(-0.3, 0.3),

so that ``(I~, M) -> I`` is a training pair. NumPy only; every random draw
comes from the generator passed in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesionmix.errors import LesionMixError

NORMALISATION = {"method": "minmax", "scope": "per image and channel, whole volume"}


def minmax_scale(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale each channel of a ``(C, ...)`` image to [0, 1]; returns ``(scaled, lo, hi)``.

    ``lo`` and ``hi`` have shape ``(C,)``; a constant channel gets ``hi = lo + 1``.
    """
    image = np.asarray(image, dtype=np.float32)
    flat = image.reshape(image.shape[0], -1)
    lo = flat.min(axis=1).astype(np.float32)
    hi = flat.max(axis=1).astype(np.float32)
    hi = np.where(hi > lo, hi, lo + 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (image.ndim - 1)
    return ((image - lo.reshape(shape)) / (hi - lo).reshape(shape)).astype(np.float32), lo, hi


def perturb(image: np.ndarray, mask: np.ndarray, alpha: float, lam: float) -> np.ndarray:
    """Eq. 1: ``[(1 + alpha) I + lambda] * M + I * (1 - M)`` for ``image`` (C, ...) and ``mask`` (...)."""
    m = np.asarray(mask, dtype=np.float32)[None]
    return (((1.0 + alpha) * image + lam) * m + image * (1.0 - m)).astype(np.float32)


def sample_perturbation(rng: np.random.Generator, alpha_range: float = 0.3, lam_range: float = 0.3) -> tuple[float, float]:
    """Draw ``(alpha, lambda)`` of Eq. 1 from ``U(-alpha_range, alpha_range)`` and ``U(-lam_range, lam_range)``."""
    return float(rng.uniform(-alpha_range, alpha_range)), float(rng.uniform(-lam_range, lam_range))


@dataclass
class TrainingCase:
    """One case in memory: the scaled image (C, I, J, K), its lesion mask and lesion voxel list."""

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    lesion_voxels: np.ndarray

    @classmethod
    def from_arrays(cls, case_id: str, image: np.ndarray, label: np.ndarray) -> TrainingCase:
        scaled, _, _ = minmax_scale(image)
        mask = np.asarray(label) > 0
        return cls(case_id, scaled, mask, np.argwhere(mask).astype(np.int32))


def load_training_cases(dataset: str | os.PathLike | Sequence, log=None) -> list[TrainingCase]:
    """Load every labelled case with at least one lesion voxel from a dataset folder.

    ``dataset`` is a folder (any layout :func:`~napari_lesionmix.io.dataset.discover_dataset`
    knows), or a list of :class:`~napari_lesionmix.io.nifti.Case` objects.
    Cases without lesions are skipped (reported through ``log``).
    """
    from napari_lesionmix.io.dataset import discover_dataset

    if isinstance(dataset, (str, os.PathLike)):
        records = discover_dataset(dataset).cases
        cases = (r.load() for r in records)
        where = os.fspath(dataset)
    else:
        cases = iter(dataset)
        where = "the given cases"
    out: list[TrainingCase] = []
    n_channels = None
    for case in cases:
        if case.label is None or not np.any(case.label > 0):
            if log:
                log(f"skipping case '{case.case_id}': no lesion voxels")
            continue
        if n_channels is not None and case.n_channels != n_channels:
            raise LesionMixError(
                f"Case '{case.case_id}' has {case.n_channels} channel(s) but earlier cases of {where} have {n_channels}."
            )
        n_channels = case.n_channels
        out.append(TrainingCase.from_arrays(case.case_id, case.image, case.label))
    if not out:
        raise LesionMixError(f"No case with a non-empty lesion label was found in {where}.")
    return out


def split_cases(case_ids: Sequence[str], val_cases: Sequence[str] | None, n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """Train/validation split by case id (never by patch).

    Explicit ``val_cases`` win; otherwise ``n_val`` ids drawn with ``seed``.
    At least one case always stays for training.
    """
    ids = list(case_ids)
    if val_cases is not None:
        missing = [c for c in val_cases if c not in ids]
        if missing:
            raise LesionMixError(f"Validation case '{missing[0]}' is not in the dataset.")
        val = [c for c in ids if c in set(val_cases)]
    else:
        k = min(max(int(n_val), 0), len(ids) - 1)
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2**20,)))
        picked = set(rng.choice(len(ids), size=k, replace=False).tolist()) if k else set()
        val = [c for i, c in enumerate(ids) if i in picked]
    train = [c for c in ids if c not in set(val)]
    if not train:
        raise LesionMixError("Every case is held out for validation; at least one must remain for training.")
    return train, val


def patch_origin(rng: np.random.Generator, case: TrainingCase, patch_size: int) -> np.ndarray:
    """Corner of a random patch containing a random lesion voxel, not always at its centre.

    The voxel lies in the central half of the patch (uniform jitter of
    +/- patch/4), so lesions are seen with varied amounts of context.
    """
    centre = case.lesion_voxels[rng.integers(len(case.lesion_voxels))]
    jitter = rng.integers(-(patch_size // 4), patch_size // 4 + 1, size=3)
    return centre + jitter - patch_size // 2


def crop(array: np.ndarray, origin: Sequence[int], size: int) -> np.ndarray:
    """Crop a cube of side ``size`` at ``origin`` from the last three axes, edge-padding outside."""
    spatial = array.shape[-3:]
    lo = [int(o) for o in origin]
    hi = [o + size for o in lo]
    src = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, spatial, strict=True))
    pad = [(max(-a, 0), max(b - n, 0)) for a, b, n in zip(lo, hi, spatial, strict=True)]
    part = array[(Ellipsis, *src)]
    if any(p != (0, 0) for p in pad):
        part = np.pad(part, [(0, 0)] * (array.ndim - 3) + pad, mode="edge")
    return part


def make_pair(rng: np.random.Generator, case: TrainingCase, patch_size: int,
              alpha_range: float = 0.3, lam_range: float = 0.3) -> dict[str, np.ndarray | float]:
    """One training pair: ``{"real", "composite", "mask", "alpha", "lam", "origin"}`` (patch arrays)."""
    origin = patch_origin(rng, case, patch_size)
    real = crop(case.image, origin, patch_size)
    mask = crop(case.mask, origin, patch_size).astype(np.float32)
    alpha, lam = sample_perturbation(rng, alpha_range, lam_range)
    return {"real": real, "composite": perturb(real, mask, alpha, lam), "mask": mask[None],
            "alpha": alpha, "lam": lam, "origin": origin}


def make_batch(rng: np.random.Generator, cases: Sequence[TrainingCase], n: int, patch_size: int,
               alpha_range: float = 0.3, lam_range: float = 0.3) -> dict[str, np.ndarray]:
    """``n`` pairs from random cases, stacked: arrays of shape (n, C or 1, P, P, P)."""
    pairs = [make_pair(rng, cases[int(rng.integers(len(cases)))], patch_size, alpha_range, lam_range)
             for _ in range(n)]
    return {k: np.stack([p[k] for p in pairs]) for k in ("real", "composite", "mask")}
