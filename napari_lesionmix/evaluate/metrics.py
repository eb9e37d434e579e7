"""Segmentation metrics of one prediction against its reference: voxel Dice, lesion-wise detection, volumes.

Lesions are the 26-connected components of a binary mask (the definition the
sample data's ``subjects.json`` and LesionMix use). Lesion-wise detection is a
**one-to-one matching** (:func:`match_lesions`), as the lesion-wise metrics of
the MS and BraTS challenges count it: a reference lesion and a predicted
component may be paired only when their intersection over union is at least
:data:`MATCH_IOU` (0.1), and each is paired at most once (the pairing that
maximises the summed IoU, Hungarian). So a predicted component that merges
several true lesions is the match of one of them at most (the others are
missed), and a component far larger than the lesion it covers (a whole-volume
prediction) matches nothing: it is one false positive and every lesion is
missed. Lesion recall = matched / reference lesions, precision = matched /
predicted components, F1 their harmonic mean. The old *any-overlap* count (a
lesion is found when any predicted voxel touches it), which a whole-volume
prediction games to F1 = 1, is kept as ``overlap_f1`` for comparison only. The boundary metrics, the 95th-percentile Hausdorff
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
>>> whole = case_metrics(np.ones_like(ref), ref, voxel_ml=0.001)      # predict everything
>>> whole["lesion_f1"], whole["overlap_f1"]
(0.0, 1.0)
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_lesionmix.io.morphology import connected_components

#: The metric columns of ``results.csv``, in order.
METRICS = ("dice", "lesion_f1", "lesion_recall", "lesion_precision", "abs_volume_diff_ml", "hd95_mm", "nsd",
           "true_ml", "pred_ml", "true_lesions", "pred_lesions", "volume_ratio", "overlap_f1")
#: Least intersection over union of a reference lesion and a predicted component for them to be a match.
MATCH_IOU = 0.1
#: Default NSD tolerance (mm): about one voxel of the 2 mm sample data, two of a 1 mm scan.
NSD_TOLERANCE_MM = 2.0


def lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a binary mask: ``(labels, count)``."""
    return connected_components(np.asarray(mask, bool))


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


def match_lesions(ref_lab: np.ndarray, n_ref: int, pred_lab: np.ndarray, n_pred: int,
                  min_iou: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """One-to-one matching of reference lesions and predicted components.

    Parameters
    ----------
    ref_lab, pred_lab : ndarray of int
        Component labels (0 = background), as :func:`lesions` returns them.
    n_ref, n_pred : int
        Their counts.
    min_iou : float
        Least intersection over union of an eligible pair.

    Returns
    -------
    list of (ref_id, pred_id, iou)
        The pairs of the eligible matching with the largest summed IoU; every
        component appears at most once.
    """
    from scipy.optimize import linear_sum_assignment

    if not n_ref or not n_pred:
        return []
    both = (ref_lab > 0) & (pred_lab > 0)
    pairs = ref_lab[both].astype(np.int64) * (n_pred + 1) + pred_lab[both]
    keys, inter = np.unique(pairs, return_counts=True)
    r_idx, p_idx = keys // (n_pred + 1), keys % (n_pred + 1)
    r_size = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)
    p_size = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    iou = inter / (r_size[r_idx] + p_size[p_idx] - inter)
    ok = iou >= float(min_iou)
    if not ok.any():
        return []
    r_idx, p_idx, iou = r_idx[ok], p_idx[ok], iou[ok]
    # Only components with an eligible pair enter the assignment (it stays small even with many specks).
    ru, ri = np.unique(r_idx, return_inverse=True)
    pu, pi = np.unique(p_idx, return_inverse=True)
    cost = np.zeros((len(ru), len(pu)))
    cost[ri, pi] = -iou
    rows, cols = linear_sum_assignment(cost)
    return [(int(ru[a]), int(pu[b]), float(-cost[a, b])) for a, b in zip(rows, cols, strict=True) if cost[a, b] < 0]


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
        Both come from the one-to-one matching of :func:`match_lesions`;
        ``overlap_f1`` is the any-overlap F1 (gameable, for comparison);
        ``volume_ratio`` is predicted / true volume (NaN with no true lesion).
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"Prediction shape {pred.shape} differs from the reference shape {ref.shape}.")
    ref_lab, n_ref = lesions(ref)
    pred_lab, n_pred = lesions(pred)
    matched = len(match_lesions(ref_lab, n_ref, pred_lab, n_pred))
    recall = matched / n_ref if n_ref else 1.0
    precision = matched / n_pred if n_pred else 1.0
    f1 = _f1(recall, precision)
    o_recall = _overlapping(ref_lab, pred) / n_ref if n_ref else 1.0
    o_precision = _overlapping(pred_lab, ref) / n_pred if n_pred else 1.0
    true_ml = float(ref.sum()) * voxel_ml
    pred_ml = float(pred.sum()) * voxel_ml
    hd95, nsd = surface_metrics(pred, ref, spacing, nsd_tolerance_mm)
    return {
        "dice": dice(pred, ref), "lesion_f1": f1, "lesion_recall": recall, "lesion_precision": precision,
        "abs_volume_diff_ml": abs(pred_ml - true_ml), "hd95_mm": hd95, "nsd": nsd,
        "true_ml": true_ml, "pred_ml": pred_ml,
        "true_lesions": int(n_ref), "pred_lesions": int(n_pred),
        "volume_ratio": pred_ml / true_ml if true_ml > 0 else float("nan"),
        "overlap_f1": _f1(o_recall, o_precision),
    }


def lesion_detection(pred: np.ndarray, ref: np.ndarray, min_iou: float = MATCH_IOU) -> tuple[float, float, float]:
    """Lesion-wise ``(recall, precision, F1)`` of the one-to-one matching (:func:`match_lesions`)."""
    ref_lab, n_ref = lesions(ref)
    pred_lab, n_pred = lesions(pred)
    matched = len(match_lesions(ref_lab, n_ref, pred_lab, n_pred, min_iou))
    recall = matched / n_ref if n_ref else 1.0
    precision = matched / n_pred if n_pred else 1.0
    return recall, precision, _f1(recall, precision)


def _f1(recall: float, precision: float) -> float:
    return 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0


def voxel_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL from a 4x4 affine."""
    return abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
