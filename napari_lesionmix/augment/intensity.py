"""Cross-subject intensity matching: a source case's intensities in the host's scale, before any mixing.

Scans of different subjects, sessions or scanners differ in gain. The papers'
methods (CarveMix, Soft-CP, LesionMix, Mixup, CutMix) paste the donor's
intensities as they are, so a lesion from a scan with a lower gain lands
*darker* than the host's normal brain. This module fits, per channel, a
monotone map of a source case's intensities onto the host's, from the two
cases' **normal brain** only (non-lesion voxels inside the brain mask, or
above the channel's background value when there is none: lesion voxels never
drive the fit), and applies it to the source image before a method mixes it.
The registry does that for every method (:mod:`~napari_lesionmix.augment.registry`,
option ``intensity_match``) and records the fitted map in the params, so a
replay gives the same bytes.

Modes
-----
``"none"``
    The papers' behaviour: no change. The two medians are still recorded, so
    the CLI, the export and the QA gallery can say when the scales differ by
    more than :data:`GAIN_WARNING`.
``"brain-linear"``
    Scale and shift so the source's normal-brain median ``m`` and
    inter-quartile range ``r`` become the host's:
    ``x' = m_host + (x - m_src) * r_host / r_src``.
``"histogram"``
    Piecewise-linear landmark matching of the two normal-brain histograms,
    after Nyúl & Udupa (MRM 1999, "On standardizing the MR image intensity
    scale") and Nyúl, Udupa & Zhang (IEEE TMI 2000): the source's landmarks
    (the percentiles :data:`HISTOGRAM_PERCENTILES`, TorchIO's
    ``HistogramStandardization`` defaults: cut-offs 1 and 99 and the deciles)
    are mapped onto the host's, linearly between landmarks and with the end
    segments' slopes beyond them. TorchIO learns the standard scale as the mean
    landmarks of a population and needs a training pass; here the standard
    scale is the host's own landmarks (a two-image case), so it is a few lines
    of numpy.

Voxels at the source channel's background value (the constant outside the
head: :func:`~napari_lesionmix.io.brain.background_level`) are left as they are, so Mixup and CutMix do not lift the
background. Soft-CP's ``intensity_compat`` is a different, local thing (the
mean/std of the ring around one pasted lesion against the host's ring at the
paste position); it can be combined with this global step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import background_level, estimate_brain

#: The modes of the shared ``intensity_match`` option.
MODES = ("none", "brain-linear", "histogram")
#: Landmark percentiles of ``"histogram"`` (TorchIO's HistogramStandardization: cut-offs 1, 99 and the deciles).
HISTOGRAM_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)
#: Relative difference of the normal-brain medians above which ``"none"`` is warned about (25 %).
GAIN_WARNING = 0.25
#: Every percentile :func:`brain_stats` computes: the landmarks, and the quartiles of ``"brain-linear"``.
_PERCENTILES = tuple(sorted({*HISTOGRAM_PERCENTILES, 25.0, 75.0}))


@dataclass(frozen=True)
class BrainStats:
    """Per-channel normal-brain statistics of one case (what a fit needs of it).

    Attributes
    ----------
    percentiles : tuple of tuple of float
        Per channel, the values at :data:`_PERCENTILES` of the normal-brain voxels.
    background : tuple of float
        Per channel, the background level (left unmapped):
        :func:`~napari_lesionmix.io.brain.background_level`, the median of
        the volume's faces (not its minimum, which ringing or noise sets).
    """

    percentiles: tuple[tuple[float, ...], ...]
    background: tuple[float, ...]

    def at(self, channel: int, q: float) -> float:
        return self.percentiles[channel][_PERCENTILES.index(q)]

    @property
    def median(self) -> tuple[float, ...]:
        return tuple(self.at(c, 50.0) for c in range(len(self.percentiles)))


def normal_brain(channel: np.ndarray, label: np.ndarray | None, brain_mask: np.ndarray | None) -> np.ndarray:
    """Normal-brain voxels of one channel: inside the brain and not lesion (any non-zero label).

    Without a brain mask the brain is :func:`~napari_lesionmix.io.brain.estimate_brain`
    of the channel (unit spacing; the registry passes the case's own region). Not
    "above the minimum": on real FLAIR the minimum is the ringing around the
    brain, and the exact-zero background (most of the volume) became "brain".
    """
    region = np.asarray(brain_mask, bool) if brain_mask is not None else estimate_brain(channel)
    if label is not None:
        region = region & (np.asarray(label) == 0)
    return region


def brain_stats(image: np.ndarray, label: np.ndarray | None, brain_mask: np.ndarray | None = None) -> BrainStats:
    """The per-channel normal-brain percentiles of a case (:func:`normal_brain`; lesions excluded).

    Parameters
    ----------
    image : ndarray, shape (C, I, J, K)
    label : ndarray, shape (I, J, K), or None
    brain_mask : ndarray of bool, optional

    Raises
    ------
    LesionMixError
        When a channel has no normal-brain voxel (an empty brain mask, or a constant image).
    """
    if brain_mask is not None and np.shape(brain_mask) != image.shape[1:]:
        raise LesionMixError(f"The brain mask has shape {np.shape(brain_mask)} but the image has {image.shape[1:]}.")
    pct, bg = [], []
    for ch in image:
        values = ch[normal_brain(ch, label, brain_mask)]
        if not values.size:
            raise LesionMixError("A case has no normal-brain voxel (empty brain mask or constant image); "
                                 "intensity matching needs some.")
        pct.append(tuple(float(v) for v in np.percentile(values, _PERCENTILES)))
        bg.append(background_level(ch))
    return BrainStats(tuple(pct), tuple(bg))


@dataclass(frozen=True)
class IntensityMap:
    """A fitted, per-channel monotone map of one source case's intensities into the host's scale.

    Recorded in a sample's params (``Params.intensity``): replaying applies
    exactly this map, whatever the files' statistics would give today.

    Attributes
    ----------
    case_id : str
        The source case (a donor, or a LesionMix lesion's case).
    mode : {"none", "brain-linear", "histogram"}
    source_median, host_median : tuple of float
        Per-channel normal-brain medians (recorded in every mode: the gain warning reads them).
    source_landmarks, host_landmarks : tuple of tuple of float
        Per channel, increasing landmarks and where they go (empty for ``"none"``).
    background : tuple of float
        Per channel, the source value left unmapped (its background level).
    """

    case_id: str
    mode: str
    source_median: tuple[float, ...]
    host_median: tuple[float, ...]
    source_landmarks: tuple[tuple[float, ...], ...] = ()
    host_landmarks: tuple[tuple[float, ...], ...] = ()
    background: tuple[float, ...] = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise LesionMixError(f"Intensity matching must be one of {', '.join(MODES)}, got '{self.mode}'.")
        if self.mode != "none" and not (len(self.source_landmarks) == len(self.host_landmarks)
                                        == len(self.background) == len(self.source_median)):
            raise LesionMixError(f"The intensity map of case '{self.case_id}' needs landmarks for every channel.")
        for src, dst in zip(self.source_landmarks, self.host_landmarks, strict=True):
            if len(src) != len(dst) or len(src) < 2 or np.any(np.diff(src) <= 0):
                raise LesionMixError(f"The intensity map of case '{self.case_id}' needs at least two increasing "
                                     "landmarks per channel, as many on each side.")

    @property
    def gain(self) -> float:
        """The largest relative difference of the per-channel medians, ``|m_src / m_host - 1|``."""
        return max((abs(s / h - 1.0) if h else float("inf"))
                   for s, h in zip(self.source_median, self.host_median, strict=True))

    def apply(self, image: np.ndarray, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """``image`` (C, ...) of the source case in the host's scale (float32; a copy unless ``"none"``).

        ``region`` (spatial slices) maps only there and leaves the rest zero:
        for a method that reads the donor only in that box (CarveMix's field
        box, :meth:`~napari_lesionmix.augment.registry.Method.donor_region`).
        """
        if self.mode == "none":
            return image
        if image.shape[0] != len(self.source_landmarks):
            raise LesionMixError(f"The intensity map of case '{self.case_id}' has {len(self.source_landmarks)} "
                                 f"channel(s) but the image has {image.shape[0]}.")
        if region is None:
            out = np.empty(image.shape, np.float32)
            region = (slice(None),) * (image.ndim - 1)
        else:
            out = np.zeros(image.shape, np.float32)  # calloc'd pages: no pass over the volume
        for c, ch in enumerate(image):
            part = ch[region]
            mapped = _piecewise_linear(part, self.source_landmarks[c], self.host_landmarks[c])
            keep = part == self.background[c]
            mapped[keep] = part[keep]
            out[c][region] = mapped
        return out


def _piecewise_linear(x: np.ndarray, xp: Sequence[float], fp: Sequence[float]) -> np.ndarray:
    """Nyúl-Udupa's mapping: linear between landmarks, end segments' slopes beyond them.

    It runs once per sample over the donor, so it is cheap: a single segment
    (brain-linear) is one multiply-add in float32; several segments are one
    ``np.interp``, with the few voxels beyond the end landmarks extrapolated.
    Every voxel's value depends on that voxel alone, so mapping part of a
    volume gives the same values there as mapping all of it.
    """
    xp, fp = np.asarray(xp, np.float64), np.asarray(fp, np.float64)
    x = np.asarray(x, np.float32)
    slope_lo = (fp[1] - fp[0]) / (xp[1] - xp[0])
    if len(xp) == 2:
        return (x - np.float32(xp[0])) * np.float32(slope_lo) + np.float32(fp[0])
    y = np.interp(x, xp, fp)
    slope_hi = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    for beyond, x0, f0, slope in ((x < xp[0], xp[0], fp[0], slope_lo), (x > xp[-1], xp[-1], fp[-1], slope_hi)):
        if beyond.any():
            y[beyond] = f0 + (x[beyond] - x0) * slope
    return y.astype(np.float32)


def fit_map(mode: str, source: BrainStats, host: BrainStats, case_id: str) -> IntensityMap:
    """The map of ``mode`` taking ``source``'s normal brain onto ``host``'s, per channel.

    Parameters
    ----------
    mode : {"none", "brain-linear", "histogram"}
    source, host : BrainStats
        From :func:`brain_stats` (lesion voxels excluded).
    case_id : str
        The source case.
    """
    if mode not in MODES:
        raise LesionMixError(f"Intensity matching must be one of {', '.join(MODES)}, got '{mode}'.")
    if len(source.percentiles) != len(host.percentiles):
        raise LesionMixError(f"Case '{case_id}' has {len(source.percentiles)} channel(s) but the host has "
                             f"{len(host.percentiles)}; intensity matching pairs them one to one.")
    medians = dict(case_id=case_id, mode=mode, source_median=source.median, host_median=host.median)
    if mode == "none":
        return IntensityMap(**medians)
    src_all, dst_all = [], []
    for c in range(len(source.percentiles)):
        if mode == "brain-linear":
            src, dst = _linear_landmarks(source, host, c)
        else:
            src, dst = _histogram_landmarks(source, host, c)
        src_all.append(src)
        dst_all.append(dst)
    return IntensityMap(**medians, source_landmarks=tuple(src_all), host_landmarks=tuple(dst_all),
                        background=source.background)


def _linear_landmarks(source: BrainStats, host: BrainStats, c: int):
    """Two landmarks of ``x' = m_h + (x - m_s) r_h / r_s`` (median m, inter-quartile range r)."""
    m_s, m_h = source.at(c, 50.0), host.at(c, 50.0)
    r_s = source.at(c, 75.0) - source.at(c, 25.0)
    r_h = host.at(c, 75.0) - host.at(c, 25.0)
    if r_s <= 0 or r_h <= 0:  # a flat normal brain: shift only
        r_s = r_h = 1.0
    return (m_s, m_s + r_s), (m_h, m_h + r_h)


def _histogram_landmarks(source: BrainStats, host: BrainStats, c: int):
    """Nyúl-Udupa landmarks (percentiles :data:`HISTOGRAM_PERCENTILES`), ties in the source dropped."""
    src = [source.at(c, q) for q in HISTOGRAM_PERCENTILES]
    dst = [host.at(c, q) for q in HISTOGRAM_PERCENTILES]
    keep_s, keep_d = [src[0]], [dst[0]]
    for s, d in zip(src[1:], dst[1:], strict=True):
        if s > keep_s[-1]:  # a plateau of the source histogram (ties) makes no segment
            keep_s.append(s)
            keep_d.append(max(d, keep_d[-1]))
    if len(keep_s) < 2:
        return _linear_landmarks(source, host, c)
    return tuple(keep_s), tuple(keep_d)


def map_for(maps: Iterable[IntensityMap], case_id: str) -> IntensityMap | None:
    """The map recorded for ``case_id`` among ``maps``, or ``None``."""
    return next((m for m in maps if m.case_id == case_id), None)


def unmatched_gain(maps: Iterable[IntensityMap | Mapping]) -> IntensityMap | None:
    """The map of mode ``"none"`` with the largest gain difference above :data:`GAIN_WARNING`, or ``None``.

    ``maps`` are :class:`IntensityMap` objects or their JSON dicts (a manifest's params).
    """
    worst = None
    for m in maps:
        m = m if isinstance(m, IntensityMap) else IntensityMap(**{k: _tuples(v) for k, v in m.items()})
        if m.mode == "none" and m.gain > GAIN_WARNING and (worst is None or m.gain > worst.gain):
            worst = m
    return worst


def gain_warning(maps: Iterable[IntensityMap | Mapping], host_id: str = "host") -> str | None:
    """One line when a map of mode ``"none"`` pastes across a gain difference above :data:`GAIN_WARNING`."""
    worst = unmatched_gain(maps)
    if worst is None:
        return None
    return (f"warning: normal-brain medians of host '{host_id}' ({_fmt(worst.host_median)}) and source "
            f"'{worst.case_id}' ({_fmt(worst.source_median)}) differ by {worst.gain:.0%} and intensities are "
            "pasted unmatched; use intensity_match=brain-linear (or histogram) to paste in the host's scale.")


def medians_line(host: BrainStats, source: BrainStats, host_id: str, source_id: str, mode: str) -> tuple[str, bool]:
    """One line with both normal-brain medians (the studio's label), and whether it warns.

    It warns when ``mode`` is ``"none"`` and the medians differ by more than :data:`GAIN_WARNING`.
    """
    gain = fit_map("none", source, host, source_id).gain
    warn = mode == "none" and gain > GAIN_WARNING
    text = (f"Normal-brain medians: host '{host_id}' {_fmt(host.median)}, donor '{source_id}' "
            f"{_fmt(source.median)} (differ by {gain:.0%}).")
    if warn:
        text += " Pasted unmatched, the donor's lesions land in another scale: choose brain-linear."
    return text, warn


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _fmt(values: Sequence[float]) -> str:
    return "/".join(f"{v:.4g}" for v in values)
