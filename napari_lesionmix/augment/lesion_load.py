"""Lesion load: per-case loads in mL and the target-load distributions of LesionMix.

LesionMix (Basaran et al., 2023, Sec. 2) controls disease severity by drawing a
target lesion load from a load distribution ``P(v)`` named *low*, *medium*,
*high*, *uniform*, *Gaussian* or *real*, and then populating or inpainting
lesions until the load is reached. The paper names the distributions but not
their parameters; the choices made here (each a field of
:class:`LoadDistribution`, editable):

``low`` / ``medium`` / ``high``
    Uniform within the first / second / third tercile band of the dataset's
    per-case loads, ``[min, q1/3]``, ``[q1/3, q2/3]``, ``[q2/3, max]``.
``uniform``
    Uniform from the dataset's minimum to its maximum load.
``gaussian``
    Normal with the dataset's mean and standard deviation, truncated at 0
    (negative draws are redrawn).
``real``
    The empirical distribution: one of the dataset's per-case loads, each with
    probability ``1/n``.

Loads are in mL: the number of non-zero label voxels times the voxel volume.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesionmix.errors import LesionMixError

DISTRIBUTIONS = ("low", "medium", "high", "uniform", "gaussian", "real")


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL (spacing in mm; 1 mL = 1000 mm^3)."""
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def lesion_load_ml(label: np.ndarray, spacing: Sequence[float]) -> float:
    """Lesion load of one label map in mL: non-zero voxels times the voxel volume.

    Examples
    --------
    >>> lab = np.zeros((10, 10, 10), np.uint8); lab[:5, :2, :1] = 1
    >>> lesion_load_ml(lab, (2.0, 2.0, 2.0))
    0.08
    """
    return float(np.count_nonzero(label)) * voxel_volume_ml(spacing)


def dataset_loads(dataset, bank=None) -> dict[str, float]:
    """Per-case lesion loads (mL) of a :class:`~napari_lesionmix.io.dataset.Dataset`.

    Only the label files are read (in a few threads). Accepts a dataset or its folder.
    With ``bank`` (a :class:`~napari_lesionmix.augment.lesions.LesionBank` over its
    cases, every component kept), the voxels are counted on the bank's lesion masks,
    which hold every label voxel once, with the label file's voxel size: the same
    loads, without reading the labels again.
    """
    from napari_lesionmix.io.dataset import Dataset, discover_dataset
    from napari_lesionmix.io.nifti import load_label, voxel_spacing
    from napari_lesionmix.io.threads import map_in_threads

    if not isinstance(dataset, Dataset):
        dataset = discover_dataset(dataset)
    if bank is not None and bank.min_voxels == 1 and all(rec.case_id in bank for rec in dataset.cases):
        by_case = bank.lesions_of([rec.case_id for rec in dataset.cases])
        grids = {rec.case_id: bank.label_grid(rec.case_id) for rec in dataset.cases}
        if all(g is not None for g in grids.values()):
            return {cid: float(sum(int(np.count_nonzero(les.mask)) for les in by_case[cid])) *
                    voxel_volume_ml(voxel_spacing(grids[cid][1])) for cid in grids}

    def load_of(rec) -> float:
        label, img = load_label(rec.label_path)
        return lesion_load_ml(label, voxel_spacing(img.affine))

    return {rec.case_id: load for rec, load in zip(dataset.cases, map_in_threads(load_of, dataset.cases), strict=True)}


@dataclass(frozen=True)
class LoadHistogram:
    """What the studio draws for a load distribution.

    Attributes
    ----------
    edges : ndarray, shape (bins + 1,)
        Bin edges in mL.
    density : ndarray, shape (bins,)
        Probability density of the target distribution averaged over each bin
        (integrates to 1 over the edges' range, up to truncation).
    dataset_counts : ndarray, shape (bins,)
        How many of the dataset's cases fall in each bin.
    """

    edges: np.ndarray
    density: np.ndarray
    dataset_counts: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])


@dataclass(frozen=True)
class LoadDistribution:
    """A target lesion-load distribution ``P(v)`` (mL); every parameter editable.

    Build one from a dataset's loads with :meth:`from_dataset` (which sets the
    defaults described in the module docstring) and change any field with
    ``dataclasses.replace`` or the ``overrides`` of :meth:`from_dataset`.

    Attributes
    ----------
    name : {"low", "medium", "high", "uniform", "gaussian", "real"}
    low, high : float or None
        Support of the uniform-type distributions (low/medium/high/uniform).
    mean, sd : float or None
        Parameters of ``gaussian`` (truncated at 0).
    dataset_loads : tuple of float
        The dataset's per-case loads: the support of ``real`` and the reference
        histogram of :meth:`histogram`.
    """

    name: str
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    sd: float | None = None
    dataset_loads: tuple[float, ...] = ()

    def __post_init__(self):
        if self.name not in DISTRIBUTIONS:
            raise LesionMixError(
                f"Unknown load distribution '{self.name}'; choose one of {', '.join(DISTRIBUTIONS)}."
            )
        if any((not np.isfinite(v)) or v < 0 for v in self.dataset_loads):
            raise LesionMixError("Dataset lesion loads must be finite and non-negative.")
        if self.name in ("low", "medium", "high", "uniform"):
            if self.low is None or self.high is None:
                raise LesionMixError(f"The '{self.name}' load distribution needs both low and high (mL).")
            if not (0 <= self.low <= self.high) or not np.isfinite(self.high):
                raise LesionMixError(
                    f"The '{self.name}' load distribution needs 0 <= low <= high, got low={self.low:g} "
                    f"and high={self.high:g} mL."
                )
        elif self.name == "gaussian":
            if self.mean is None or self.sd is None or not np.isfinite(self.mean) or not np.isfinite(self.sd):
                raise LesionMixError("The 'gaussian' load distribution needs a finite mean and sd (mL).")
            if self.sd < 0:
                raise LesionMixError(f"The 'gaussian' load distribution needs sd >= 0, got {self.sd:g} mL.")
            if self.mean + 5 * self.sd <= 0:
                raise LesionMixError(
                    f"The 'gaussian' load distribution (mean {self.mean:g}, sd {self.sd:g} mL) has "
                    "almost no mass above 0 mL."
                )
        elif not self.dataset_loads:
            raise LesionMixError("The 'real' load distribution needs the dataset's loads (none were given).")

    @classmethod
    def from_dataset(
        cls, loads: Mapping[str, float] | Iterable[float], name: str, **overrides
    ) -> LoadDistribution:
        """The named distribution with defaults taken from a dataset's per-case loads.

        Parameters
        ----------
        loads : mapping case id -> mL, or iterable of mL
            Per-case lesion loads (see :func:`dataset_loads`).
        name : str
            One of ``low, medium, high, uniform, gaussian, real``.
        **overrides
            Any field to set instead of its dataset default (``low=``, ``high=``,
            ``mean=``, ``sd=``).
        """
        values = np.asarray(list(loads.values() if isinstance(loads, Mapping) else loads), dtype=float)
        if values.size == 0:
            raise LesionMixError("Cannot build a load distribution from a dataset with no cases.")
        unknown = set(overrides) - {"low", "high", "mean", "sd"}
        if unknown:
            raise LesionMixError(f"Unknown load distribution parameter(s): {', '.join(sorted(unknown))}.")
        q = np.quantile(values, [0.0, 1 / 3, 2 / 3, 1.0])
        defaults: dict = {}
        if name in ("low", "medium", "high"):
            i = ("low", "medium", "high").index(name)
            defaults = {"low": float(q[i]), "high": float(q[i + 1])}
        elif name == "uniform":
            defaults = {"low": float(q[0]), "high": float(q[3])}
        elif name == "gaussian":
            defaults = {"mean": float(values.mean()), "sd": float(values.std(ddof=1) if values.size > 1 else 0.0)}
        defaults.update({k: (None if v is None else float(v)) for k, v in overrides.items()})
        return cls(name=name, dataset_loads=tuple(float(v) for v in values), **defaults)

    def sample(self, rng: np.random.Generator) -> float:
        """Draw one target load (mL)."""
        if self.name == "real":
            return float(self.dataset_loads[int(rng.integers(len(self.dataset_loads)))])
        if self.name == "gaussian":
            for _ in range(1000):  # truncation at 0 by rejection
                v = float(rng.normal(self.mean, self.sd))
                if v >= 0:
                    return v
            return 0.0
        return float(rng.uniform(self.low, self.high))

    def pdf(self, v: np.ndarray) -> np.ndarray:
        """Probability density at ``v`` (mL); ``real`` is a sum of point masses, returned as 0."""
        v = np.asarray(v, dtype=float)
        if self.name == "gaussian":
            if self.sd == 0:
                return np.zeros_like(v)
            from scipy.stats import norm

            z = norm.sf(-self.mean / self.sd)  # mass above 0, for the truncation
            return np.where(v >= 0, norm.pdf(v, self.mean, self.sd) / z, 0.0)
        if self.name == "real":
            return np.zeros_like(v)
        width = self.high - self.low
        if width == 0:
            return np.zeros_like(v)
        return np.where((v >= self.low) & (v <= self.high), 1.0 / width, 0.0)

    def support(self) -> tuple[float, float]:
        """A range holding (almost) all the mass and the dataset loads, for plotting."""
        lo, hi = [], []
        if self.dataset_loads:
            lo.append(min(self.dataset_loads))
            hi.append(max(self.dataset_loads))
        if self.name == "gaussian":
            lo.append(max(self.mean - 4 * self.sd, 0.0))
            hi.append(self.mean + 4 * self.sd)
        elif self.name != "real":
            lo.append(self.low)
            hi.append(self.high)
        a, b = min(lo), max(hi)
        return (a, b if b > a else a + 1.0)

    def histogram(self, bins: int = 30, range: tuple[float, float] | None = None) -> LoadHistogram:  # noqa: A002
        """Histogram data for the UI: the distribution's density per bin and the dataset's counts.

        For ``real`` the density is the empirical histogram of the dataset loads
        (normalised to integrate to 1); for the others the density is the exact
        mass of each bin divided by its width.
        """
        if int(bins) < 1:
            raise LesionMixError(f"Histogram bins must be >= 1, got {bins}.")
        lo, hi = range if range is not None else self.support()
        edges = np.linspace(lo, hi, int(bins) + 1)
        counts = (
            np.histogram(self.dataset_loads, edges)[0] if self.dataset_loads else np.zeros(int(bins), np.int64)
        )
        width = np.diff(edges)
        if self.name == "real":
            total = max(len(self.dataset_loads), 1)
            density = counts / (total * width)
        elif self.name == "gaussian":
            from scipy.stats import norm

            if self.sd == 0:
                density = np.where((edges[:-1] <= self.mean) & (self.mean < edges[1:]), 1.0 / width, 0.0)
            else:
                z = norm.sf(-self.mean / self.sd)
                cdf = np.clip(norm.cdf(np.maximum(edges, 0.0), self.mean, self.sd) - norm.cdf(0.0, self.mean, self.sd), 0, None) / z
                density = np.diff(cdf) / width
        else:
            span = self.high - self.low
            if span == 0:
                density = np.where((edges[:-1] <= self.low) & (self.low < edges[1:]), 1.0 / width, 0.0)
            else:
                overlap = np.clip(np.minimum(edges[1:], self.high) - np.maximum(edges[:-1], self.low), 0, None)
                density = overlap / span / width
        return LoadHistogram(edges=edges, density=np.asarray(density, float), dataset_counts=counts)

    def replace(self, **changes) -> LoadDistribution:
        """A copy with some parameters changed (validated)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line for logs and the CLI."""
        if self.name == "gaussian":
            return f"gaussian(mean={self.mean:.3g} mL, sd={self.sd:.3g} mL)"
        if self.name == "real":
            return f"real({len(self.dataset_loads)} case loads)"
        return f"{self.name}(U[{self.low:.3g}, {self.high:.3g}] mL)"


def from_dataset(loads: Mapping[str, float] | Iterable[float] | str | os.PathLike, name: str, **overrides) -> LoadDistribution:
    """:meth:`LoadDistribution.from_dataset`, also accepting a dataset folder or :class:`Dataset`."""
    from napari_lesionmix.io.dataset import Dataset

    if isinstance(loads, (str, os.PathLike, Dataset)):
        loads = dataset_loads(loads)
    return LoadDistribution.from_dataset(loads, name, **overrides)
