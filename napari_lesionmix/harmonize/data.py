"""Self-supervised training pairs for ARHNet (Sec. 2.1): real scans with perturbed lesions.

Each case is brought to a common intensity scale (see :func:`normalise`; the
rule is recorded in every checkpoint and applied identically at inference); a
patch is cut around a lesion and its foreground perturbed by Eq. 1,

    I~ = [(1 + alpha) I + lambda] * M + I * (1 - M),  alpha, lambda ~ U(-0.3, 0.3),

so that ``(I~, M) -> I`` is a training pair. NumPy only; every random draw
comes from the generator passed in.

Normalisation. The paper scales each scan to [0, 1] (min-max). On real float
scans one hot voxel sets the maximum, so every tissue lands near 0 and the
generator's corrections, learned in [0, 1] units, are scaled back by a range
20x too large (the overshoot of issue 17). The default is therefore a robust
per-scan, per-channel scaling over the scan's foreground (non-zero voxels above
5 % of their 99th percentile, i.e. the brain of a skull-stripped scan):

    I_n = median_value * (I - p_low) / (p50 - p_low),   p_low = 1st percentile

which puts the 1st percentile at 0 and the median at 0.5, as min-max does for a
clean skull-stripped scan, and which neither an outlier nor the lesion load (any
load under half the brain) moves. ``"minmax"`` stays for old checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.harmonize.anchor import apply_gain, check_anchor, solve_gain

NORMALISATIONS = ("robust", "minmax")
ROBUST = {"method": "robust", "low_percentile": 1.0, "median_value": 0.5,
          "scope": "per image and channel, over non-zero voxels above 5 % of their 99th percentile"}
MINMAX = {"method": "minmax", "scope": "per image and channel, whole volume"}
NORMALISATION = ROBUST  # what new checkpoints record
DOMAIN_QUANTILES = (5.0, 25.0, 75.0, 95.0, 99.0)
_MAX_VALUES = 2_000_000  # voxels used for percentiles (a fixed stride beyond that)


class OutOfDomainWarning(UserWarning):
    """The input lies far outside the data an ARHNet checkpoint was trained on (see :func:`domain_warning`)."""


def normalisation_spec(method: str) -> dict:
    """The recorded description of normalisation ``method`` (``"robust"`` or ``"minmax"``)."""
    if method == "robust":
        return dict(ROBUST)
    if method == "minmax":
        return dict(MINMAX)
    raise LesionMixError(f"Unknown intensity normalisation '{method}'; expected one of {', '.join(NORMALISATIONS)}.")


def minmax_scale(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale each channel of a ``(C, ...)`` image to [0, 1]; returns ``(scaled, lo, hi)``.

    ``lo`` and ``hi`` have shape ``(C,)``; a constant channel gets ``hi = lo + 1``.
    """
    image = np.asarray(image, dtype=np.float32)
    flat = image.reshape(image.shape[0], -1)
    lo = flat.min(axis=1).astype(np.float32)
    hi = flat.max(axis=1).astype(np.float32)
    return _apply(image, lo, hi)


def _apply(image, lo, hi):
    hi = np.where(hi > lo, hi, lo + 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (image.ndim - 1)
    return ((image - lo.reshape(shape)) / (hi - lo).reshape(shape)).astype(np.float32), lo.astype(np.float32), hi


def foreground_values(channel: np.ndarray) -> np.ndarray:
    """The values the robust normalisation is computed on (see the module docstring)."""
    v = np.asarray(channel).ravel()
    if v.size > _MAX_VALUES:
        v = v[:: v.size // _MAX_VALUES + 1]
    nz = v[v != 0]
    if nz.size >= 64:
        v = nz
        p99 = float(np.percentile(v, 99))
        if p99 > 0:
            above = v[v > 0.05 * p99]
            if above.size >= 64:
                v = above
    return v.astype(np.float64)


def robust_scale(image: np.ndarray, low_percentile: float = 1.0, median_value: float = 0.5,
                 quantiles: Sequence[float] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Robust scaling of each channel: ``(scaled, lo, hi, q)``, ``I_n = (I - lo) / (hi - lo)``.

    ``lo`` is the ``low_percentile`` of the channel's foreground values and
    ``hi`` is chosen so that their median maps to ``median_value``; ``q`` holds the
    requested ``quantiles`` of the foreground *after* scaling, shape ``(C, len(quantiles))``.
    """
    image = np.asarray(image, dtype=np.float32)
    n = image.shape[0]
    lo = np.zeros(n, np.float32)
    hi = np.ones(n, np.float32)
    q = np.zeros((n, len(quantiles)), np.float64)
    for c in range(n):
        v = foreground_values(image[c])
        pts = np.percentile(v, [low_percentile, 50.0, *quantiles])
        lo[c] = pts[0]
        hi[c] = pts[0] + (pts[1] - pts[0]) / median_value if pts[1] > pts[0] else pts[0] + 1.0
        q[c] = (pts[2:] - lo[c]) / (hi[c] - lo[c])
    scaled, lo, hi = _apply(image, lo, hi)
    return scaled, lo, hi, q


def normalise(image: np.ndarray, spec: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a recorded normalisation ``spec`` (``None`` = ``"minmax"``, what old checkpoints used)."""
    method = (spec or MINMAX).get("method")
    if method == "minmax":
        return minmax_scale(image)
    if method == "robust":
        scaled, lo, hi, _ = robust_scale(image, float(spec.get("low_percentile", 1.0)),
                                         float(spec.get("median_value", 0.5)))
        return scaled, lo, hi
    raise LesionMixError(
        f"Intensity normalisation '{method}' is not known to this napari-lesionmix; "
        f"it reads {', '.join(NORMALISATIONS)}."
    )


def domain_stats(image: np.ndarray, spacing: Sequence[float] | None, spec: dict | None = None) -> dict:
    """Per-channel foreground quantiles after the robust normalisation, and the voxel spacing."""
    spec = spec or ROBUST
    _, _, _, q = robust_scale(image, float(spec.get("low_percentile", 1.0)), float(spec.get("median_value", 0.5)),
                              DOMAIN_QUANTILES)
    return {"quantiles": q.tolist(), "spacing": None if spacing is None else [float(s) for s in spacing]}


def summarise_domain(stats: Sequence[dict]) -> dict:
    """What a checkpoint records of its training data: per-channel quantile ranges and spacing range."""
    q = np.array([s["quantiles"] for s in stats], np.float64)  # (cases, C, Q)
    sp = [s["spacing"] for s in stats if s.get("spacing") is not None]
    return {
        "quantiles": list(DOMAIN_QUANTILES),
        "q_min": q.min(axis=0).tolist(), "q_max": q.max(axis=0).tolist(),
        "spacing_min": np.min(sp, axis=0).tolist() if sp else None,
        "spacing_max": np.max(sp, axis=0).tolist() if sp else None,
        "cases": len(stats),
    }


def domain_warning(domain: dict | None, image: np.ndarray, spacing: Sequence[float] | None = None,
                   spacing_factor: float = 1.5, q_margin: float = 0.15,
                   exclude: np.ndarray | None = None) -> str | None:
    """One sentence when ``image`` (or its ``spacing``) lies far outside a checkpoint's training data.

    ``exclude`` (bool, the mixing mask) leaves the pasted voxels out of the
    intensity statistics: a paste from another scanner is what harmonization
    is for; the host scan around it is what must look like the training data.

    "Far": a voxel spacing more than ``spacing_factor`` times off the training
    range on any axis, or a normalised foreground quantile (5th to 99th
    percentile, median = 0.5) more than ``q_margin`` plus half the training
    range outside that range. ``None`` when it is inside, or when the
    checkpoint records no domain (older files).
    """
    if not domain:
        return None
    why = []
    if spacing is not None and domain.get("spacing_min") is not None:
        lo, hi = np.asarray(domain["spacing_min"]), np.asarray(domain["spacing_max"])
        sp = np.asarray(spacing, np.float64)
        if np.any(sp < lo / spacing_factor) or np.any(sp > hi * spacing_factor):
            why.append(f"voxel spacing {'x'.join(f'{s:g}' for s in sp)} mm against "
                       f"{'x'.join(f'{s:g}' for s in lo)}"
                       + ("" if np.allclose(lo, hi) else f" to {'x'.join(f'{s:g}' for s in hi)}") + " mm")
    qs = list(domain.get("quantiles", []))
    q_min, q_max = np.asarray(domain.get("q_min", [])), np.asarray(domain.get("q_max", []))
    if qs and q_min.size and image.shape[0] == q_min.shape[0]:
        host = image
        if exclude is not None and np.any(exclude):
            host = np.where(np.asarray(exclude, bool)[None], 0, image).astype(np.float32)  # 0 = not foreground
        _, _, _, q = robust_scale(host, quantiles=qs)
        tol = q_margin + 0.5 * (q_max - q_min)
        off = (q < q_min - tol) | (q > q_max + tol)
        if off.any():
            c, k = (int(i) for i in np.argwhere(off)[0])
            why.append(f"its {qs[k]:g}th intensity percentile at {q[c, k]:.2f} of the normalised scale against "
                       f"{q_min[c, k]:.2f}-{q_max[c, k]:.2f}")
    if not why:
        return None
    return ("This ARHNet checkpoint was trained on data unlike this image (" + "; ".join(why) + "), so its "
            "harmonization may be wrong here: train one on your own data with `lesionmix train-harmonizer "
            "--dataset DIR` or the studio's Train button.")


def perturb(image: np.ndarray, mask: np.ndarray, alpha: float, lam: float) -> np.ndarray:
    """Eq. 1: ``[(1 + alpha) I + lambda] * M + I * (1 - M)`` for ``image`` (C, ...) and ``mask`` (...)."""
    m = np.asarray(mask, dtype=np.float32)[None]
    return (((1.0 + alpha) * image + lam) * m + image * (1.0 - m)).astype(np.float32)


def sample_perturbation(rng: np.random.Generator, alpha_range: float = 0.3, lam_range: float = 0.3,
                        gain_range: float = 0.0) -> tuple[float, float]:
    """Draw ``(alpha, lambda)`` of Eq. 1.

    Paper: ``alpha ~ U(-alpha_range, alpha_range)``, ``lambda ~ U(-lam_range, lam_range)``.
    With ``gain_range > 1`` the factor ``1 + alpha`` is instead drawn log-uniformly in
    ``[1 / gain_range, gain_range]`` (a lesion from a scan of another gain; see
    :class:`~napari_lesionmix.harmonize.config.TrainConfig`).
    """
    if gain_range > 1.0:
        alpha = math.exp(float(rng.uniform(-math.log(gain_range), math.log(gain_range)))) - 1.0
    else:
        alpha = float(rng.uniform(-alpha_range, alpha_range))
    return alpha, float(rng.uniform(-lam_range, lam_range))


@dataclass
class TrainingCase:
    """One case in memory: the normalised image (C, I, J, K), its lesion mask and lesion voxel list.

    ``raw`` keeps the image in its own scale, ``label`` the label map and
    ``affine`` the geometry (cross-subject validation pastes raw scans);
    ``domain`` holds :func:`domain_stats` of the case; ``zero`` the normalised
    value of intensity 0 per channel, about which anchoring applies its gain
    (:mod:`~napari_lesionmix.harmonize.anchor`).
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    lesion_voxels: np.ndarray
    raw: np.ndarray | None = None
    label: np.ndarray | None = None
    affine: np.ndarray | None = None
    domain: dict = field(default_factory=dict)
    zero: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, case_id: str, image: np.ndarray, label: np.ndarray, normalisation: str = "robust",
                    affine: np.ndarray | None = None) -> TrainingCase:
        scaled, lo, hi = normalise(image, normalisation_spec(normalisation))
        mask = np.asarray(label) > 0
        spacing = None
        if affine is not None:
            from napari_lesionmix.io.nifti import voxel_spacing

            spacing = voxel_spacing(affine)
        return cls(case_id, scaled, mask, np.argwhere(mask).astype(np.int32), raw=np.asarray(image, np.float32),
                   label=np.asarray(label), affine=affine, domain=domain_stats(image, spacing),
                   zero=(-lo / (hi - lo)).astype(np.float64))

    def as_case(self):
        """The raw scan as an :class:`~napari_lesionmix.io.nifti.Case` (for cross-subject pastes)."""
        import nibabel as nib

        from napari_lesionmix.io.nifti import Case

        affine = np.eye(4) if self.affine is None else self.affine
        return Case(image=self.raw, label=self.label, affine=affine, header=nib.Nifti1Header(), case_id=self.case_id)


def load_training_cases(dataset: str | os.PathLike | Sequence, log=None,
                        normalisation: str = "robust", *, should_stop=None) -> list[TrainingCase]:
    """Load every labelled case with at least one lesion voxel from a dataset folder.

    ``dataset`` is a folder (any layout :func:`~napari_lesionmix.io.dataset.discover_dataset`
    knows), or a list of :class:`~napari_lesionmix.io.nifti.Case` objects.
    Cases without lesions are skipped (reported through ``log``). ``should_stop()``,
    polled before each case (about a second each at 1 mm), raises
    :class:`~napari_lesionmix.errors.Cancelled` once true.
    """
    from napari_lesionmix.errors import Cancelled
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
    while True:
        if should_stop is not None and should_stop():
            raise Cancelled(f"Loading the training cases of {where} was stopped.")
        case = next(cases, None)
        if case is None:
            break
        if case.label is None or not np.any(case.label > 0):
            if log:
                log(f"skipping case '{case.case_id}': no lesion voxels")
            continue
        if n_channels is not None and case.n_channels != n_channels:
            raise LesionMixError(
                f"Case '{case.case_id}' has {case.n_channels} channel(s) but earlier cases of {where} have {n_channels}."
            )
        n_channels = case.n_channels
        out.append(TrainingCase.from_arrays(case.case_id, case.image, case.label, normalisation, case.affine))
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
              alpha_range: float = 0.3, lam_range: float = 0.3, gain_range: float = 0.0,
              anchor: str = "none") -> dict[str, np.ndarray | float]:
    """One training pair: ``{"real", "composite", "mask", "alpha", "lam", "origin", "anchored"}``.

    With ``anchor="host-lesions"``, half of the pairs (a fair coin from ``rng``)
    have their perturbed foreground anchored (:mod:`~napari_lesionmix.harmonize.anchor`)
    back to the level of the real lesion: its median is given, as inference gives
    a paste the median of the host's own lesions, so the generator learns to keep
    a given level and to restore everything else; ``anchored`` is then 1.0 (the
    generator's anchor channel), else 0.0 (the paper's pair).
    """
    check_anchor(anchor)
    origin = patch_origin(rng, case, patch_size)
    real = crop(case.image, origin, patch_size)
    mask = crop(case.mask, origin, patch_size).astype(np.float32)
    alpha, lam = sample_perturbation(rng, alpha_range, lam_range, gain_range)
    composite = perturb(real, mask, alpha, lam)
    anchored = 0.0
    if anchor == "host-lesions" and rng.random() < 0.5:
        fg = mask > 0
        zero = np.zeros(real.shape[0]) if case.zero is None else case.zero
        gains = [solve_gain(composite[c][fg], 1.0, float(np.median(real[c][fg])), zero=float(zero[c]))
                 for c in range(real.shape[0])]
        if all(g is not None for g in gains):  # as at inference: every channel anchored, or none
            for c, g in enumerate(gains):
                composite[c][fg] = apply_gain(composite[c][fg], 1.0, g, zero=float(zero[c]))
            anchored = 1.0
    return {"real": real, "composite": composite, "mask": mask[None],
            "alpha": alpha, "lam": lam, "origin": origin, "anchored": anchored}


def make_batch(rng: np.random.Generator, cases: Sequence[TrainingCase], n: int, patch_size: int,
               alpha_range: float = 0.3, lam_range: float = 0.3, gain_range: float = 0.0,
               anchor: str = "none") -> dict[str, np.ndarray]:
    """``n`` pairs from random cases, stacked: arrays of shape (n, C or 1, P, P, P); ``anchored`` (n,)."""
    pairs = [make_pair(rng, cases[int(rng.integers(len(cases)))], patch_size, alpha_range, lam_range, gain_range,
                       anchor)
             for _ in range(n)]
    out = {k: np.stack([p[k] for p in pairs]) for k in ("real", "composite", "mask")}
    out["anchored"] = np.array([p["anchored"] for p in pairs], np.float32)
    return out
