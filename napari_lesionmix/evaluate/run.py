"""The evaluation's main algorithm: plan the runs, make their synthetic data, train, score, report (:func:`run_evaluation`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.evaluate.protocol import (
    NONE,
    EvalConfig,
    Split,
    choose_synthetic,
    make_split,
    make_synthetic,
    parse_condition,
    read_json,
)

#: What the report folder holds (all of it ours: ``--overwrite`` removes only these).
OWN_FILES = ("eval_config.json", "results.csv", "summary.md", "downstream.png", "runs", "synthetic")


@dataclass
class EvalReport:
    """What an evaluation did.

    Attributes
    ----------
    out : Path
    test_ids : tuple of str
    n_runs : int
        Runs the finished evaluation holds.
    n_done_before : int
        Runs found finished from an earlier call (resume).
    runs : list of dict
        Every finished run's record (``runs/*.json``).
    seconds : float
    """

    out: Path
    test_ids: tuple[str, ...]
    n_runs: int
    n_done_before: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def run_name(condition: str, k: int, seed: int) -> str:
    return f"{condition.replace('+', '_')}_K{k}_seed{seed}"


def _prepare_out(config: EvalConfig) -> Path:
    """The report folder: new, ours with the same settings (resume), or ours replaced with ``overwrite``."""
    out = Path(config.out)
    ident = config.identity()
    cfg_file = out / "eval_config.json"
    if out.exists() and not out.is_dir():
        raise LesionMixError(f"Report folder '{out}' is a file.")
    if out.is_dir() and any(out.iterdir()):
        if not cfg_file.is_file():
            raise LesionMixError(f"Report folder '{out}' holds files that no evaluation wrote; choose another folder.")
        # Only finished work counts: what a refused or failed run left (a partial synthetic export)
        # must not block its corrected rerun.
        made = any((out / "runs").glob("*.json")) or any((out / "synthetic").glob("*/*/dataset.json"))
        if read_json(cfg_file) != ident:
            if made and not config.overwrite:
                raise LesionMixError(f"Report folder '{out}' holds an evaluation with other settings; use "
                                     "--overwrite to replace it, or another folder.")
            for name in OWN_FILES:  # all ours (checked above): nothing finished, or --overwrite
                p = out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    tmp = cfg_file.with_name(cfg_file.name + ".tmp")
    tmp.write_text(json.dumps(ident, indent=2))
    os.replace(tmp, cfg_file)
    return out


def _load_volumes(dataset, ids, downsample: int = 1):
    from napari_lesionmix.evaluate.train import volume_from_case

    vols = []
    for cid in ids:
        rec = dataset[cid]
        vols.append(volume_from_case(rec.load(), rec.load_brain_mask(), downsample))
    return vols


def validation_ids(split: Split, k: int, seed: int) -> tuple[tuple[str, ...], bool]:
    """Cases of the calibration: the pool's cases outside this run's K (never the test cases).

    When K is the whole pool there are none; then the training cases
    themselves are used, and the second value (``True``) says so.
    """
    train = set(split.train_ids(k, seed))
    rest = tuple(c for c in split.pool_ids if c not in train)
    return (rest, False) if rest else (tuple(sorted(train)), True)


def _execute(config: EvalConfig, split: Split, condition: str, k: int, seed: int, syn_folder: str | None,
             sources: list[str], device: str, path: str, syn_ids: list[str] | None = None,
             load_info: dict[str, Any] | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train and score one run; write its record atomically to ``path`` and return it."""
    import numpy as np
    import torch

    from napari_lesionmix.evaluate.metrics import case_metrics, dice, lesion_detection
    from napari_lesionmix.evaluate.train import (
        THRESHOLD,
        best_threshold,
        synthetic_share,
        train_and_predict,
    )
    from napari_lesionmix.io.dataset import discover_dataset

    torch.set_num_threads(int(config.threads))
    t0 = time.perf_counter()
    ds = int(config.downsample)
    train_ids = split.train_ids(k, seed)
    real = _load_volumes(split.dataset, train_ids, ds)
    test = _load_volumes(split.dataset, split.test_ids, ds)
    val_ids, val_is_train = validation_ids(split, k, seed)
    val = real if val_is_train else _load_volumes(split.dataset, val_ids, ds)
    synthetic = []
    if syn_folder is not None:
        syn = discover_dataset(syn_folder)
        synthetic = _load_volumes(syn, syn_ids if syn_ids is not None else syn.case_ids, ds)
    probs, val_probs, curve, steps = train_and_predict(
        real, synthetic, test, seed=seed, iterations=config.iterations, batch=config.batch, patch=config.patch,
        channels=config.channels, lr=config.lr, synthetic_ratio=config.synthetic_ratio,
        foreground_fraction=config.foreground_fraction, device=device, curve_every=config.curve_every,
        sampling=config.sampling, extra_iterations=config.extra_iterations, validation=val, progress=progress,
    )
    thr, val_dice = best_threshold(val_probs, [v.label for v in val])
    val_dice_05 = best_threshold_dice(val_probs, val, THRESHOLD)
    rows = []
    for p, v in zip(probs, test, strict=True):
        row = {"case_id": v.case_id, **case_metrics(p > THRESHOLD, v.label, v.voxel_ml, v.spacing,
                                                    config.nsd_tolerance_mm)}
        cal = p > thr
        row.update({"val_threshold": thr, "dice_at_val_threshold": dice(cal, v.label),
                    "lesion_f1_at_val_threshold": lesion_detection(cal, v.label)[2],
                    "pred_ml_at_val_threshold": float(np.count_nonzero(cal)) * v.voxel_ml})
        rows.append(row)
    record = {
        "condition": condition, "k": int(k), "seed": int(seed), "train_cases": list(train_ids),
        "test_cases": list(split.test_ids), "n_synthetic": len(synthetic), "synthetic_sources": sorted(sources),
        "synthetic_cases": list(syn_ids or []), **(load_info or {}),
        "iterations": int(config.iterations), "steps": int(steps), "sampling": config.sampling,
        "extra_iterations": bool(config.extra_iterations),
        "synthetic_share": synthetic_share(config.sampling, len(real), len(synthetic), config.synthetic_ratio),
        "validation_cases": list(val_ids), "validation_is_train": bool(val_is_train),
        "val_threshold": thr, "val_dice_at_threshold": val_dice, "val_dice_at_0.5": val_dice_05,
        "device": device, "seconds": time.perf_counter() - t0, "curve": curve, "rows": rows,
    }
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return record


def best_threshold_dice(probs, vols, threshold: float) -> float:
    """Dice pooled over ``vols`` at ``threshold``."""
    import numpy as np

    inter = sum(int(np.count_nonzero((p > threshold) & v.label)) for p, v in zip(probs, vols, strict=True))
    total = sum(int(np.count_nonzero(p > threshold)) + int(np.count_nonzero(v.label))
                for p, v in zip(probs, vols, strict=True))
    return 2.0 * inter / total if total else 1.0


def _check_no_leak(split: Split, condition: str, k: int, seed: int, sources: set[str]) -> None:
    """Refuse a run whose synthetic cases carry a voxel of a test case or of a case outside its K."""
    train = set(split.train_ids(k, seed))
    bad = sorted(sources - train)
    if bad:
        raise LesionMixError(f"Synthetic cases of {condition} (K = {k}, seed {seed}) carry voxels of case "
                             f"'{bad[0]}', which is not one of the run's training cases; nothing was trained.")


def _check_inputs(config: EvalConfig, split: Split) -> None:
    """Everything the runs would refuse later, refused before the report folder exists.

    The report folder may not be, hold or lie inside the dataset; soft labels
    (which export refuses) and NaN or infinite source voxels are found here, under
    the user's own file names, not the links the synthetic exports read.
    """
    import numpy as np

    from napari_lesionmix.augment.registry import get_method
    from napari_lesionmix.io.atomic import check_not_input
    from napari_lesionmix.io.nifti import read_nifti

    check_not_input(config.out, [config.dataset], "Report folder")
    for condition in config.conditions:
        method, _ = parse_condition(condition)
        if method == NONE:
            continue
        m = get_method(method)
        if m.soft_labels(m.Options.from_dict(config.options.get(m.name, {}))):
            raise LesionMixError(f"Condition {condition} makes soft (fractional) labels, which the synthetic "
                                 f"datasets cannot hold; evaluate it with --option {m.name}.label=hard.")
    for cid in (*split.pool_ids, *split.test_ids):
        for path in split.dataset[cid].image_paths:
            _, data = read_nifti(path, "Source image")
            if data.dtype.kind == "f" and not (np.isfinite(data.min()) and np.isfinite(data.max())):
                raise LesionMixError(f"Source image '{path}' of case '{cid}' holds NaN or infinite voxels; fix or "
                                     "leave out that case (--cases).")


def run_evaluation(config: EvalConfig, progress: Callable[[int, int], Any] | None = None,
                   log: Callable[[str], Any] | None = None) -> EvalReport:
    """Run (or complete) the evaluation described by ``config``.

    Parameters
    ----------
    config : EvalConfig
    progress : callable(done, total), optional
        Training iterations done and in all (finished runs count whole): a
        progress bar's input, with its ETA.
    log : callable(str), optional
        One line per step (synthetic data made, run finished).

    Returns
    -------
    EvalReport

    Raises
    ------
    LesionMixError
        Bad settings, a dataset too small for the split, a report folder made
        with other settings, a missing ``monai``, or a failed export.
    """
    try:
        import monai  # noqa: F401
    except ImportError:
        raise LesionMixError("lesionmix evaluate needs MONAI: pip install 'napari-lesionmix[monai]'.") from None
    from napari_lesionmix.evaluate.report import rows_of, write_csv, write_plot, write_summary
    from napari_lesionmix.evaluate.train import pick_device

    t0 = time.perf_counter()
    split = make_split(config)
    device = pick_device(config.device)
    _check_inputs(config, split)
    out = _prepare_out(config)
    say = log or (lambda _msg: None)
    plan = [(c, k, s) for k in config.train_sizes for s in range(config.seeds) for c in config.conditions]
    steps_of = {key: planned_steps(config, key[0], key[1]) for key in plan}
    total = sum(steps_of.values())
    done_runs: dict[tuple[str, int, int], dict[str, Any]] = {}
    for c, k, s in plan:
        p = out / "runs" / f"{run_name(c, k, s)}.json"
        if p.is_file():
            try:
                done_runs[(c, k, s)] = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                p.unlink(missing_ok=True)  # a torn record: that run is redone
    report = EvalReport(out, split.test_ids, len(plan), n_done_before=len(done_runs))
    state = {"done": sum(steps_of[key] for key in done_runs)}

    def advance(n: int) -> None:
        state["done"] += n
        if progress is not None:
            progress(state["done"], total)

    def write_reports() -> None:
        runs = [done_runs[key] for key in plan if key in done_runs]
        rows = rows_of(runs)
        write_csv(rows, out / "results.csv")
        secs = sum(r.get("seconds", 0.0) for r in runs)
        write_summary(out / "summary.md", runs, rows, config, split.test_ids, len(plan) - len(runs), secs)
        write_plot(out / "downstream.png", rows, config.conditions, config.train_sizes)

    advance(0)
    todo = [key for key in plan if key not in done_runs]
    # Synthetic data first (serial: export is cached and resumable per folder), checked for leaks.
    jobs = []
    for c, k, s in todo:
        syn_folder, sources, syn_ids, info = None, set(), None, None
        if c != NONE:
            folder, sources = make_synthetic(config, split, c, k, s, out / "synthetic")
            _check_no_leak(split, c, k, s, sources)
            syn_folder = os.fspath(folder)
            syn_ids, info = choose_synthetic(config, split, k, s, folder)
            say(f"synthetic: {c} K={k} seed={s}: {len(syn_ids)} of {info['n_candidates']} cases in '{folder}' "
                f"(lesion load {info['synthetic_load_ml']:.2f} mL vs real {info['real_load_ml']:.2f})")
        jobs.append((c, k, s, syn_folder, sorted(sources), os.fspath(out / "runs" / f"{run_name(c, k, s)}.json"),
                     syn_ids, info))
    try:
        if config.workers == 1 or len(jobs) <= 1:
            for c, k, s, syn, src, path, ids, info in jobs:
                done_runs[(c, k, s)] = _execute(config, split, c, k, s, syn, src, device, path, ids, info,
                                                progress=advance)
                say(_run_line(done_runs[(c, k, s)]))
                write_reports()
        else:
            import multiprocessing as mp

            # spawn: a forked child would inherit torch's thread pools (and a CUDA context) in a bad state.
            with ProcessPoolExecutor(config.workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_execute, config, split, c, k, s, syn, src, device, path, ids, info): (c, k, s)
                           for c, k, s, syn, src, path, ids, info in jobs}
                for fut in as_completed(futures):
                    done_runs[futures[fut]] = fut.result()
                    advance(steps_of[futures[fut]])
                    say(_run_line(done_runs[futures[fut]]))
                    write_reports()
    finally:
        if done_runs:
            write_reports()
    report.runs = [done_runs[key] for key in plan if key in done_runs]
    report.seconds = time.perf_counter() - t0
    return report


def planned_steps(config: EvalConfig, condition: str, k: int) -> int:
    """Training steps of one run (more than ``iterations`` when synthetic patches are added)."""
    from napari_lesionmix.evaluate.train import synthetic_share

    n = 0 if condition == NONE else int(config.n_synthetic)
    share = synthetic_share(config.sampling, int(k), n, config.synthetic_ratio)
    if not config.extra_iterations or share <= 0:
        return int(config.iterations)
    import math

    return int(math.ceil(int(config.iterations) * int(config.batch) / (1.0 - share) / int(config.batch)))


def _run_line(run: dict[str, Any]) -> str:
    import numpy as np

    dice = np.mean([r["dice"] for r in run["rows"]])
    f1 = np.mean([r["lesion_f1"] for r in run["rows"]])
    return (f"run {run['condition']} K={run['k']} seed={run['seed']}: Dice {dice:.3f}, lesion F1 {f1:.3f} "
            f"({run['seconds']:.0f} s)")
