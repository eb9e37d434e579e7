"""QA contact sheet: triplanar thumbnails of exported cases with their label contours.

Each case is shown as axial, coronal and sagittal slices, each the slice of
its orientation with the most lesion voxels (the volume centre when the
label is empty), after
reorienting to the closest canonical RAS+ orientation, in the neurological
convention: patient right on the right of axial and coronal views, anterior
to the right of sagittal views, superior up. Pixels keep their physical
aspect ratio. Lesion contours (label > 0) are drawn in red. A case pasted
with ``intensity_match=none`` between scans whose normal-brain medians differ
by more than 25 % has its title in orange with :data:`GAIN_MARK` and the
difference. Rendering uses
matplotlib's Agg canvas (no pyplot, no Qt), so it runs in a worker thread
of the studio and on a headless server alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_lesionmix.augment.intensity import unmatched_gain
from napari_lesionmix.errors import LesionMixError

#: Title marker of a case pasted unmatched across a gain difference (:func:`gain_mismatches`).
GAIN_MARK = "gain!"


def list_cases(out: str | os.PathLike) -> list[str]:
    """Case ids of a dataset folder (labels in ``labelsTr``), sorted."""
    labels = Path(out) / "labelsTr"
    if not labels.is_dir():
        raise LesionMixError(f"'{os.fspath(out)}' has no labelsTr folder; is it an exported dataset?")
    return sorted(p.name[: -len(".nii.gz")] for p in labels.iterdir()
                  if p.name.endswith(".nii.gz") and not p.name.startswith("."))


def choose_cases(all_ids: Sequence[str], n: int) -> list[str]:
    """``n`` cases spread evenly over the sorted ids (deterministic)."""
    if n <= 0:
        raise LesionMixError(f"The gallery needs at least one case, got n = {n}.")
    if n >= len(all_ids):
        return list(all_ids)
    picks = np.linspace(0, len(all_ids) - 1, n).round().astype(int)
    return [all_ids[i] for i in picks]


def case_title(case_id: str, record: dict | None) -> str:
    """A gallery title: the case, its method, and host <- donor(s) for a synthetic case."""
    if not record or record.get("method", "real") == "real":
        return f"{case_id} real" if record else case_id
    sources = list(record.get("sources", ()))
    host = record.get("host", sources[0] if sources else "?")
    donors = [s for s in sources if s != host] or ([record["donor"]] if record.get("donor") else [])
    return f"{case_id} {record.get('method', '')}: {host} <- {', '.join(donors) or '-'}"


def gallery_cases(out: str | os.PathLike, case_ids: Sequence[str] | int | None = None) -> list[str]:
    """The cases a gallery of ``out`` shows, in its order (rows first): what a click on it maps back to."""
    all_ids = list_cases(out)
    if not all_ids:
        raise LesionMixError(f"'{os.fspath(out)}' holds no case to show.")
    if case_ids is None or isinstance(case_ids, (int, np.integer)):
        return choose_cases(all_ids, 12 if case_ids is None else int(case_ids))
    ids = list(case_ids)
    unknown = [c for c in ids if c not in set(all_ids)]
    if unknown:
        raise LesionMixError(f"Case '{unknown[0]}' is not in '{os.fspath(out)}/labelsTr'.")
    return ids


def _records(out: Path) -> dict[str, dict]:
    from napari_lesionmix.export.writer import Manifest

    try:
        return Manifest(out).read()
    except (OSError, json.JSONDecodeError):
        return {}


def gain_mismatches(records: dict[str, dict]) -> dict[str, float]:
    """Synthetic cases pasted unmatched across a normal-brain gain difference above 25 %: ``{id: gain}``.

    ``records`` are a manifest's (``{id: record}``); the gain is the relative
    difference of the host's and a source's normal-brain medians recorded in
    the params (:func:`~napari_lesionmix.augment.intensity.unmatched_gain`).
    """
    out = {}
    for cid, rec in records.items():
        params = rec.get("params") if isinstance(rec, dict) else None
        worst = unmatched_gain(params.get("intensity", ())) if isinstance(params, dict) else None
        if worst is not None:
            out[cid] = worst.gain
    return out


def triplanar(image: np.ndarray, label: np.ndarray, affine: np.ndarray):
    """Canonical-RAS slices, each where its orientation shows the most lesion voxels.

    Returns
    -------
    list of (image_slice, label_slice, aspect)
        Axial, coronal, sagittal; each slice is ready for
        ``imshow(s.T, origin="lower")``; ``aspect`` is vertical / horizontal spacing.
    """
    img = nib.as_closest_canonical(nib.Nifti1Image(image.astype(np.float32), affine))
    lab = nib.as_closest_canonical(nib.Nifti1Image(label.astype(np.uint8), affine))
    im = np.asanyarray(img.dataobj)
    lb = np.asanyarray(lab.dataobj)
    zooms = img.header.get_zooms()[:3]
    fg = lb > 0
    if fg.any():
        # Per view, the slice with the most lesion voxels: a slice through the centre
        # of mass can miss every lesion when there are several.
        x, y, z = (int(np.argmax(fg.sum(axis=tuple(b for b in range(3) if b != a)))) for a in range(3))
    else:
        x, y, z = (s // 2 for s in lb.shape)
    return [
        (im[:, :, z], lb[:, :, z], zooms[1] / zooms[0]),  # axial: x right, y up
        (im[:, y, :], lb[:, y, :], zooms[2] / zooms[0]),  # coronal: x right, z up
        (im[x, :, :], lb[x, :, :], zooms[2] / zooms[1]),  # sagittal: y right, z up
    ]


def gallery_figure(out: str | os.PathLike, case_ids: Sequence[str] | int | None = None,
                   columns: int = 3, thumb_inches: float = 1.6):
    """A matplotlib ``Figure`` (Agg) of the chosen cases; the studio embeds the same figure.

    Parameters
    ----------
    out : path
        Exported dataset folder.
    case_ids : list of str, int or None
        Cases to show, or how many to pick evenly (default 12).
    columns : int
        Cases per row (each case takes three panels).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    ids = gallery_cases(out, case_ids)
    records = _records(out)
    gains = gain_mismatches(records)
    cols = max(1, min(int(columns), len(ids)))
    rows = int(np.ceil(len(ids) / cols))
    fig = Figure(figsize=(3 * cols * thumb_inches, rows * (thumb_inches + 0.3)), facecolor="black")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, 3 * cols, wspace=0.02, hspace=0.15, left=0.01, right=0.99,
                            top=1 - 0.25 / rows, bottom=0.01)
    for n, cid in enumerate(ids):
        img = nib.load(out / "imagesTr" / f"{cid}_0000.nii.gz")
        label = np.asanyarray(nib.load(out / "labelsTr" / f"{cid}.nii.gz").dataobj)
        image = np.asanyarray(img.dataobj).astype(np.float32)
        fg = image[image > 0] if (image > 0).any() else image.ravel()
        vmin, vmax = np.percentile(fg, [1, 99.5])
        r, c0 = divmod(n, cols)
        for k, (im, lb, aspect) in enumerate(triplanar(image, label, img.affine)):
            ax = fig.add_subplot(grid[r, 3 * c0 + k])
            ax.imshow(im.T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect,
                      interpolation="nearest")
            if lb.any():
                ax.contour((lb > 0).T.astype(float), levels=[0.5], colors="red", linewidths=0.6)
            ax.set_axis_off()
            if k == 0:
                title = case_title(cid, records.get(cid))
                if cid in gains:  # pasted across another gain with intensity_match=none
                    ax.set_title(f"{title} {GAIN_MARK} {gains[cid]:.0%}", color="orange", fontsize=7, loc="left")
                else:
                    ax.set_title(title, color="white", fontsize=7, loc="left")
            if k < 2:  # mark patient right on axial and coronal views
                ax.text(0.97, 0.03, "R", transform=ax.transAxes, color="yellow", fontsize=6,
                        ha="right", va="bottom")
    return fig


def render_gallery(out: str | os.PathLike, case_ids: Sequence[str] | int | None = None,
                   out_png: str | os.PathLike | None = None, dpi: int = 120, **kwargs) -> Path:
    """Save the contact sheet of :func:`gallery_figure` as a PNG (default ``OUT/qa_gallery.png``).

    Returns
    -------
    Path of the PNG.
    """
    from napari_lesionmix.io.atomic import write_bytes_atomic

    fig = gallery_figure(out, case_ids, **kwargs)
    png = Path(out_png) if out_png is not None else Path(out) / "qa_gallery.png"
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return write_bytes_atomic(buf.getvalue(), png)
