"""The export plan: settings, the held-out split, and who makes sample ``i`` from what.

Everything random here flows from the root seed, so the plan (and every
sample) is a pure function of the settings and the dataset:

* the held-out split and the cross-validation folds use generators derived
  from ``SeedSequence(seed, spawn_key=(SPLIT_KEY, k))``, whose two-element
  spawn keys never collide with the one-element keys of
  :func:`~napari_lesionmix.random.sample_rng`;
* sample ``i`` uses ``sample_rng(seed, i)``: it first draws its method (by
  weight), then its host and donor, then the method's own params from the
  same generator (:func:`assign`). Whoever computes sample ``i`` (one process,
  a pool or a Dask worker) gets the same file bit for bit.

Leakage rules (the choice made where the papers are silent)
-----------------------------------------------------------
* Real cases are split into a **training pool** ``T`` and a **held-out** set
  ``H`` (``holdout_fraction`` of the cases, drawn with the seed, or the cases
  named by a splits file). Synthetic cases are generated **only from T**:
  host, donor and any lesion source. No synthetic case carries a voxel of a
  held-out case.
* ``splits_final.json`` (nnU-Net's format, ``n_folds`` folds) partitions the
  real training pool ``T`` into folds ``T_1..T_k``. In fold ``k`` the
  validation set holds the real cases of ``T_k`` (and, with
  ``include_real``, every held-out case, which is thus in no training set of
  any fold); the training set holds the other real cases of ``T`` and every
  synthetic case **none of whose sources is in** ``T_k``. A synthetic case
  made from a fold's validation case is in neither set of that fold.
* Without ``include_real`` no real case is in ``imagesTr``; the folds then
  validate on the synthetic cases that have a source in ``T_k`` (so nnU-Net
  gets a non-empty validation set) and train on those that do not.
* A splits file may be an nnU-Net ``splits_final.json`` (a list of
  ``{"train": [...], "val": [...]}`` over real case ids: its folds are used
  as given and real cases named in no fold are held out) or a plain list of
  case ids (or ``{"holdout": [...]}``) to hold out, with folds drawn as above.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesionmix.augment.registry import FACE_DEFAULTS, get_method
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import DEFAULT_GZIP, check_gzip_codec
from napari_lesionmix.random import choice_rng

#: First spawn-key element of the split generators (two-element keys never
#: collide with ``sample_rng``'s one-element keys).
SPLIT_KEY = 2**31 - 1

#: Settings that do not change any output file, so a rerun may change them.
#: ``n`` is among them because sample ``i`` does not depend on it: a rerun
#: with a larger ``n`` adds cases (a smaller one is refused). ``n_folds`` decides
#: ``splits_final.json`` alone, written at the end: a fold check that refuses at
#: the end is corrected by a rerun with other folds that resumes the cases made.
RUN_ONLY_SETTINGS = ("out", "workers", "scheduler", "overwrite", "n", "n_folds",
                     # only in dataset.json, which every run writes anew: a rerun renames without --overwrite
                     "dataset_name", "channel_names", "label_names")


def parse_option_specs(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["carvemix.per_lesion=true", "lesionmix.distribution=high"]`` -> nested dict (values parsed as JSON when they can be)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in specs or ():
        key, eq, value = str(spec).partition("=")
        method, dot, name = key.strip().partition(".")
        if not (eq and dot and method and name):
            raise LesionMixError(f"Option '{spec}' must look like METHOD.NAME=VALUE (e.g. carvemix.per_lesion=true).")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method.lower(), {})[name] = parsed
    return out


def parse_method_specs(specs: Sequence[str] | str) -> tuple[tuple[str, float], ...]:
    """``["carvemix:2", "softcp"]`` -> ``(("carvemix", 2.0), ("softcp", 1.0))``.

    Raises
    ------
    LesionMixError
        For an empty list, a repeated method, or a weight that is not a positive number.
    """
    if isinstance(specs, str):
        specs = specs.replace(",", " ").split()
    out: dict[str, float] = {}
    for spec in specs:
        name, _, weight = str(spec).partition(":")
        name = name.strip().lower()
        if not name:
            raise LesionMixError(f"Method spec '{spec}' has no method name (expected NAME or NAME:WEIGHT).")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise LesionMixError(f"Method weight in '{spec}' is not a number.") from None
        if not np.isfinite(w) or w <= 0:
            raise LesionMixError(f"Method weight in '{spec}' must be a positive number.")
        if name in out:
            raise LesionMixError(f"Method '{name}' is given twice in the method list.")
        out[name] = w
    if not out:
        raise LesionMixError("No augmentation method was given (e.g. --method carvemix).")
    return tuple(out.items())


#: The export's default ``intensity_match`` (the registry's shared option defaults to the papers' "none"):
#: an export is training data made in bulk, nobody looks at every case, and on the sample subjects 54 of the
#: 90 host/donor pairs differ in gain by more than 25 %; ``--option METHOD.intensity_match=none`` restores
#: the papers' behaviour.
EXPORT_INTENSITY_MATCH = FACE_DEFAULTS["export"]["intensity_match"]


def with_export_defaults(methods, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``options`` with the export's defaults (:data:`EXPORT_INTENSITY_MATCH`) for every method of the list."""
    out = {name: dict(opts) for name, opts in options.items()}
    for name in sorted({get_method(m).name for m in methods}):
        opts = out.setdefault(name, {})
        opts.setdefault("intensity_match", EXPORT_INTENSITY_MATCH)
        out[name] = dict(sorted(opts.items()))
    return dict(sorted(out.items()))


def check_options(methods, options: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Validate per-method options against each method's ``Options``; return a clean, sorted copy.

    Options of a method that is not in ``methods`` are an error too (a typo
    there would otherwise be ignored silently).
    """
    names = {str(m).lower() for m in methods}
    out: dict[str, dict[str, Any]] = {}
    for name, opts in (options or {}).items():
        method = get_method(name)
        if method.name not in names:
            raise LesionMixError(f"Options were given for method '{name}', which is not in the method list.")
        if not isinstance(opts, dict):
            raise LesionMixError(f"Options of method '{name}' must be a mapping of name to value.")
        method.Options.from_dict(opts)
        out[method.name] = dict(sorted(opts.items()))
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class ExportConfig:
    """Settings of one export.

    Attributes
    ----------
    dataset : str
        Source dataset folder (any layout :func:`~napari_lesionmix.io.dataset.discover_dataset` reads).
    out : str
        Output folder (an nnU-Net v2 raw dataset, e.g. ``.../Dataset501_MS``).
    n : int
        Number of synthetic cases.
    methods : tuple of (name, weight)
        Methods and their relative weights; sample ``i`` draws one.
    seed : int
        Root seed.
    workers : int
        Local worker processes (1 = serial, in this process).
    scheduler : str or None
        ``tcp://HOST:PORT`` of a dask.distributed scheduler (overrides ``workers``).
    holdout_fraction : float
        Fraction of the real cases held out (never a source, never trained on).
    splits : str or None
        Splits file (see the module docstring); excludes ``holdout_fraction``.
    include_real : bool
        Copy the real cases into ``imagesTr``/``labelsTr`` (ids kept).
    overwrite : bool
        Replace an output folder made with other settings.
    harmonize : str or None
        ``"composite"``, ``"hm"``, ``"arhnet"`` or a checkpoint path, applied inside each mixing mask.
    harmonize_device : str
        Device for ARHNet (``"cpu"`` by default: bit-identical across machines).
    gzip : str
        Encoder of the ``.nii.gz`` files: ``"isal"`` (default, several times faster) or
        ``"zlib"`` (nibabel's); see :data:`napari_lesionmix.io.nifti.GZIP_CODECS`. Both
        write standard gzip; the voxels are the same, the compressed bytes differ.
    n_folds : int
        Cross-validation folds in ``splits_final.json`` (nnU-Net uses 5). ``0``
        writes no splits file: nnU-Net then draws its own random folds, which
        can put a synthetic case and its source case on both sides of a fold.
    prefix : str
        Synthetic case ids are ``f"{prefix}_{i:06d}"``.
    dataset_name : str
        ``name`` in ``dataset.json``.
    channel_names : tuple of str
        ``channel_names`` in ``dataset.json``, one per image channel in order (e.g.
        ``("FLAIR",)``; ``"CT"`` selects nnU-Net's CT normalisation). Empty: the
        source dataset's names, else ``image`` (``channel0``, ... for several).
    label_names : tuple of str
        Names of label values 1, 2, ... in ``dataset.json`` (background is 0).
        Empty: the source dataset's labels, else ``lesion`` for 1.
    options : dict
        Per-method settings, e.g. ``{"carvemix": {"per_lesion": True},
        "lesionmix": {"distribution": "high"}}`` (see
        each method's ``Options`` in :mod:`napari_lesionmix.augment.registry`). Every method of the
        list gets ``intensity_match`` = :data:`EXPORT_INTENSITY_MATCH` unless it is given.
    """

    dataset: str
    out: str
    n: int = 100
    methods: tuple[tuple[str, float], ...] = (("carvemix", 1.0),)
    seed: int = 0
    workers: int = 1
    scheduler: str | None = None
    holdout_fraction: float = 0.0
    splits: str | None = None
    include_real: bool = False
    overwrite: bool = False
    harmonize: str | None = None
    harmonize_device: str = "cpu"
    gzip: str = DEFAULT_GZIP
    n_folds: int = 5
    prefix: str = "lmx"
    dataset_name: str = "LesionMixSynthetic"
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    channel_names: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "methods", parse_method_specs(
            [f"{m}:{w}" for m, w in self.methods] if not isinstance(self.methods, str) else self.methods
        ))
        if int(self.n) < 0:
            raise LesionMixError(f"The number of synthetic cases must be >= 0, got {self.n}.")
        if int(self.seed) < 0:
            raise LesionMixError(f"The seed must be a non-negative integer, got {self.seed}.")
        if int(self.workers) < 1:
            raise LesionMixError(f"The number of workers must be >= 1, got {self.workers}.")
        if not 0.0 <= float(self.holdout_fraction) < 1.0:
            raise LesionMixError(f"The hold-out fraction must be in [0, 1), got {self.holdout_fraction}.")
        if self.splits and self.holdout_fraction:
            raise LesionMixError("Give either a hold-out fraction or a splits file, not both.")
        if int(self.n_folds) < 0:
            raise LesionMixError(f"The number of folds must be >= 0 (0: no splits_final.json), got {self.n_folds}.")
        check_gzip_codec(self.gzip)
        names = [m for m, _ in self.methods]
        object.__setattr__(self, "options", with_export_defaults(names, check_options(names, self.options)))
        object.__setattr__(self, "channel_names", tuple(self.channel_names))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if not self.prefix or not self.prefix.replace("-", "").replace("_", "").isalnum():
            raise LesionMixError(f"Case id prefix '{self.prefix}' must be letters, digits, '-' or '_'.")

    def identity(self) -> dict[str, Any]:
        """The settings that decide the output files (``export_config.json``, compared on resume).

        They include the fingerprint of the package's code
        (:func:`~napari_lesionmix.export.provenance.code_fingerprint`): a folder
        started by other code is not completed with this one.
        """
        from napari_lesionmix.export.provenance import code_fingerprint

        d = asdict(self)
        d["code"] = code_fingerprint()
        for key in RUN_ONLY_SETTINGS:
            d.pop(key, None)
        d["dataset"] = os.fspath(Path(self.dataset).resolve())
        d["methods"] = [[m, w] for m, w in self.methods]
        if self.splits:
            d["splits"] = os.fspath(Path(self.splits).resolve())
        return d


@dataclass(frozen=True)
class SourceCase:
    """Where a real case's files are (picklable; workers load it themselves)."""

    case_id: str
    image_paths: tuple[str, ...]
    label_path: str
    brain_mask_path: str | None = None


@dataclass(frozen=True)
class Assignment:
    """What sample ``index`` is: its id, method, host and donor."""

    index: int
    case_id: str
    method: str
    host_id: str
    donor_id: str


@dataclass(frozen=True)
class ExportPlan:
    """Everything a worker needs to make any sample, small enough to send with every task.

    Built once by :func:`make_plan`; :func:`assign` turns it and an index into
    an :class:`Assignment` and the sample's generator.
    """

    config: ExportConfig
    cases: tuple[SourceCase, ...]
    train_ids: tuple[str, ...]
    donor_ids: tuple[str, ...]
    holdout_ids: tuple[str, ...]
    folds: tuple[tuple[str, ...], ...]
    fold_train: tuple[tuple[str, ...], ...] | None
    channel_names: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def case(self, case_id: str) -> SourceCase:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise LesionMixError(f"The export plan has no case '{case_id}'.")

    def synthetic_id(self, index: int) -> str:
        return f"{self.config.prefix}_{index:06d}"

    @property
    def real_ids(self) -> tuple[str, ...]:
        """Real cases copied into ``imagesTr`` (all of them with ``include_real``)."""
        return tuple(c.case_id for c in self.cases) if self.config.include_real else ()


def _split_rng(seed: int, k: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(SPLIT_KEY, k))))


def _read_splits(path: str, all_ids: Sequence[str]):
    """Parse a splits file: ``(holdout, folds (val sets) or None, fold train sets or None)``."""
    p = Path(path)
    if not p.is_file():
        raise LesionMixError(f"Splits file '{path}' does not exist.")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LesionMixError(f"Splits file '{path}' is not valid JSON ({exc}).") from None
    known = set(all_ids)

    def check(ids, what):
        bad = sorted(set(ids) - known)
        if bad:
            raise LesionMixError(f"Splits file '{path}' names {what} case '{bad[0]}', which is not in the dataset.")
        return list(ids)

    if isinstance(data, dict) and "holdout" in data:
        data = data["holdout"]
    if isinstance(data, list) and all(isinstance(v, str) for v in data):
        return sorted(check(data, "held-out")), None, None
    if isinstance(data, list) and data and all(isinstance(f, dict) and {"train", "val"} <= set(f) for f in data):
        vals, trains = [], []
        for k, f in enumerate(data):
            tr, va = check(f["train"], "a"), check(f["val"], "a")
            if set(tr) & set(va):
                raise LesionMixError(
                    f"Fold {k} of splits file '{path}' has case '{sorted(set(tr) & set(va))[0]}' in both train and val."
                )
            vals.append(tuple(sorted(va)))
            trains.append(tuple(sorted(tr)))
        mentioned = set().union(*map(set, vals), *map(set, trains))
        holdout = sorted(known - mentioned)
        return holdout, tuple(vals), tuple(trains)
    raise LesionMixError(
        f"Splits file '{path}' must be an nnU-Net splits list of {{\"train\", \"val\"}} folds, "
        "or a list of case ids to hold out."
    )


def _has_lesion(rec: SourceCase) -> bool:
    from napari_lesionmix.io.nifti import load_label

    label, _ = load_label(rec.label_path)
    return bool(label.any())


def make_plan(config: ExportConfig) -> ExportPlan:
    """Discover the dataset, split it, and fix everything each sample is drawn from.

    Labels of the training pool are read once here to find the cases with a
    lesion (the possible donors).

    Raises
    ------
    LesionMixError
        Missing dataset, bad splits file, or a training pool with no lesion.
    """
    import dataclasses

    from napari_lesionmix.io.dataset import discover_dataset

    # Absolute paths: Dask workers may run in another working directory.
    config = dataclasses.replace(
        config,
        dataset=os.fspath(Path(config.dataset).resolve()),
        out=os.fspath(Path(config.out).resolve()),
        splits=os.fspath(Path(config.splits).resolve()) if config.splits else None,
    )
    ds = discover_dataset(config.dataset)
    cases = tuple(
        SourceCase(r.case_id, tuple(r.image_paths), r.label_path, r.brain_mask_path)
        for r in sorted(ds.cases, key=lambda r: r.case_id)
    )
    ids = [c.case_id for c in cases]
    pat = f"{config.prefix}_"
    clash = [i for i in ids if i.startswith(pat)]
    if clash and config.include_real:
        raise LesionMixError(
            f"Real case '{clash[0]}' starts with the synthetic prefix '{pat}'; choose another prefix."
        )
    fold_train = None
    folds: tuple[tuple[str, ...], ...] | None = None
    if config.splits:
        holdout, folds, fold_train = _read_splits(config.splits, ids)
    elif config.holdout_fraction > 0:
        n_hold = max(1, int(round(config.holdout_fraction * len(ids))))
        if n_hold >= len(ids):
            raise LesionMixError(
                f"A hold-out fraction of {config.holdout_fraction} leaves no training case among {len(ids)}."
            )
        holdout = sorted(_split_rng(config.seed, 0).choice(ids, size=n_hold, replace=False).tolist())
    else:
        holdout = []
    train = tuple(i for i in ids if i not in set(holdout))
    if not train:
        raise LesionMixError(f"No training case is left in '{config.dataset}' after the hold-out split.")
    if folds is None:
        k = max(min(int(config.n_folds), len(train)), 1)
        perm = _split_rng(config.seed, 1).permutation(len(train))
        folds = tuple(tuple(sorted(train[j] for j in part)) for part in np.array_split(perm, k))
    donors = tuple(c.case_id for c in cases if c.case_id in set(train) and _has_lesion(c)) if config.n else ()
    if config.n and not donors:
        raise LesionMixError(
            f"No training case of '{config.dataset}' has a lesion in its label; nothing can be used as a donor."
        )
    mixers = [m for m, _ in config.methods if get_method(m).needs_donor]
    if config.n and mixers and len(train) < 2:
        raise LesionMixError(
            f"{', '.join(mixers)} mix a donor into a different host, but '{config.dataset}' has only one "
            "training case; add cases or lower the hold-out."
        )
    labels = dict(ds.labels) if ds.labels else {"background": 0, "lesion": 1}
    channels = dict(ds.channel_names)
    return ExportPlan(config, cases, train, donors, tuple(holdout), folds, fold_train, channels, labels)


def check_sources(plan: ExportPlan) -> None:
    """Read every source file the plan uses before the first case is written; one sentence for the first bad one.

    Checks that each file exists and is a readable NIfTI volume, that each
    image holds finite values only, that each case's files share a grid, and,
    when a method mixes two scans, that all training cases share one grid.
    This reads the sources once more than the workers do; it is what keeps a
    bad file found at case 6 of 20 from leaving 5 cases behind.
    """
    from napari_lesionmix.io.nifti import AFFINE_TOLERANCE_MM, read_nifti

    used = set(plan.train_ids) | (set(plan.real_ids) if plan.config.include_real else set())
    grids = {}
    for case in plan.cases:
        if case.case_id not in used:
            continue
        shapes = []
        for path in (*case.image_paths, case.label_path, case.brain_mask_path):
            if path is None:
                continue
            if not os.path.exists(path):
                raise LesionMixError(f"Source file '{path}' of case '{case.case_id}' does not exist "
                                     "(a broken link?).")
            try:
                img, data = read_nifti(path, "Source")
            except LesionMixError as exc:
                raise LesionMixError(f"Case '{case.case_id}': {exc}") from None
            if path in case.image_paths and data.dtype.kind == "f" and not (
                    np.isfinite(data.min()) and np.isfinite(data.max())):  # min and max propagate NaN
                raise LesionMixError(f"Source image '{path}' of case '{case.case_id}' holds NaN or infinite "
                                     "voxels; fix or leave out that case.")
            shapes.append((tuple(img.shape[:3]), np.asarray(img.affine), path))
        (shape, affine, first), *rest = shapes
        for s, a, path in rest:
            if s != shape or float(np.max(np.abs(a - affine))) > AFFINE_TOLERANCE_MM:
                raise LesionMixError(f"Source files '{first}' and '{path}' of case '{case.case_id}' are not on "
                                     "one grid.")
        if case.case_id in plan.train_ids:
            grids[case.case_id] = (shape, affine, first)
    if any(get_method(m).needs_donor for m, _ in plan.config.methods) and len(grids) > 1:
        (ref_id, (shape, affine, ref)), *others = sorted(grids.items())
        for cid, (s, a, path) in others:
            if s != shape or float(np.max(np.abs(a - affine))) > AFFINE_TOLERANCE_MM:
                raise LesionMixError(
                    f"Case '{cid}' ('{path}', shape {s}) is not on the grid of case '{ref_id}' ('{ref}', shape "
                    f"{shape}); the methods that mix two scans need every training case on one grid."
                )


def assign(plan: ExportPlan, index: int) -> tuple[Assignment, np.random.Generator]:
    """Method, host and donor of sample ``index``, and its choice stream (which later redraws continue).

    Drawn from :func:`~napari_lesionmix.random.choice_rng` ``(seed, index)``
    (the pipeline's rule, :mod:`~napari_lesionmix.augment.pipeline`): method
    (by weight), donor (among training cases with a lesion), host (among the
    other training cases; the donor itself only when it is the only training
    case). The params come from ``sample_rng(seed, index)``, as in the CLI.
    """
    rng = choice_rng(plan.config.seed, index)
    names = [m for m, _ in plan.config.methods]
    weights = np.array([w for _, w in plan.config.methods], dtype=float)
    method = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    donor = plan.donor_ids[int(rng.integers(len(plan.donor_ids)))]
    hosts = [c for c in plan.train_ids if c != donor] or [donor]
    host = hosts[int(rng.integers(len(hosts)))]
    return Assignment(int(index), plan.synthetic_id(index), method, host, donor), rng
