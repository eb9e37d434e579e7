"""The export's main algorithm: check everything, then make, write and verify the cases (:func:`export_dataset`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_lesionmix.augment.registry import get_method, method_names
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export.plan import (
    ExportConfig,
    ExportPlan,
    check_sources,
    make_plan,
)
from napari_lesionmix.export.provenance import source_fingerprint
from napari_lesionmix.export.verify import verify_dataset


@dataclass
class ExportReport:
    """What an export did.

    Attributes
    ----------
    out : Path
    n_total : int
        Cases the finished dataset holds (synthetic + real copies).
    n_written : int
        Cases made by this run.
    n_skipped : int
        Cases found finished from an earlier run (resume).
    stopped : bool
        ``should_stop`` ended the run early (no dataset.json was written; rerun to finish).
    seconds : float
    peak_rss_mb : dict
        Peak resident memory per worker process id, in MiB.
    worker_cpu_s : dict
        CPU seconds (user + system) each worker process had used by its last case.
    holdout : tuple of str
        Real cases held out (never a source, in no training fold).
    gain_mismatches : dict of str to float
        Synthetic cases pasted with ``intensity_match=none`` across normal-brain medians that differ by
        more than 25 %, and that difference (:func:`~napari_lesionmix.export.gallery.gain_mismatches`).
    missed_targets : dict of str to (float, float)
        LesionMix cases whose lesion load missed its target: ``{id: (reached mL, target mL)}``
        (:func:`missed_targets`).
    fold_share : float or None
        The mean fraction of the synthetic cases that a fold of ``splits_final.json`` trains on
        (``None`` without folds): a case trains only the folds that validate none of its sources.
    """

    out: Path
    n_total: int
    n_written: int = 0
    n_skipped: int = 0
    stopped: bool = False
    seconds: float = 0.0
    peak_rss_mb: dict[int, float] = field(default_factory=dict)
    worker_cpu_s: dict[int, float] = field(default_factory=dict)
    holdout: tuple[str, ...] = ()
    gain_mismatches: dict[str, float] = field(default_factory=dict)
    missed_targets: dict[str, tuple[float, float]] = field(default_factory=dict)
    fold_share: float | None = None

    @property
    def complete(self) -> bool:
        return not self.stopped

    def gain_warning(self) -> str | None:
        """One line about :attr:`gain_mismatches`, or ``None`` when there are none."""
        if not self.gain_mismatches:
            return None
        worst = max(self.gain_mismatches, key=self.gain_mismatches.get)
        return (f"warning: {len(self.gain_mismatches)} synthetic case(s) were pasted between scans whose "
                f"normal-brain medians differ by more than 25 % with intensity_match=none (largest: {worst}, "
                f"{self.gain_mismatches[worst]:.0%}); the QA gallery marks them; "
                "--option METHOD.intensity_match=brain-linear pastes in the host's scale.")


    def missed_target_warning(self) -> str | None:
        """One line about :attr:`missed_targets`, or ``None`` when every target was reached."""
        if not self.missed_targets:
            return None
        worst = max(self.missed_targets, key=lambda k: abs(self.missed_targets[k][0] - self.missed_targets[k][1]))
        reached, target = self.missed_targets[worst]
        return (f"warning: {len(self.missed_targets)} LesionMix case(s) missed their target lesion load (furthest: "
                f"{worst}, {reached:.1f} mL for a target of {target:.1f} mL): whole lesions are added or removed, so "
                "a host's own lesions can rule a target out; the manifest records each target and the load reached.")

    def fold_warning(self) -> str | None:
        """One line when the folds train on under half of the synthetic cases (:func:`~napari_lesionmix.export.writer.fold_share`), or ``None``."""
        if self.fold_share is None or self.fold_share >= 0.5:
            return None
        return (f"warning: each fold of splits_final.json trains on {self.fold_share:.0%} of the synthetic cases "
                "on average: a case trains only the folds that validate none of its sources (LesionMix pastes "
                "lesions from many cases), so a fold leaves most of them out; to train on all of them, hold "
                "out a test set (--holdout-fraction) and train nnU-Net's fold 'all'.")

    def warnings(self) -> list[str]:
        """Every warning line of the finished export (the CLI prints them, the studio shows them)."""
        return [w for w in (self.gain_warning(), self.missed_target_warning(), self.fold_warning()) if w]


def missed_targets(records: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """LesionMix cases of a manifest (``{id: record}``) whose load missed the target: ``{id: (reached, target)}``."""
    out = {}
    for cid, rec in records.items():
        params = rec.get("params") if isinstance(rec, dict) else None
        if isinstance(params, dict) and params.get("target_reached") is False:
            out[cid] = (float(params["reached_load_ml"]), float(params["target_load_ml"]))
    return out


def available_methods() -> list[str]:
    """Methods that can be exported: every registered one (:mod:`napari_lesionmix.augment.registry`)."""
    return method_names()


def render_gallery(out, case_ids=None, out_png=None, **kwargs):
    """Contact sheet of triplanar thumbnails; see :func:`napari_lesionmix.export.gallery.render_gallery`."""
    from napari_lesionmix.export.gallery import render_gallery as _render

    return _render(out, case_ids, out_png, **kwargs)


def _check_methods(config: ExportConfig) -> None:
    """Unknown methods, and methods whose labels would be soft, fail before any file is touched."""
    for name, _ in config.methods:
        method = get_method(name)
        options = method.Options.from_dict(config.options.get(method.name, {}))
        if method.soft_labels(options):
            raise LesionMixError(
                f"Method {name} makes soft (fractional) labels, which an nnU-Net dataset cannot hold; "
                f"export it with --option {name}.label=hard."
            )


#: What ``ExportConfig.harmonize`` may name besides a checkpoint file (the CLI's and the Export dock's choices).
HARMONIZERS = ("arhnet", "hm", "hm-ring", "composite")


def _check_harmonize_spec(spec: str | None) -> None:
    if not spec:
        return
    if spec.lower() in HARMONIZERS or Path(spec).is_file():
        return
    raise LesionMixError(
        f"Harmonizer '{spec}' is not {', '.join(repr(h) for h in HARMONIZERS)} or an existing checkpoint file."
    )


def _check_not_source(config: ExportConfig, plan: ExportPlan) -> None:
    """The output folder may not be, hold or lie inside the dataset, nor hold any file the export reads.

    Checked with or without ``overwrite``: replacing such a folder deletes the
    real scans, and writing beside a folder of case pairs makes it read as an
    nnU-Net dataset of synthetic cases from then on.
    """
    from napari_lesionmix.io.atomic import check_not_input

    check_not_input(config.out, [config.dataset], "Output folder")
    files = [p for c in plan.cases for p in (*c.image_paths, c.label_path, c.brain_mask_path)]
    extra = [config.splits] + ([config.harmonize] if config.harmonize and Path(config.harmonize).is_file() else [])
    check_not_input(config.out, [*files, *extra], "Output folder")


def _check_harmonizer(config: ExportConfig) -> None:
    """Load an ARHNet harmonizer once and run it on a small volume: a bad checkpoint fails before any file.

    A truncated or foreign file fails in the loader; a checkpoint with
    non-finite weights (a diverged training) would make every sample NaN, so
    its weights and its output on a test volume must be finite.
    """
    spec = config.harmonize
    if not spec or spec.lower() in ("hm", "hm-ring", "composite"):
        return
    import warnings

    import numpy as np

    try:
        from napari_lesionmix.harmonize import load_harmonizer
    except ImportError as exc:
        raise LesionMixError(f"Harmonization is not available in this installation ({exc}).") from None
    h = load_harmonizer(spec, config.harmonize_device)
    where = "the shipped ARHNet checkpoint" if spec.lower() == "arhnet" else f"checkpoint '{spec}'"
    weights = [v for v in h.generator.state_dict().values() if v.is_floating_point()]
    finite = all(bool(v.isfinite().all()) for v in weights)
    if finite:
        p = int(h.patch_size)
        rng = np.random.default_rng(0)
        image = (100 + 10 * rng.standard_normal((h.in_channels, p, p, p))).astype(np.float32)
        mask = np.zeros((p, p, p), bool)
        mask[p // 4: 3 * p // 4, p // 4: 3 * p // 4, p // 4: 3 * p // 4] = True
        image[:, mask] *= 1.5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the test volume is out of any domain; only finiteness matters
            out = np.asarray(h.harmonize(image, mask, label=mask.astype(np.uint8)))
        finite = bool(np.isfinite(out).all())
    if not finite:
        raise LesionMixError(f"Harmonizer {where} gives NaN or infinite values (its weights are not finite, "
                             "e.g. a diverged training); train it again or choose another harmonizer.")


def _check_folds(plan: ExportPlan) -> None:
    """Refuse, before any file, folds that the final ``splits_final.json`` would refuse.

    The folds depend on each synthetic case's sources; when every method
    mixes a donor into a host, those are the host and donor that
    :func:`~napari_lesionmix.export.plan.assign` draws, so the final check
    can be run on them up front. (A donor redrawn when no placement fits, and
    LesionMix's lesion bank, are only known after the sample; the final check
    still catches those, and a rerun with other folds resumes the cases made.)
    """
    from napari_lesionmix.export.plan import assign
    from napari_lesionmix.export.writer import splits_final

    config = plan.config
    if not (config.n_folds or config.splits) or not all(get_method(m).needs_donor for m, _ in config.methods):
        return
    records = {cid: {"id": cid, "method": "real", "sources": [cid]} for cid in plan.real_ids}
    for i in range(config.n):
        a, _ = assign(plan, i)
        records[a.case_id] = {"id": a.case_id, "method": a.method, "sources": sorted({a.host_id, a.donor_id})}
    splits_final(plan, records)


def check_settings(config: ExportConfig) -> ExportPlan:
    """The checks of an export's settings that read no voxel (quick enough for a GUI thread); the plan.

    Methods and their options, the harmonizer spec, the plan (hold-out,
    splits), an output that is or lies inside an input, the dataset names and
    the folds of ``splits_final.json``.
    """
    from napari_lesionmix.export.writer import check_dataset_names

    _check_methods(config)
    _check_harmonize_spec(config.harmonize)
    plan = make_plan(config)
    _check_not_source(config, plan)
    check_dataset_names(plan)
    _check_folds(plan)
    return plan


def check_export(config: ExportConfig) -> ExportPlan:
    """Every check of an export that can run before a case is made; the plan it would run.

    :func:`check_settings`, then every source file read and the harmonizer
    loaded and tried. :func:`export_dataset` runs it before its output folder
    exists (the studio's Export dock runs :func:`check_settings` before it
    starts), so a refused run leaves nothing behind that blocks its corrected rerun.

    Raises
    ------
    LesionMixError
        The first problem, in one sentence.
    """
    plan = check_settings(config)
    check_sources(plan)
    _check_harmonizer(config)
    return plan


def export_dataset(
    config: ExportConfig,
    progress: Callable[[int, int], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    client=None,
) -> ExportReport:
    """Write (or complete) the synthetic nnU-Net v2 dataset described by ``config``.

    Parameters
    ----------
    config : ExportConfig
    progress : callable(done, total), optional
        Called once at the start (counting cases already finished) and after every case.
    should_stop : callable() -> bool, optional
        Polled between cases (the studio's Cancel): running cases finish, the
        rest are left for a rerun.
    client : dask.distributed.Client, optional
        Run on this cluster instead of ``config.workers`` / ``config.scheduler``.

    Returns
    -------
    ExportReport

    Raises
    ------
    LesionMixError
        Bad settings or inputs, an output folder made with other settings
        (without ``overwrite``), a full disk, an unavailable method, or a
        failed integrity check.
    """
    from napari_lesionmix.export.provenance import DATASET_JSON_KEY, export_summary
    from napari_lesionmix.export.runners import run_tasks
    from napari_lesionmix.export.writer import (
        Manifest,
        ManifestAppender,
        clean_temporaries,
        dataset_json,
        finished_cases,
        fold_share,
        prepare_output,
        splits_final,
        write_json,
    )

    t0 = time.perf_counter()
    plan = check_export(config)
    out = Path(config.out)
    # The settings, and the source files' fingerprint: a resume over edited scans is refused.
    prepare_output(out, {**config.identity(), "sources": source_fingerprint(plan)}, config.overwrite)
    clean_temporaries(out)
    manifest = Manifest(out)
    _refuse_shrinking(out, plan, manifest)
    done = finished_cases(out, manifest)
    wanted = [cid for cid in plan.real_ids] + [plan.synthetic_id(i) for i in range(config.n)]
    done = {cid: rec for cid, rec in done.items() if cid in set(wanted)}
    tasks = [("real", cid) for cid in plan.real_ids if cid not in done]
    tasks += [("syn", i) for i in range(config.n) if plan.synthetic_id(i) not in done]
    report = ExportReport(out, len(wanted), n_skipped=len(done), holdout=plan.holdout_ids)
    total = len(wanted)
    if tasks:
        # An unfinished folder must not look finished: dataset.json only marks a complete export.
        (out / "dataset.json").unlink(missing_ok=True)
        # Keep only verified lines (drops a torn last line and records of lost files).
        manifest.rewrite(_ordered(done.values()))
    if progress is not None:
        progress(len(done), total)
    records = dict(done)
    # Manifest lines are written and fsynced on their own thread, in order, while the next cases are made.
    with ManifestAppender(manifest) as appender:
        for rec in run_tasks(plan, tasks, should_stop=should_stop, client=client):
            pid, rss, cpu = rec.pop("_pid", None), rec.pop("_peak_rss_mb", None), rec.pop("_cpu_s", None)
            if pid is not None:
                report.peak_rss_mb[pid] = max(rss or 0.0, report.peak_rss_mb.get(pid, 0.0))
                report.worker_cpu_s[pid] = max(cpu or 0.0, report.worker_cpu_s.get(pid, 0.0))
            appender.append(rec)
            records[rec["id"]] = rec
            report.n_written += 1
            if progress is not None:
                progress(len(records), total)
    if len(records) < total:
        report.stopped = True
        report.seconds = time.perf_counter() - t0
        return report
    from napari_lesionmix.export.gallery import gain_mismatches

    report.gain_mismatches = gain_mismatches(records)
    report.missed_targets = missed_targets(records)
    manifest.rewrite(_ordered(records.values()))
    if config.n_folds or config.splits:
        write_json(splits_final(plan, records), out / "splits_final.json")
        report.fold_share = fold_share(plan, records)
    else:  # the fold count may change on a rerun (it decides this file only): no stale folds left
        (out / "splits_final.json").unlink(missing_ok=True)
    n_channels = max((int(r.get("channels", 1)) for r in records.values()), default=1)
    meta = dataset_json(plan, len(records), n_channels)
    meta[DATASET_JSON_KEY] = export_summary(config, plan, records, manifest.path)
    values = sorted({v for r in records.values() for v in r.get("label_values", [])})
    declared = set(meta["labels"].values()) if all(isinstance(v, int) for v in meta["labels"].values()) else set()
    for v in values:
        if declared and v not in declared:
            meta["labels"][f"label{v}"] = v
    # Workers checked every array before writing it (finite image, label values recorded) and
    # hashed the bytes they wrote; cases from an earlier run had their checksums verified above.
    # What is left to check here is on disk: names, and the headers' shapes and affines.
    problems = verify_dataset(out, dataset_json=meta, deep=False, check_checksums=False)
    undeclared = sorted(set(values) - set(meta["labels"].values())) if declared else []
    if undeclared:
        problems.append(f"Label value(s) {undeclared} are not declared in dataset.json labels.")
    if problems:
        more = f" ({len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LesionMixError(f"Integrity check of '{out}' failed: {problems[0]}{more}")
    write_json(meta, out / "dataset.json")  # last: marks the export complete
    report.seconds = time.perf_counter() - t0
    return report


def _refuse_shrinking(out: Path, plan, manifest) -> None:
    """A rerun may raise ``n`` (sample i does not depend on n) but not lower it below cases already made."""
    prefix = f"{plan.config.prefix}_"
    indices = [r["index"] for r in manifest.read().values() if isinstance(r.get("index"), int)]
    labels = out / "labelsTr"
    if labels.is_dir():
        for p in labels.iterdir():
            stem = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else ""
            if stem.startswith(prefix) and stem[len(prefix):].isdigit():
                indices.append(int(stem[len(prefix):]))
    top = max(indices, default=-1)
    if top >= plan.config.n and not plan.config.overwrite:
        raise LesionMixError(
            f"Output folder '{out}' already holds synthetic case {plan.synthetic_id(top)}, beyond --n "
            f"{plan.config.n}; use --n {top + 1} or more, --overwrite, or another folder."
        )
    if top >= plan.config.n:  # --overwrite: drop the cases beyond n (their manifest lines go at the rewrite)
        import re

        beyond = re.compile(re.escape(prefix) + r"(\d+)(_\d{4})?\.nii\.gz$")
        for p in list((out / "imagesTr").iterdir()) + list(labels.iterdir()):
            m = beyond.match(p.name)
            if m and int(m[1]) >= plan.config.n:
                p.unlink()


def _ordered(records) -> list[dict]:
    """Real cases first (by id), then synthetic cases by index: the same order whoever wrote them."""
    return sorted(records, key=lambda r: (r.get("index") is not None, r.get("index") or 0, r["id"]))
