"""Mixup and CutMix, the lesion-unaware baselines of CarveMix's Table 1.

Both mix a *donor* ``(X_i, Y_i)`` into a *host* ``(X_j, Y_j)`` with soft labels,
as the table defines them, extended voxelwise to 3D segmentation:

Mixup
    ``X = lam X_i + (1 - lam) X_j``, ``Y = lam Y_i + (1 - lam) Y_j``, ``lam ~ Beta(alpha, alpha)``.
CutMix
    ``X = X_i M + X_j (1 - M)`` with ``M`` a random box; ``Y = lam Y_i + (1 - lam) Y_j``
    with ``lam = |M| / |V|`` (the box's volume fraction).

Choices where the paper is silent: ``alpha = 0.2`` (Mixup's own ImageNet
default); the CutMix box has the volume's aspect ratio, its volume fraction is
drawn from U(0, 1) as in CutMix (``lam ~ Beta(1, 1)``) and its centre uniformly,
then it is clipped to the volume and ``lam`` recomputed from the clipped box.
Soft labels are only defined for binary (lesion/background) labels; a
multi-class label raises an error instead of averaging class ids (``label="hard"``
keeps the class ids of the larger weight, so multi-class labels work there). The option
``label="hard"`` keeps, in each voxel, the label of the larger weight (the
donor's where ``lam > 0.5``, else the host's; CutMix: the donor's inside the
box): the integer labels that nnU-Net and most segmenters train on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.augment.registry import Inputs, Method, Options, option, register
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import Case, check_same_grid


@dataclass(frozen=True)
class MixupParams(Params):
    """Mixup: donor weight ``lam`` drawn from Beta(alpha, alpha)."""

    method = "mixup"
    host_id: str
    donor_id: str
    lam: float
    alpha: float = 0.2
    label: str = "soft"
    seed: int | None = None
    sample_index: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.lam <= 1.0:
            raise LesionMixError(f"Mixup lambda must lie in [0, 1], got {self.lam}.")
        _check_label_kind(self.label)


@dataclass(frozen=True)
class CutMixParams(Params):
    """CutMix: the donor box ``[start, stop)`` per axis; ``lam`` is its volume fraction."""

    method = "cutmix"
    host_id: str
    donor_id: str
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    label: str = "soft"
    seed: int | None = None
    sample_index: int | None = None

    def __post_init__(self):
        if any(b <= a for a, b in zip(self.start, self.stop, strict=True)):
            raise LesionMixError(f"CutMix box is empty: start {self.start}, stop {self.stop}.")
        _check_label_kind(self.label)

    def lam(self, shape: tuple[int, ...]) -> float:
        vol = np.prod([b - a for a, b in zip(self.start, self.stop, strict=True)])
        return float(vol / np.prod(shape))


LABEL_KINDS = ("soft", "hard")


def _check_label_kind(kind: str) -> None:
    if kind not in LABEL_KINDS:
        raise LesionMixError(f"Label kind must be 'soft' or 'hard', got {kind!r}.")


def _mixed_label(host: Case, donor: Case, lam: float, kind: str, where_donor: np.ndarray | bool) -> np.ndarray:
    """``lam Y_donor + (1 - lam) Y_host`` (soft), or the label of the larger weight (hard)."""
    if kind == "hard":  # class ids are kept as they are: multi-class labels (BraTS' 0-4) are fine here
        host.require_label("Host", "Mixup and CutMix")
        donor.require_label("Donor", "Mixup and CutMix")
        return np.where(where_donor, donor.label, host.label).astype(np.result_type(donor.label, host.label))
    y_donor, y_host = _binary_label(donor, "Donor"), _binary_label(host, "Host")
    lam = np.float32(lam)
    return (lam * y_donor + (np.float32(1) - lam) * y_host).astype(np.float32)


def _binary_label(case: Case, role: str) -> np.ndarray:
    case.require_label(role, "Mixup and CutMix")
    if case.label.max() > 1:
        raise LesionMixError(
            f"{role} label of '{case.case_id}' has classes up to {int(case.label.max())}; Mixup and "
            "CutMix soft labels are defined for binary lesion labels only; label=hard (--label hard) "
            "keeps whole classes, any number of them."
        )
    return case.label.astype(np.float32)


def sample_mixup(rng: np.random.Generator, host_id: str, donor_id: str, alpha: float = 0.2,
                 label: str = "soft", seed: int | None = None, sample_index: int | None = None) -> MixupParams:
    """Draw ``lam ~ Beta(alpha, alpha)``."""
    if alpha <= 0:
        raise LesionMixError(f"Mixup alpha must be positive, got {alpha}.")
    return MixupParams(host_id, donor_id, float(rng.beta(alpha, alpha)), alpha, label, seed, sample_index)


def mixup(host: Case, donor: Case, params: MixupParams) -> Synthetic:
    """Table 1, Mixup: voxelwise convex combination of images and (soft) labels."""
    check_same_grid(host, donor)
    lam = np.float32(params.lam)
    image = lam * donor.image + (np.float32(1) - lam) * host.image
    label = _mixed_label(host, donor, params.lam, params.label, params.lam > 0.5)
    mask = np.full(host.shape, lam, dtype=np.float32)
    return Synthetic(image.astype(np.float32), label, mask, params)


def sample_cutmix(rng: np.random.Generator, host_id: str, donor_id: str, shape: tuple[int, int, int],
                  label: str = "soft", seed: int | None = None, sample_index: int | None = None) -> CutMixParams:
    """Draw a box with the volume's aspect ratio and a U(0, 1) volume fraction."""
    frac = rng.uniform(0.0, 1.0)
    side = np.maximum(np.round(np.asarray(shape) * frac ** (1 / 3)).astype(int), 1)
    centre = [rng.integers(0, n) for n in shape]
    start = tuple(int(max(c - s // 2, 0)) for c, s in zip(centre, side, strict=True))
    stop = tuple(int(min(a + s, n)) for a, s, n in zip(start, side, shape, strict=True))
    return CutMixParams(host_id, donor_id, start, stop, label, seed, sample_index)


def cutmix(host: Case, donor: Case, params: CutMixParams) -> Synthetic:
    """Table 1, CutMix: donor image inside the box, label ``lam Y_i + (1 - lam) Y_j``."""
    check_same_grid(host, donor)
    box = tuple(slice(a, b) for a, b in zip(params.start, params.stop, strict=True))
    mask = np.zeros(host.shape, dtype=bool)
    mask[box] = True
    image = host.image.copy()
    image[(slice(None), *box)] = donor.image[(slice(None), *box)]
    label = _mixed_label(host, donor, params.lam(host.shape), params.label, mask)
    return Synthetic(image, label, mask, params)


# --------------------------------------------------------------------------- the registered methods


@dataclass(frozen=True)
class MixupOptions(Options):
    """Settings of Mixup (the CLI flags and export ``mixup.NAME`` keys)."""

    alpha: float = option(0.2, "Beta(alpha, alpha) of the donor weight lambda", low=0.0, open_low=True)
    label: str = option("soft", "soft: lam Y_donor + (1 - lam) Y_host (the paper); hard: the label of the "
                                "larger weight (integer, for nnU-Net)", choices=LABEL_KINDS)


@dataclass(frozen=True)
class CutMixOptions(Options):
    """Settings of CutMix (the CLI flags and export ``cutmix.NAME`` keys)."""

    label: str = option("soft", "soft: lam Y_donor + (1 - lam) Y_host with lam the box's volume fraction "
                                "(the paper); hard: the donor's label inside the box (integer, for nnU-Net)",
                        choices=LABEL_KINDS)


class _PairBaseline(Method):
    """Mixup and CutMix: a host/donor pair on one grid (binary labels for the soft-label kind)."""

    # The registry's gate checks the pair (grid included); binary labels are checked where soft
    # labels are made, since a hard label keeps any class id.

    def soft_labels(self, options) -> bool:
        return options.label == "soft"


@register
class MixupMethod(_PairBaseline):
    """Mixup (CarveMix's Table 1 baseline) through the registry."""

    name = "mixup"
    label = "Mixup"
    summary = "voxelwise convex combination of a donor and a host scan (lesion-unaware baseline)"
    Options = MixupOptions
    Params = MixupParams

    def sample(self, rng, inputs: Inputs, options: MixupOptions, resources) -> MixupParams:
        return sample_mixup(rng, inputs.host.case_id, inputs.donor.case_id, options.alpha, options.label)

    def apply(self, inputs: Inputs, params: MixupParams, resources) -> Synthetic:
        return mixup(inputs.host, inputs.donor, params)

    def describe(self, synthetic: Synthetic) -> str:
        return f"lambda={synthetic.params.lam:.3f}, {synthetic.params.label} labels"


@register
class CutMixMethod(_PairBaseline):
    """CutMix (CarveMix's Table 1 baseline) through the registry."""

    name = "cutmix"
    label = "CutMix"
    summary = "paste a random box of a donor scan into a host scan (lesion-unaware baseline)"
    Options = CutMixOptions
    Params = CutMixParams

    def sample(self, rng, inputs: Inputs, options: CutMixOptions, resources) -> CutMixParams:
        return sample_cutmix(rng, inputs.host.case_id, inputs.donor.case_id, inputs.host.shape, options.label)

    def apply(self, inputs: Inputs, params: CutMixParams, resources) -> Synthetic:
        return cutmix(inputs.host, inputs.donor, params)

    def describe(self, synthetic: Synthetic) -> str:
        p = synthetic.params
        return f"box {p.start} -> {p.stop} (lambda={p.lam(synthetic.label.shape):.3f}), {p.label} labels"
