"""Segmentation metrics of one prediction against its reference: voxel Dice, lesion-wise detection, volumes.

Lesions are the 26-connected components of a binary mask (the definition the
sample data's ``subjects.json`` and LesionMix use). A reference lesion counts
as *found* when any predicted voxel overlaps it; a predicted lesion counts as
*true* when it overlaps any reference voxel. Lesion recall, precision and F1
follow from those counts. The boundary metrics, the 95th-percentile Hausdorff
distance (HD95, mm) and the normalised surface distance (NSD: the share of both
boundaries within a tolerance of the other), are MONAI's
(:func:`monai.metrics.compute_hausdorff_distance`,
:func:`monai.metrics.compute_surface_dice`) with the voxel spacing.

Examples
--------
>>> import numpy as np
>>> ref = np.zeros((8, 8, 8), bool); ref[1:3, 1:3, 1:3] = True; ref[5:7, 5:7, 5:7] = True
>>> pred = np.zeros_like(ref); pred[1:3, 1:3, 1:2] = True
>>> m = case_metrics(pred, ref, voxel_ml=0.001)
>>> round(m["dice"], 3), m["lesion_recall"], m["lesion_precision"]
(0.4, 0.5, 1.0)
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

#: 26-connectivity in 3D: faces, edges and corners touch.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)

#: The metric columns of ``results.csv``, in order.
METRICS = ("dice", "lesion_f1", "lesion_recall", "lesion_precision", "abs_volume_diff_ml", "hd95_mm", "nsd",
           "true_ml", "pred_ml", "true_lesions", "pred_lesions")
#: Default NSD tolerance (mm): about one voxel of the 2 mm sample data, two of a 1 mm scan.
NSD_TOLERANCE_MM = 2.0


def lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a binary mask: ``(labels, count)``."""
    return ndimage.label(np.asarray(mask, bool), structure=CONNECTIVITY_26)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Voxel Dice of two binary masks; 1.0 when both are empty (nothing to find, nothing claimed)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _overlapping(labels: np.ndarray, other: np.ndarray) -> int:
    """How many components of ``labels`` touch ``other``."""
    hit = np.unique(labels[np.asarray(other, bool)])
    return int(np.count_nonzero(hit))


def surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing=(1.0, 1.0, 1.0),
                    tolerance_mm: float = NSD_TOLERANCE_MM) -> tuple[float, float]:
    """HD95 (mm) and NSD of two binary masks, through MONAI's metrics.

    Parameters
    ----------
    pred, ref : ndarray of bool
        Predicted and reference masks on one grid.
    spacing : sequence of 3 float
        Voxel size in mm along the array axes.
    tolerance_mm : float
        NSD tolerance: boundary voxels within this distance of the other boundary count as matched.

    Returns
    -------
    (float, float)
        ``(hd95_mm, nsd)``. Both masks empty: ``(0.0, 1.0)`` (nothing to find,
        nothing claimed); one empty: ``(nan, 0.0)`` (no distance to a missing
        boundary; the summary averages the defined ones).

    Raises
    ------
    LesionMixError
        MONAI is not installed, or the tolerance is not positive.
    """
    from napari_lesionmix.errors import LesionMixError

    if not float(tolerance_mm) > 0:
        raise LesionMixError(f"The NSD tolerance must be > 0 mm, got {tolerance_mm}.")
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any() and not ref.any():
        return 0.0, 1.0
    if not pred.any() or not ref.any():
        return float("nan"), 0.0
    try:
        import torch
        from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    except ImportError:
        raise LesionMixError("HD95 and NSD need MONAI: pip install 'napari-lesionmix[monai]'.") from None
    # MONAI takes (batch, class, *spatial) one-hot tensors; the lesion is the one class.
    p, r = torch.from_numpy(pred[None, None]), torch.from_numpy(ref[None, None])
    spacing = [float(x) for x in spacing]
    with warnings.catch_warnings():
        # MONAI's own call of a deprecated argument of its get_mask_edges: not the user's to act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(p, r, class_thresholds=[float(tolerance_mm)], include_background=True,
                                   spacing=spacing)
    return float(hd95.item()), float(nsd.item())


def case_metrics(pred: np.ndarray, ref: np.ndarray, voxel_ml: float, spacing=(1.0, 1.0, 1.0),
                 nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one case.

    Parameters
    ----------
    pred, ref : ndarray of bool
        Predicted and reference lesion masks on one grid.
    voxel_ml : float
        Volume of one voxel in millilitres (mm³ / 1000).
    spacing : sequence of 3 float
        Voxel size in mm, for HD95 and NSD (:func:`surface_metrics`).
    nsd_tolerance_mm : float
        NSD tolerance in mm.

    Returns
    -------
    dict
        ``lesion_recall`` is 1.0 when the reference has no lesion and
        ``lesion_precision`` is 1.0 when nothing is predicted (nothing missed,
        nothing claimed wrongly); F1 is their harmonic mean (0 when both are 0).
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"Prediction shape {pred.shape} differs from the reference shape {ref.shape}.")
    ref_lab, n_ref = lesions(ref)
    pred_lab, n_pred = lesions(pred)
    recall = _overlapping(ref_lab, pred) / n_ref if n_ref else 1.0
    precision = _overlapping(pred_lab, ref) / n_pred if n_pred else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    true_ml = float(ref.sum()) * voxel_ml
    pred_ml = float(pred.sum()) * voxel_ml
    hd95, nsd = surface_metrics(pred, ref, spacing, nsd_tolerance_mm)
    return {
        "dice": dice(pred, ref), "lesion_f1": f1, "lesion_recall": recall, "lesion_precision": precision,
        "abs_volume_diff_ml": abs(pred_ml - true_ml), "hd95_mm": hd95, "nsd": nsd,
        "true_ml": true_ml, "pred_ml": pred_ml,
        "true_lesions": int(n_ref), "pred_lesions": int(n_pred),
    }


def voxel_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL from a 4x4 affine."""
    return abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
