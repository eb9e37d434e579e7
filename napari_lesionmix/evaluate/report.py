"""``results.csv``, ``summary.md`` and ``downstream.png`` from the finished runs.

Intervals are 95 % Student-t intervals over the (seed, test case) rows of a
condition and K; differences to "none" are paired on (seed, test case), the
same network seed and test scan. With few seeds and few test cases these rows
are not independent (one trained network predicts several cases), so the
intervals are optimistic: read them as a guide, and look at the plot's
per-seed points.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesionmix.evaluate.metrics import METRICS
from napari_lesionmix.evaluate.protocol import NONE

#: Calibration columns of results.csv (the threshold with the best Dice on the run's validation cases).
CALIBRATION = ("val_threshold", "dice_at_val_threshold", "lesion_f1_at_val_threshold", "pred_ml_at_val_threshold")
#: Columns of results.csv.
COLUMNS = ("condition", "k", "seed", "test_case", "train_cases", "n_synthetic", *METRICS, *CALIBRATION)
#: (column, label, digits) of the summary table: the first three with their paired difference to none.
SUMMARY = (("dice", "Dice", 3), ("lesion_f1", "lesion F1", 3), ("volume_ratio", "pred/true vol.", 2),
           ("lesion_precision", "precision", 3), ("lesion_recall", "recall", 3), ("overlap_f1", "overlap F1", 3),
           ("hd95_mm", "HD95 mm", 2), ("nsd", "NSD", 3))


def rows_of(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (condition, K, seed, test case)."""
    out = []
    for run in runs:
        for r in run["rows"]:
            out.append({"condition": run["condition"], "k": run["k"], "seed": run["seed"],
                        "test_case": r["case_id"], "train_cases": " ".join(run["train_cases"]),
                        "n_synthetic": run["n_synthetic"],
                        # a run recorded before a metric existed has no value for it
                        **{m: r.get(m, float("nan")) for m in (*METRICS, *CALIBRATION)}})
    return sorted(out, key=lambda r: (r["k"], r["condition"] != NONE, r["condition"], r["seed"], r["test_case"]))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval (the interval is the mean itself for one value).

    Undefined values (NaN: HD95 of a case with an empty prediction or reference) are left out;
    with none defined the result is NaN.
    """
    from scipy import stats

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def _fmt(stat: tuple[float, float, float], digits: int, signed: bool = False) -> str:
    m, lo, hi = stat
    s = "+" if signed else ""
    return f"{m:{s}.{digits}f} [{lo:{s}.{digits}f}, {hi:{s}.{digits}f}]"


def summary_table(rows: Sequence[dict[str, Any]], conditions: Sequence[str], sizes: Sequence[int]) -> list[str]:
    """Markdown lines: per K and condition, each metric's mean [95 % CI] and the paired difference to none."""
    head = ["K", "condition", "runs"]
    for _, label, _ in SUMMARY[:3]:
        head += [label, f"Δ {label} vs none"]
    head += [label for _, label, _ in SUMMARY[3:]] + ["predicted / true mL", "Dice @ val. threshold"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in sizes:
        base = {(r["seed"], r["test_case"]): r for r in rows if r["k"] == k and r["condition"] == NONE}
        for cond in conditions:
            mine = [r for r in rows if r["k"] == k and r["condition"] == cond]
            if not mine:
                continue
            cells = [str(k), cond, str(len({r["seed"] for r in mine}))]
            for col, _, d in SUMMARY[:3]:
                cells.append(_fmt(mean_ci([r[col] for r in mine]), d))
                pairs = [r[col] - base[(r["seed"], r["test_case"])][col] for r in mine
                         if (r["seed"], r["test_case"]) in base]
                cells.append("-" if cond == NONE or not pairs else _fmt(mean_ci(pairs), d, signed=True))
            for col, _, d in SUMMARY[3:]:
                cells.append(_fmt(mean_ci([r[col] for r in mine]), d))
            cells.append(f"{np.mean([r['pred_ml'] for r in mine]):.2f} / {np.mean([r['true_ml'] for r in mine]):.2f}")
            cells.append(_fmt(mean_ci([r["dice_at_val_threshold"] for r in mine]), 3))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pairs(rows, cond, k, col):
    base = {(r["seed"], r["test_case"]): r for r in rows if r["k"] == k and r["condition"] == NONE}
    return [r[col] - base[(r["seed"], r["test_case"])][col] for r in rows
            if r["k"] == k and r["condition"] == cond and (r["seed"], r["test_case"]) in base]


def _per_seed(rows, cond, k, col):
    by: dict[int, list[float]] = {}
    for r in rows:
        if r["k"] == k and r["condition"] == cond and np.isfinite(r[col]):
            by.setdefault(r["seed"], []).append(r[col])
    return [float(np.mean(v)) for _, v in sorted(by.items())]


def verdict(rows: Sequence[dict[str, Any]], cond: str, k: int) -> tuple[str, str] | None:
    """``(word, sentence)``: whether ``cond`` helped, hurt or made no difference (Dice), beyond the seed spread.

    Helped (hurt): the 95 % interval of the paired Dice difference to none lies
    above (below) 0 **and** the mean difference is larger than the spread
    (max - min) of none's per-seed mean Dice. Otherwise: no difference beyond
    the seed spread. Lesion F1, the volume ratio and the Dice difference at
    each run's validation threshold (the calibration view) are given beside it.
    """
    d = _pairs(rows, cond, k, "dice")
    if cond == NONE or not d:
        return None
    m, lo, hi = mean_ci(d)
    spread = _per_seed(rows, NONE, k, "dice")
    spread = max(spread) - min(spread) if len(spread) > 1 else 0.0
    if lo > 0 and m > spread:
        word = "helped"
    elif hi < 0 and -m > spread:
        word = "hurt"
    else:
        word = "made no difference beyond the seed spread"
    f = mean_ci(_pairs(rows, cond, k, "lesion_f1"))
    vr = np.nanmean([r["volume_ratio"] for r in rows if r["k"] == k and r["condition"] == cond])
    vr0 = np.nanmean([r["volume_ratio"] for r in rows if r["k"] == k and r["condition"] == NONE])
    cal = [r for r in rows if r["k"] == k and r["condition"] in (cond, NONE) and "dice_at_val_threshold" in r]
    cal = _pairs(cal, cond, k, "dice_at_val_threshold") if cal else []
    cal_txt = f", Dice at the validation threshold {_fmt(mean_ci(cal), 3, True)}" if cal else ""
    sentence = (f"**{cond}** (K = {k}) {word}: Dice {_fmt((m, lo, hi), 3, True)} against none (none's seed "
                f"spread {spread:.3f}), lesion F1 {_fmt(f, 3, True)}, predicted/true volume {vr:.2f} "
                f"(none {vr0:.2f}){cal_txt}.")
    return word, sentence


def calibration_table(rows: Sequence[dict[str, Any]], conditions: Sequence[str], sizes: Sequence[int]) -> list[str]:
    """Markdown lines: test Dice and lesion F1 at 0.5 beside those at the threshold chosen on validation."""
    lines = ["| K | condition | val. threshold | Dice @ 0.5 | Dice @ val. threshold | lesion F1 @ 0.5 | "
             "lesion F1 @ val. threshold | pred mL @ 0.5 | pred mL @ val. threshold | true mL |",
             "|" + "---|" * 10]
    for k in sizes:
        for cond in conditions:
            mine = [r for r in rows if r["k"] == k and r["condition"] == cond]
            if not mine:
                continue
            mean = {c: float(np.nanmean([r[c] for r in mine])) for c in
                    ("val_threshold", "dice", "dice_at_val_threshold", "lesion_f1", "lesion_f1_at_val_threshold",
                     "pred_ml", "pred_ml_at_val_threshold", "true_ml")}
            lines.append(f"| {k} | {cond} | {mean['val_threshold']:.2f} | {mean['dice']:.3f} | "
                         f"{mean['dice_at_val_threshold']:.3f} | {mean['lesion_f1']:.3f} | "
                         f"{mean['lesion_f1_at_val_threshold']:.3f} | {mean['pred_ml']:.2f} | "
                         f"{mean['pred_ml_at_val_threshold']:.2f} | {mean['true_ml']:.2f} |")
    return lines


def protocol_lines(runs: Sequence[dict[str, Any]], config) -> list[str]:
    """Which sampling protocol ran, in words, with the steps the runs took and the synthetic lesion load."""
    if config.sampling == "pooled":
        how = ("**pooled** (as nnU-Net and the papers: the N synthetic cases join the K real ones and every patch "
               f"comes from a case drawn uniformly, {config.foreground_fraction:.0%} of patches centred near a lesion)")
    else:
        how = (f"**ratio** (a fixed {config.synthetic_ratio:.0%} of the patches from synthetic cases, "
               f"{config.foreground_fraction:.0%} centred near a lesion)")
    if config.extra_iterations:
        how += (f", **synthetic patches added in extra steps**: every condition of a seed trained on exactly the "
                f"{config.iterations * config.batch} real patches of `none`")
    else:
        how += (f", **fixed {config.iterations} steps**: synthetic patches replace real ones, so a method sees "
                "fewer real patches than `none`")
    steps = sorted({(r["condition"], r.get("steps", r["iterations"]), round(r.get("synthetic_share", 0.0), 3))
                    for r in runs})
    parts = [f"{c} {n} steps ({sh:.0%} synthetic)" for c, n, sh in steps]
    lines = [f"Sampling protocol: {how}. Steps per run: {'; '.join(parts) or '-'}."]
    loads = [(r["condition"], r["synthetic_load_ml"], r["real_load_ml"]) for r in runs if "synthetic_load_ml" in r]
    if loads:
        by: dict[str, list[tuple[float, float]]] = {}
        for c, sl, rl in loads:
            by.setdefault(c, []).append((sl, rl))
        desc = "; ".join(f"{c} {np.mean([a for a, _ in v]):.2f} mL vs real {np.mean([b for _, b in v]):.2f} mL"
                         for c, v in by.items())
        lines += ["", f"Synthetic cases: chosen by lesion load **{config.synthetic_load}**"
                      + (f" from {config.load_candidates} x N candidates" if config.synthetic_load != "all" else "")
                      + f"; mean lesion load per synthetic case: {desc}."]
    return lines


def curve_table(runs: Sequence[dict[str, Any]], conditions: Sequence[str], sizes: Sequence[int]) -> list[str]:
    """Markdown lines: mean training loss at a quarter, half, three quarters and the end of training."""
    marks = None
    lines: list[str] = []
    for k in sizes:
        for cond in conditions:
            curves = [r["curve"] for r in runs if r["k"] == k and r["condition"] == cond and r["curve"]]
            if not curves:
                continue
            total = curves[0][-1][0]
            if marks is None:
                marks = sorted({max(1, int(round(total * f))) for f in (0.25, 0.5, 0.75, 1.0)})
                lines += ["| K | condition | " + " | ".join(f"loss @ {m}" for m in marks) + " |",
                          "|" + "---|" * (2 + len(marks))]
            vals = []
            for m in marks:
                at = [min(c, key=lambda p: abs(p[0] - m))[1] for c in curves]
                vals.append(f"{np.mean(at):.3f}")
            lines.append(f"| {k} | {cond} | " + " | ".join(vals) + " |")
    return lines


def write_summary(path: Path, runs: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], config,
                  test_ids: Sequence[str], pending: int, seconds: float) -> None:
    conds, sizes = config.conditions, config.train_sizes
    verdicts = [v[1] for k in sizes for c in conds if (v := verdict(rows, c, k))]
    lines = [
        "# Downstream evaluation",
        "",
        f"Dataset `{config.dataset}`; held-out test cases: {', '.join(test_ids)} (never trained on, never a "
        f"source). Training sizes K = {', '.join(map(str, sizes))}; seeds 0-{config.seeds - 1}, the same K real "
        f"cases and initial weights for every condition. Each run: MONAI 3D U-Net {list(config.channels)}, "
        f"{config.iterations} iterations of {config.batch} patches of {config.patch}³"
        + (f" (cases read at 1/{config.downsample} resolution)" if config.downsample > 1 else "")
        + f", Dice + BCE, flips and small intensity changes; with a method, {config.n_synthetic} synthetic "
        "cases made from the K training cases only. Sliding-window inference (50 % overlap, Gaussian weights), "
        "threshold 0.5; lesions are 26-connected components, matched one to one to the reference's at IoU >= 0.1 "
        "(a component merging several lesions, or far larger than its lesion, counts as the error it is); "
        "'overlap F1' is the old any-overlap count, which a whole-volume prediction games.",
        "",
        *protocol_lines(runs, config),
        "",
        "## Verdict",
        "",
        *(f"- {v}" for v in verdicts),
        *(["- (no method run beside none yet)"] if not verdicts else []),
        "",
        "## Results",
        "",
        "Mean [95 % t-interval] over (seed, test case) rows; Δ is the paired difference to `none` (same seed, "
        "same test case). The rows of one seed share a network, so the intervals are optimistic.",
        "",
        *summary_table(rows, conds, sizes),
        "",
        "## Calibration",
        "",
        "The threshold with the best Dice on each run's validation cases (training-pool cases outside its K; the "
        "training cases themselves when K is the whole pool), applied to the test cases, beside 0.5:",
        "",
        *calibration_table(rows, conds, sizes),
        "",
        "Learning curve (mean training loss, averaged over seeds):",
        "",
        *curve_table(runs, conds, sizes),
        "",
        f"Runs finished: {len(runs)}" + (f"; {pending} still to run (rerun the same command to finish)."
                                         if pending else ".") + f" Compute time of the runs: {seconds / 60:.1f} min.",
        "",
        "![Dice and lesion F1 per condition; every point is one seed's mean over the test cases](downstream.png)",
        "",
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def write_plot(path: Path, rows: Sequence[dict[str, Any]], conditions: Sequence[str], sizes: Sequence[int]) -> None:
    """Dice and lesion F1 per condition for each K; every seed (its mean over the test cases) is a point."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = (("dice", "Dice"), ("lesion_f1", "lesion F1"))
    fig, axes = plt.subplots(len(metrics), len(sizes), figsize=(1.2 + 1.1 * len(conditions) * len(sizes), 6),
                             squeeze=False, sharey="row")
    for j, k in enumerate(sizes):
        for i, (col, label) in enumerate(metrics):
            ax = axes[i][j]
            for x, cond in enumerate(conditions):
                per_seed = {}
                for r in rows:
                    if r["k"] == k and r["condition"] == cond:
                        per_seed.setdefault(r["seed"], []).append(r[col])
                if not per_seed:
                    continue
                ys = [float(np.mean(v)) for _, v in sorted(per_seed.items())]
                xs = x + np.linspace(-0.12, 0.12, len(ys)) if len(ys) > 1 else [x]
                ax.scatter(xs, ys, s=18, color="C0" if cond == NONE else "C1", zorder=3)
                ax.hlines(np.mean(ys), x - 0.25, x + 0.25, color="k", lw=1.5, zorder=4)
            ax.set_xlim(-0.5, len(conditions) - 0.5)  # the same places for every K, even one without runs yet
            ax.set_xticks(range(len(conditions)))
            ax.set_xticklabels(conditions, rotation=35, ha="right", fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(axis="y", alpha=0.3)
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(f"K = {k} real training cases")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
