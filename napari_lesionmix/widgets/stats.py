"""Segment statistics for QA (as 3D Slicer's Segment Statistics), Qt-free.

Volume and median intensity of the host's lesions, the pasted lesions and the
normal brain, in the host and in the synthetic case, and before/after
harmonization when the shown sample is one half of a harmonized pair. "Normal
brain" is the registry's: ``case_brain(case, mask).normal(label)`` (the brain
mask, else the estimate, without lesion voxels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesionmix.io.brain import case_brain

#: Where a pasted lesion is: a lesion voxel of the synthetic case where the mixing mask is at least this.
PASTED_LEVEL = 0.5


@dataclass(frozen=True)
class SegmentRow:
    """One row: a segment of one image, its volume (mL) and median intensity (channel 0; NaN when empty)."""

    segment: str
    image: str
    volume_ml: float
    median: float


def _row(segment: str, image_name: str, image: np.ndarray, where: np.ndarray, voxel_ml: float) -> SegmentRow:
    n = int(np.count_nonzero(where))
    return SegmentRow(segment, image_name, n * voxel_ml, float(np.median(image[where])) if n else float("nan"))


def segment_statistics(host, brain_mask, synthetic, before=None) -> list[SegmentRow]:
    """The QA table of one sample.

    Parameters
    ----------
    host : Case
    brain_mask : ndarray of bool or None
        The host's brain mask (``None``: the estimate from the image).
    synthetic : Synthetic
        The shown sample (on the host's grid).
    before : Synthetic, optional
        The same sample before harmonization (``synthetic`` is then the harmonized one).
    """
    voxel_ml = float(np.prod(host.spacing)) / 1000.0
    region = case_brain(host, brain_mask)
    label = np.asarray(synthetic.label)
    syn_lesion = (label >= 0.5) if label.dtype.kind == "f" else (label != 0)
    host_lesion = np.asarray(host.label) != 0
    pasted = syn_lesion & (np.asarray(synthetic.mask) >= PASTED_LEVEL) & ~host_lesion
    host_normal = region.normal(host.label)
    syn_normal = region.mask & ~syn_lesion
    h, s = host.image[0], synthetic.image[0]
    after = "synthetic, harmonized" if before is not None else "synthetic"
    rows = [_row("host lesions", "host", h, host_lesion, voxel_ml)]
    if before is not None:
        rows.append(_row("pasted lesions", "synthetic, before", before.image[0], pasted, voxel_ml))
    rows += [_row("pasted lesions", after, s, pasted, voxel_ml),
             _row("normal brain", "host", h, host_normal, voxel_ml)]
    if before is not None:
        rows.append(_row("normal brain", "synthetic, before", before.image[0], syn_normal, voxel_ml))
    rows.append(_row("normal brain", after, s, syn_normal, voxel_ml))
    return rows


def median_decimals(medians: list[float]) -> int:
    """Decimals that give the largest median four significant digits, one count for the whole column.

    One count keeps the column comparable: z-scored medians read "0.060" beside "2.992", not "0.06008".
    """
    finite = [abs(v) for v in medians if np.isfinite(v)]
    top = max(finite, default=0.0)
    return 3 if top == 0 else int(np.clip(3 - np.floor(np.log10(top)), 0, 4))


def format_rows(rows: list[SegmentRow]) -> str:
    """The table as rich text for a Qt label."""
    d = median_decimals([r.median for r in rows])
    cells = "".join(
        f"<tr><td>{r.segment}</td><td>{r.image}</td><td align='right'>{r.volume_ml:.2f}</td>"
        f"<td align='right'>{'-' if np.isnan(r.median) else f'{r.median:.{d}f}'}</td></tr>" for r in rows)
    return ("<table cellspacing='0' cellpadding='1'><tr><th align='left'>segment</th><th align='left'>image</th>"
            f"<th>mL</th><th>median</th></tr>{cells}</table>")
