"""The lesion likelihood map of LesionMix: where pasted lesions may go.

LesionMix (Basaran et al., 2023, Sec. 2) places each augmented lesion "at a
location sampled from a spatial heatmap, termed the lesion likelihood map",
obtained by summing the training lesion labels and normalising to
probabilities, restricted to the brain (or organ). Here:

    L(x) = B(x) * (G_sigma * sum_n 1[Y_n(x) != 0])(x) / Z

with ``B`` a brain mask, ``G_sigma`` an optional Gaussian (``sigma_mm``, 0 =
none, the paper's plain sum) and ``Z`` the normaliser making ``sum_x L = 1``.
All cases must share one grid (a registered dataset, e.g. MNI space).

Choices where the paper is silent: without an explicit ``brain_mask``, ``B`` is
the union of the cases' brain masks when the dataset has them (lesions lie in
the brain, so the union loses nothing), and everything otherwise;
``sigma_mm`` defaults to 0.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import (
    AFFINE_TOLERANCE_MM,
    Case,
    load_image,
    save_image,
    voxel_spacing,
)


@dataclass(eq=False)
class LikelihoodMap:
    """A normalised lesion likelihood map on a grid, with cached samplers.

    Attributes
    ----------
    values : ndarray, shape (I, J, K), float32
        Non-negative, sums to 1.
    affine : ndarray, shape (4, 4) or None
        The grid's voxel-to-world transform.
    """

    values: np.ndarray
    affine: np.ndarray | None = None
    _samplers: dict = field(default_factory=dict, repr=False)

    #: How many restricted samplers (one per brain mask) are kept.
    CACHE_SIZE: ClassVar[int] = 4

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.values.shape)  # type: ignore[return-value]

    def restricted(self, mask: np.ndarray | None) -> LikelihoodMap:
        """The map times a mask (e.g. the host's brain mask), renormalised (for display)."""
        if mask is None:
            return self
        mask = self._check_mask(mask)
        return LikelihoodMap(normalise(np.where(mask, self.values, 0), "The likelihood map inside the brain mask"), self.affine)

    def cdf(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(flat indices of non-zero voxels, cumulative probabilities)`` of the map times ``mask``.

        Computed once per mask (cached by the mask's content, a few masks at a
        time) and only over the map's non-zero voxels, so restricting a 1 mm map
        to each host's brain costs milliseconds after the first time.
        """
        key = None
        if mask is not None:
            mask = self._check_mask(mask)
            key = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).hexdigest()
        if key not in self._samplers:
            if None not in self._samplers:
                flat = self.values.ravel()
                idx = np.flatnonzero(flat)
                self._samplers[None] = (idx, _cumulative(flat[idx]))
            if key is not None:
                idx_all = self._samplers[None][0]
                idx = idx_all[mask.ravel()[idx_all]]
                if idx.size == 0:
                    raise LesionMixError("The likelihood map is zero everywhere inside the brain mask; "
                                         "no insertion position can be drawn.")
                if len(self._samplers) > self.CACHE_SIZE:
                    self._samplers.pop(next(k for k in self._samplers if k is not None))
                self._samplers[key] = (idx, _cumulative(self.values.ravel()[idx]))
        return self._samplers[key]

    def _check_mask(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, bool)
        if mask.shape != self.shape:
            raise LesionMixError(
                f"The brain mask has shape {mask.shape} but the likelihood map has {self.shape}."
            )
        return mask


def _cumulative(weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(weights, dtype=np.float64)
    if cum.size == 0 or cum[-1] <= 0:
        raise LesionMixError("The likelihood map is zero everywhere; no insertion position can be drawn.")
    return cum / cum[-1]


def normalise(values: np.ndarray, what: str = "The likelihood map") -> np.ndarray:
    """Scale a non-negative map to sum 1 (float32); error if it is empty or negative."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all() or (values.size and values.min() < 0):
        raise LesionMixError(f"{what} has negative or non-finite values; it must be a non-negative map.")
    total = values.sum()
    if total <= 0:
        raise LesionMixError(f"{what} is zero everywhere; no insertion position can be drawn.")
    return (values / total).astype(np.float32)


def likelihood_map(
    source,
    brain_mask: np.ndarray | None = None,
    sigma_mm: float = 0.0,
    spacing: Sequence[float] | None = None,
    use_dataset_brain_masks: bool = True,
    bank=None,
) -> LikelihoodMap:
    """The normalised voxel-wise sum of a dataset's lesion masks.

    Parameters
    ----------
    source : Dataset, dataset folder, or sequence of label arrays / Cases
        The training labels, all on one grid.
    brain_mask : ndarray of bool, optional
        Restrict the map to this mask. If omitted and ``source`` is a dataset
        whose cases have brain masks, their union is used.
    sigma_mm : float
        Standard deviation of an optional Gaussian smoothing, in mm (0 = none).
    spacing : 3 floats, optional
        Voxel size in mm, needed for ``sigma_mm > 0`` when ``source`` is plain arrays.
    use_dataset_brain_masks : bool
        Use the dataset's brain masks when ``brain_mask`` is not given.
    bank : LesionBank, optional
        A bank over ``source``'s cases (every component kept): the labels are
        summed from its lesion masks, which hold every label voxel once, instead
        of reading the label files again. The same map.

    Returns
    -------
    LikelihoodMap
    """
    if not np.isfinite(sigma_mm) or sigma_mm < 0:
        raise LesionMixError(f"Likelihood smoothing sigma must be >= 0 mm, got {sigma_mm}.")
    want_brain = use_dataset_brain_masks and brain_mask is None
    summed = _accumulate_bank(bank, source, want_brain) if bank is not None else None
    acc, affine, sp, union = summed if summed is not None else _accumulate(source, want_brain)
    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
    if sigma_mm > 0:
        if sp is None:
            raise LesionMixError("Smoothing the likelihood map needs the voxel spacing (pass spacing=).")
        extent = max(n * s for n, s in zip(acc.shape, sp, strict=True))
        if sigma_mm > extent:
            # The kernel would dwarf the volume (and its buffers the memory): the map would be flat.
            raise LesionMixError(
                f"Likelihood smoothing sigma {sigma_mm:g} mm exceeds the volume's extent ({extent:.0f} mm); "
                f"use at most {extent:.0f} mm."
            )
        acc = ndi.gaussian_filter(acc, [sigma_mm / s for s in sp], mode="constant")
    mask = brain_mask if brain_mask is not None else union
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != acc.shape:
            raise LesionMixError(f"The brain mask has shape {mask.shape} but the labels have {acc.shape}.")
        acc = np.where(mask, acc, 0.0)
    return LikelihoodMap(normalise(acc, "The lesion likelihood map (sum of the dataset's labels)"), affine)


def _accumulate(source, want_brain: bool):
    """Sum of binary lesion masks; also the affine, spacing and union of brain masks when known."""
    from napari_lesionmix.io.dataset import Dataset, discover_dataset
    from napari_lesionmix.io.nifti import load_label
    from napari_lesionmix.io.threads import map_in_threads

    if isinstance(source, (str, os.PathLike)):
        source = discover_dataset(source)
    if isinstance(source, Dataset):
        items = source.cases
    else:
        items = list(source)
        if not items:
            raise LesionMixError("The likelihood map needs at least one label map; none were given.")
    def read(rec):
        lab, img = load_label(rec.label_path)
        return lab, np.asarray(img.affine, float), rec.load_brain_mask() if want_brain else None

    # A dataset's files are read in a few threads, and summed here in case order.
    files = map_in_threads(read, items) if isinstance(source, Dataset) else None
    grid = _Grid()
    with closing(files) if files is not None else nullcontext():  # an error stops the reads
        for item in items:
            brain = None
            if files is not None:
                lab, aff, brain = next(files)
                name = item.label_path
            elif isinstance(item, Case):
                if item.label is None:
                    raise LesionMixError(f"Case '{item.case_id}' has no label map for the likelihood map.")
                lab, aff, name = item.label, item.affine, item.case_id
            else:
                lab, aff, name = np.asarray(item), None, f"label #{len(items)}"
            grid.add(name, lab.shape, aff, brain)
            grid.acc += lab != 0
    return grid.result()


class _Grid:
    """The running sum of :func:`_accumulate`, its checks that every label shares the first's grid, and the
    union of the brain masks."""

    def __init__(self):
        self.acc = self.affine = self.union = self.first = None

    def add(self, name, shape, aff, brain) -> None:
        if len(shape) != 3:
            raise LesionMixError(f"Label '{name}' is {len(shape)}D; the likelihood map needs 3D labels.")
        if self.acc is None:
            self.acc = np.zeros(shape, np.float64)
            self.affine, self.first = aff, name
        elif tuple(shape) != self.acc.shape:
            raise LesionMixError(
                f"Label '{name}' has shape {tuple(shape)} but '{self.first}' has {self.acc.shape}; the likelihood "
                "map needs every case on one grid."
            )
        elif aff is not None and self.affine is not None and np.max(np.abs(aff - self.affine)) > AFFINE_TOLERANCE_MM:
            raise LesionMixError(
                f"Label '{name}' and '{self.first}' have different affines; the likelihood map needs every "
                "case on one grid."
            )
        if brain is not None:
            if brain.shape != self.acc.shape:
                raise LesionMixError(f"The brain mask of '{name}' has shape {brain.shape}, not {self.acc.shape}.")
            self.union = brain if self.union is None else (self.union | brain)

    def result(self):
        sp = voxel_spacing(self.affine) if self.affine is not None else None
        return self.acc, self.affine, sp, self.union


def _accumulate_bank(bank, source, want_brain: bool):
    """:func:`_accumulate` of a dataset from a bank's lesion masks, or ``None`` where the bank cannot give it.

    Every label voxel lies in exactly one lesion of its case (components are
    disjoint and, with ``min_voxels`` 1, all kept), so adding each lesion's mask
    on its crop adds ``label != 0``; the sums are whole numbers, exact in any
    order. The label files' shapes and affines come from the bank too, so the
    checks, and their messages, are those of reading the files.
    """
    from napari_lesionmix.io.dataset import Dataset
    from napari_lesionmix.io.threads import map_in_threads

    if not isinstance(source, Dataset) or bank.min_voxels != 1 or \
            any(rec.case_id not in bank for rec in source.cases) or not source.cases:
        return None
    by_case = bank.lesions_of([rec.case_id for rec in source.cases])  # read once, shared with the draws
    grids = [bank.label_grid(rec.case_id) for rec in source.cases]
    if any(g is None for g in grids):
        return None
    brains = map_in_threads(lambda rec: rec.load_brain_mask(), source.cases) if want_brain else None
    grid = _Grid()
    with closing(brains) if brains is not None else nullcontext():
        for rec, (shape, aff) in zip(source.cases, grids, strict=True):
            grid.add(rec.label_path, shape, aff, next(brains) if brains is not None else None)
            for les in by_case[rec.case_id]:
                grid.acc[les.box] += les.mask
    return grid.result()


def sample_positions(
    rng: np.random.Generator,
    likelihood: LikelihoodMap | np.ndarray,
    n: int = 1,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n`` voxel positions with probability proportional to the map (times ``mask``).

    Inverse-CDF sampling over the non-zero voxels (one ``searchsorted``); the
    CDF of a :class:`LikelihoodMap` is cached per mask, so repeated draws are cheap.

    Returns
    -------
    ndarray, shape (n, 3), int64
        Voxel indices ``(i, j, k)``.
    """
    if not isinstance(likelihood, LikelihoodMap):
        likelihood = LikelihoodMap(normalise(likelihood))
    return positions_from_cdf(rng, likelihood.cdf(mask), likelihood.shape, n)


def positions_from_cdf(rng: np.random.Generator, cdf: tuple[np.ndarray, np.ndarray], shape, n: int = 1) -> np.ndarray:
    """Inverse-CDF draw of ``n`` voxel positions from a :meth:`LikelihoodMap.cdf` result."""
    idx, cum = cdf
    u = rng.random(int(n))
    k = np.minimum(np.searchsorted(cum, u, side="right"), idx.size - 1)
    return np.stack(np.unravel_index(idx[k], shape), axis=1).astype(np.int64)


def save_likelihood(lmap: LikelihoodMap, path: str | os.PathLike, affine: np.ndarray | None = None, header=None):
    """Write the map as a float32 NIfTI (atomic: a failed write leaves any old file intact)."""
    aff = affine if affine is not None else lmap.affine
    if aff is None:
        raise LesionMixError(f"Cannot save the likelihood map to '{os.fspath(path)}' without an affine.")
    return save_image(lmap.values, path, aff, header)


def load_likelihood(path: str | os.PathLike) -> LikelihoodMap:
    """Read a likelihood map written by :func:`save_likelihood` (or any non-negative 3D map; renormalised)."""
    image, img = load_image(path)
    if image.shape[0] != 1:
        raise LesionMixError(f"Likelihood map '{os.fspath(path)}' has {image.shape[0]} volumes; expected one 3D map.")
    return LikelihoodMap(normalise(image[0], f"Likelihood map '{os.fspath(path)}'"), np.asarray(img.affine, float))
