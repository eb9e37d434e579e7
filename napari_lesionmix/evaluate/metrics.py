"""Segmentation metrics of one prediction against its reference: voxel Dice, lesion-wise detection, volumes.

Lesions are the 26-connected components of a binary mask (the definition the
sample data's ``subjects.json`` and LesionMix use). A reference lesion counts
as *found* when any predicted voxel overlaps it; a predicted lesion counts as
*true* when it overlaps any reference voxel. Lesion recall, precision and F1
follow from those counts.

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

import numpy as np
from scipy import ndimage

#: 26-connectivity in 3D: faces, edges and corners touch.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)

#: The metric columns of ``results.csv``, in order.
METRICS = ("dice", "lesion_f1", "lesion_recall", "lesion_precision", "abs_volume_diff_ml", "true_ml",
           "pred_ml", "true_lesions", "pred_lesions")


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


def case_metrics(pred: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one case.

    Parameters
    ----------
    pred, ref : ndarray of bool
        Predicted and reference lesion masks on one grid.
    voxel_ml : float
        Volume of one voxel in millilitres (mm³ / 1000).

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
    return {
        "dice": dice(pred, ref), "lesion_f1": f1, "lesion_recall": recall, "lesion_precision": precision,
        "abs_volume_diff_ml": abs(pred_ml - true_ml), "true_ml": true_ml, "pred_ml": pred_ml,
        "true_lesions": int(n_ref), "pred_lesions": int(n_pred),
    }


def voxel_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL from a 4x4 affine."""
    return abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
