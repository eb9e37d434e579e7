"""The evaluation protocol: settings, the held-out test set, the K training cases, and their synthetic cases.

Order of decisions (each a pure function of the settings and the dataset):

1. **Test cases first.** The cases named by ``test_cases``, or a
   ``test_fraction`` of them drawn with a fixed generator that no training
   seed touches. They are never a training case nor a source of any
   synthetic voxel, for every method, K and seed.
2. **K training cases per (K, seed)**, drawn from the rest (the pool) with
   ``SeedSequence(seed, spawn_key=(EVAL_KEY, K))``: the same K cases for
   every method, so differences between methods are the synthetic data's.
3. **N synthetic cases per (method, K, seed)**, made by
   :func:`~napari_lesionmix.export.export_dataset` from a folder that holds
   links to those K cases only. Going through export (rather than calling
   the registry here) keeps one code path for samples, harmonization,
   provenance and the leakage rules, and makes the leak check structural:
   the exporter cannot see a test case. Sample ``i`` comes from
   ``sample_rng(seed, i)`` as everywhere else.

4. **How they enter training** (``sampling``): ``pooled`` (the default, as
   the papers and nnU-Net run it) adds the N synthetic cases to the K real ones
   and draws every patch from a case picked uniformly, with nnU-Net's 33 %
   foreground oversampling; ``ratio`` (the earlier protocol) takes a fixed
   share of the patches from synthetic cases. With ``extra_iterations`` (the
   default) every condition of a seed trains on exactly the real patches of
   ``none`` and the synthetic patches come on top, in extra steps; without it
   the steps are fixed and synthetic patches replace real ones.
5. **Optionally, which synthetic cases** (``synthetic_load``): ``cap`` or
   ``match`` exports ``load_candidates`` times N cases and keeps the N whose
   lesion load (mL) is at most the largest of the K real cases' (``cap``) or
   nearest the real cases' mean (``match``): the lesion-prevalence ablation,
   done by choosing samples, not by changing a method.

A *condition* is ``none`` (real cases only), a registered method name
(``carvemix``...) or ``METHOD+HARMONIZER`` (``carvemix+arhnet``,
``carvemix+hm``): that method's samples harmonized inside their mixing mask.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_lesionmix.augment.registry import get_method
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.dataset import CaseRecord, Dataset, discover_dataset

#: First spawn-key element of the evaluation's generators (keys of two elements
#: never collide with ``sample_rng``'s one-element keys nor export's split key).
EVAL_KEY = 2**31 - 2
#: The condition without synthetic data.
NONE = "none"
#: Ways of choosing the synthetic cases by lesion load.
LOADS = ("all", "cap", "match")
#: Harmonizers a condition may name after ``+``.
HARMONIZERS = ("arhnet", "hm", "composite")


def parse_condition(spec: str) -> tuple[str, str | None]:
    """``"carvemix+arhnet"`` -> ``("carvemix", "arhnet")``; ``"none"`` -> ``("none", None)``.

    Raises
    ------
    LesionMixError
        For an unknown method or harmonizer.
    """
    name, plus, harm = str(spec).strip().lower().partition("+")
    if name == NONE:
        if plus:
            raise LesionMixError("Condition 'none' trains on real cases only; it cannot be harmonized.")
        return NONE, None
    method = get_method(name).name
    if plus and harm not in HARMONIZERS:
        raise LesionMixError(f"Harmonizer '{harm}' in condition '{spec}' is not one of {', '.join(HARMONIZERS)}.")
    return method, (harm or None)


def condition_name(method: str, harmonizer: str | None) -> str:
    return method if harmonizer is None else f"{method}+{harmonizer}"


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation.

    Attributes
    ----------
    dataset : str
        Labelled dataset folder (any layout :func:`~napari_lesionmix.io.dataset.discover_dataset` reads).
    out : str
        Report folder: ``results.csv``, ``summary.md``, ``downstream.png``, ``runs/``, ``synthetic/``.
    conditions : tuple of str
        ``none``, method names and ``METHOD+HARMONIZER`` (see the module docstring).
    train_sizes : tuple of int
        The K values (real training cases per run).
    seeds : int
        Runs per (condition, K), with seeds ``0 .. seeds-1``, the same for every condition.
    n_synthetic : int
        Synthetic cases per (method, K, seed).
    synthetic_ratio : float
        With ``sampling="ratio"``: the fraction of training patches drawn from
        synthetic cases (fixed, so that lesion prevalence does not follow N).
    sampling : {"pooled", "ratio"}
        How synthetic cases enter training (module docstring, step 4).
    extra_iterations : bool
        Add the synthetic patches in extra steps (the real patches stay those of ``none``).
    foreground_fraction : float, optional
        Chance that a patch is centred near a lesion voxel; default 0.33
        (nnU-Net) with ``pooled``, 0.5 with ``ratio``.
    synthetic_load : {"all", "cap", "match"}
        Keep every synthetic case, or choose them by lesion load (step 5).
    load_candidates : int
        Candidates exported per kept case with ``cap`` / ``match``.
    downsample : int
        Average blocks of this many voxels per axis when a case is read (e.g.
        2 for 1 mm scans on a CPU budget); nothing is written.
    iterations, batch, patch : int
        Training steps, patches per step, patch edge in voxels.
    channels : tuple of int
        Feature maps per U-Net level (each level halves the resolution).
    lr : float
        AdamW learning rate (cosine-annealed to 0).
    test_cases : tuple of str, optional
        The held-out cases (else ``test_fraction`` of them is drawn).
    test_fraction : float
    cases : tuple of str, optional
        Use only these cases of the dataset (e.g. one lesion kind).
    options : dict
        Per-method options (as export's ``--option METHOD.NAME=VALUE``).
    harmonize : str, optional
        Harmonizer for every mixing condition that names none.
    nsd_tolerance_mm : float
        Tolerance of the normalised surface distance in mm (default 2).
    """

    dataset: str
    out: str
    conditions: tuple[str, ...] = (NONE, "carvemix", "softcp", "lesionmix")
    train_sizes: tuple[int, ...] = (2, 4)
    seeds: int = 3
    n_synthetic: int = 16
    synthetic_ratio: float = 0.5
    sampling: str = "pooled"
    extra_iterations: bool = True
    synthetic_load: str = "all"
    load_candidates: int = 2
    downsample: int = 1
    iterations: int = 1000
    batch: int = 2
    patch: int = 32
    channels: tuple[int, ...] = (8, 16, 32)
    lr: float = 5e-3
    foreground_fraction: float | None = None
    test_cases: tuple[str, ...] | None = None
    test_fraction: float = 0.3
    cases: tuple[str, ...] | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    harmonize: str | None = None
    device: str = "auto"
    workers: int = 1
    threads: int = 1
    curve_every: int = 50
    overwrite: bool = False
    nsd_tolerance_mm: float = 2.0

    def __post_init__(self):
        conds = []
        for spec in self.conditions:
            method, harm = parse_condition(spec)
            if method != NONE and harm is None and self.harmonize:
                harm = parse_condition(f"{method}+{self.harmonize}")[1]
            name = condition_name(method, harm)
            if name in conds:
                raise LesionMixError(f"Condition '{name}' is given twice.")
            conds.append(name)
        if not conds:
            raise LesionMixError("No condition to evaluate was given (e.g. --methods none carvemix).")
        object.__setattr__(self, "conditions", tuple(conds))
        sizes = tuple(sorted({int(k) for k in self.train_sizes}))
        if not sizes or sizes[0] < 1:
            raise LesionMixError(f"Training sizes must be whole numbers >= 1, got {list(self.train_sizes)}.")
        object.__setattr__(self, "train_sizes", sizes)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        from napari_lesionmix.evaluate.train import NNUNET_FOREGROUND, SAMPLINGS

        if self.sampling not in SAMPLINGS:
            raise LesionMixError(f"Sampling '{self.sampling}' is not one of {', '.join(SAMPLINGS)}.")
        if self.synthetic_load not in LOADS:
            raise LesionMixError(f"Synthetic load '{self.synthetic_load}' is not one of {', '.join(LOADS)}.")
        if self.foreground_fraction is None:
            object.__setattr__(self, "foreground_fraction", NNUNET_FOREGROUND if self.sampling == "pooled" else 0.5)
        checks = [
            (int(self.seeds) >= 1, f"The number of seeds must be >= 1, got {self.seeds}."),
            (int(self.n_synthetic) >= 1, f"The number of synthetic cases must be >= 1, got {self.n_synthetic}."),
            (0.0 < float(self.synthetic_ratio) < 1.0,
             f"The synthetic ratio must be in (0, 1), got {self.synthetic_ratio}."),
            (0.0 <= float(self.foreground_fraction) <= 1.0,
             f"The foreground fraction must be in [0, 1], got {self.foreground_fraction}."),
            (int(self.load_candidates) >= 1, f"Load candidates must be >= 1, got {self.load_candidates}."),
            (int(self.downsample) >= 1, f"The downsampling factor must be >= 1, got {self.downsample}."),
            (int(self.iterations) >= 1, f"The number of iterations must be >= 1, got {self.iterations}."),
            (int(self.batch) >= 1, f"The batch size must be >= 1, got {self.batch}."),
            (len(self.channels) >= 2 and min(self.channels) >= 1,
             f"The network needs at least two levels of >= 1 channel, got {list(self.channels)}."),
            (int(self.patch) >= 2 ** (len(self.channels) - 1) and int(self.patch) % 2 ** (len(self.channels) - 1) == 0,
             f"The patch edge must be a multiple of {2 ** (len(self.channels) - 1)} (the network halves it "
             f"{len(self.channels) - 1} times), got {self.patch}."),
            (np.isfinite(float(self.lr)) and float(self.lr) > 0, f"The learning rate must be > 0, got {self.lr}."),
            (0.0 < float(self.test_fraction) < 1.0, f"The test fraction must be in (0, 1), got {self.test_fraction}."),
            (int(self.workers) >= 1, f"The number of workers must be >= 1, got {self.workers}."),
            (int(self.threads) >= 1, f"The number of threads must be >= 1, got {self.threads}."),
            (int(self.curve_every) >= 1, f"The learning-curve interval must be >= 1, got {self.curve_every}."),
            (np.isfinite(float(self.nsd_tolerance_mm)) and float(self.nsd_tolerance_mm) > 0,
             f"The NSD tolerance must be > 0 mm, got {self.nsd_tolerance_mm}."),
        ]
        for ok, message in checks:
            if not ok:
                raise LesionMixError(message)
        if self.harmonize and self.harmonize.lower() not in HARMONIZERS:
            raise LesionMixError(f"Harmonizer '{self.harmonize}' is not one of {', '.join(HARMONIZERS)}.")
        methods = {parse_condition(c)[0] for c in self.conditions} - {NONE}
        unknown = sorted(set(self.options) - methods)
        if unknown:
            raise LesionMixError(f"Options were given for method '{unknown[0]}', which is not among the conditions.")
        for name, opts in self.options.items():
            get_method(name).Options.from_dict(opts)  # unknown names and bad values fail before any work
        mixers = sorted(m for m in methods if get_method(m).needs_donor)
        if mixers and sizes[0] < 2:
            raise LesionMixError(f"{', '.join(mixers)} mix a donor into a different host, so every training size "
                                 f"must be >= 2, got K = {sizes[0]}.")

    def identity(self) -> dict[str, Any]:
        """The settings every run shares (compared on resume); conditions, sizes and seeds may grow."""
        d = asdict(self)
        for key in ("out", "conditions", "train_sizes", "seeds", "device", "workers", "threads", "overwrite",
                    "harmonize"):
            d.pop(key)
        d["dataset"] = os.fspath(Path(self.dataset).resolve())
        d["channels"] = list(self.channels)
        d["test_cases"] = list(self.test_cases) if self.test_cases is not None else None
        d["cases"] = list(self.cases) if self.cases is not None else None
        return d


@dataclass(frozen=True)
class Split:
    """The held-out test cases and the pool the training cases are drawn from."""

    dataset: Dataset
    test_ids: tuple[str, ...]
    pool_ids: tuple[str, ...]

    def train_ids(self, k: int, seed: int) -> tuple[str, ...]:
        """The K training cases of ``seed`` (the same for every condition)."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(EVAL_KEY, int(k)))))
        return tuple(sorted(rng.choice(self.pool_ids, size=int(k), replace=False).tolist()))


def make_split(config: EvalConfig) -> Split:
    """Discover the dataset and hold out the test cases (before anything else is drawn).

    Raises
    ------
    LesionMixError
        A missing dataset, unknown case ids, or a dataset too small for the split.
    """
    ds = discover_dataset(config.dataset)
    records = [r for r in ds.cases if r.label_path is not None]
    ids = sorted(r.case_id for r in records)
    if config.cases is not None:
        unknown = sorted(set(config.cases) - set(ids))
        if unknown:
            raise LesionMixError(f"Case '{unknown[0]}' is not a labelled case of '{config.dataset}'.")
        ids = sorted(set(config.cases))
    if config.test_cases is not None:
        unknown = sorted(set(config.test_cases) - set(ids))
        if unknown:
            raise LesionMixError(f"Test case '{unknown[0]}' is not among the cases of '{config.dataset}' in use.")
        test = sorted(set(config.test_cases))
    else:
        n_test = max(1, int(round(config.test_fraction * len(ids))))
        n_test = min(n_test, max(len(ids) - 1, 0))
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(0, spawn_key=(EVAL_KEY, 0))))
        test = sorted(rng.choice(ids, size=n_test, replace=False).tolist()) if n_test else []
    pool = [i for i in ids if i not in set(test)]
    k_max = max(config.train_sizes)
    if len(ids) < k_max + 1:
        raise LesionMixError(
            f"'{config.dataset}' has {len(ids)} labelled case(s) in use; an evaluation with K = {k_max} training "
            f"case(s) needs at least {k_max + 1} (one more is held out for testing); add cases or lower --train-cases."
        )
    if not test or len(pool) < k_max:
        raise LesionMixError(
            f"'{config.dataset}' has {len(ids)} labelled case(s) in use: {len(test)} held out for testing leaves "
            f"{len(pool)} for training, fewer than the largest training size K = {k_max} (need at least "
            f"{k_max + max(len(test), 1)} cases); lower --train-cases or the test set."
        )
    kept = Dataset(ds.root, ds.layout, [r for r in records if r.case_id in set(ids)], dict(ds.channel_names),
                   dict(ds.labels))
    return Split(kept, tuple(test), tuple(pool))


def link_cases(records: Sequence[CaseRecord], folder: Path) -> Path:
    """A plain-pairs dataset folder holding links to ``records`` only (copies where links are refused).

    Names follow the pairs layout of :mod:`napari_lesionmix.io.dataset`
    (``CASE_0000.nii.gz``..., ``CASE_seg``, ``CASE_brainmask``), so discovery
    finds exactly these cases, with their brain masks.
    """
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def put(src: str, name: str) -> None:
        suffix = ".nii.gz" if src.endswith(".nii.gz") else Path(src).suffix
        dst = tmp / f"{name}{suffix}"
        try:
            os.symlink(os.path.abspath(src), dst)
        except OSError:
            shutil.copy2(src, dst)

    for r in records:
        for c, path in enumerate(r.image_paths):
            put(path, f"{r.case_id}_{c:04d}")
        put(r.label_path, f"{r.case_id}_seg")
        if r.brain_mask_path:
            put(r.brain_mask_path, f"{r.case_id}_brainmask")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def make_synthetic(config: EvalConfig, split: Split, condition: str, k: int, seed: int,
                   root: Path) -> tuple[Path, set[str]]:
    """Export the N synthetic cases of ``condition`` from the K training cases of ``seed`` (resumable).

    Returns
    -------
    (folder, sources)
        The nnU-Net v2 raw folder written by export, and every real case its
        samples carry voxels of (from its manifest: the leak check's input).
    """
    from napari_lesionmix.export import ExportConfig, export_dataset
    from napari_lesionmix.export.writer import Manifest

    method, harmonizer = parse_condition(condition)
    train = split.train_ids(k, seed)
    base = root / f"K{k}_seed{seed}"
    sources_dir = base / "train_cases"
    records = [split.dataset[cid] for cid in train]
    if not _links_match(sources_dir, train):
        link_cases(records, sources_dir)
    out = base / condition.replace("+", "_")
    cfg = ExportConfig(
        dataset=os.fspath(sources_dir), out=os.fspath(out), n=n_export(config), methods=((method, 1.0),),
        # No splits file: evaluation trains on all of the K + N cases and tests on held-out real ones.
        seed=int(seed), workers=1, include_real=False, harmonize=harmonizer, n_folds=0,
        options={method: dict(config.options[method])} if method in config.options else {},
        dataset_name=f"eval_{condition.replace('+', '-')}_K{k}_seed{seed}",  # nnU-Net names: no "+"
    )
    if not (out / "dataset.json").is_file():
        export_dataset(cfg)
    manifest = Manifest(out).read()
    sources = {s for rec in manifest.values() for s in rec.get("sources", ())}
    return out, sources


def n_export(config: EvalConfig) -> int:
    """Synthetic cases exported per run: N, or the candidates of a load choice."""
    return int(config.n_synthetic) * (1 if config.synthetic_load == "all" else int(config.load_candidates))


def _lesion_ml(path: str) -> float:
    from napari_lesionmix.evaluate.metrics import voxel_ml
    from napari_lesionmix.io.nifti import read_nifti

    img, data = read_nifti(path, "Label")
    return float(np.count_nonzero(np.asarray(data) > 0)) * voxel_ml(img.affine)


def choose_synthetic(config: EvalConfig, split: Split, k: int, seed: int,
                     folder: Path) -> tuple[list[str], dict[str, Any]]:
    """The synthetic cases a run trains on, and the lesion loads (mL) of real and synthetic cases.

    ``all`` keeps every exported case. ``cap`` keeps, in export order, the
    first N whose load is at most the largest real training case's (filled up
    with the lowest loads if too few are); ``match`` keeps the N nearest (in
    log load) the real cases' mean load.
    """
    syn = discover_dataset(folder)
    ids = sorted(syn.case_ids)
    loads = {cid: _lesion_ml(syn[cid].label_path) for cid in ids}
    real = [_lesion_ml(split.dataset[cid].label_path) for cid in split.train_ids(k, seed)]
    n = int(config.n_synthetic)
    if config.synthetic_load == "all":
        chosen = ids
    elif config.synthetic_load == "cap":
        cap = max(real)
        chosen = [cid for cid in ids if loads[cid] <= cap][:n]
        if len(chosen) < n:
            rest = sorted((cid for cid in ids if cid not in set(chosen)), key=lambda c: (loads[c], c))
            chosen += rest[: n - len(chosen)]
        chosen = sorted(chosen)
    else:
        target = np.log(max(float(np.mean(real)), 1e-6))
        chosen = sorted(sorted(ids, key=lambda c: (abs(np.log(max(loads[c], 1e-6)) - target), c))[:n])
    info = {"real_load_ml": float(np.mean(real)), "synthetic_load_ml": float(np.mean([loads[c] for c in chosen])),
            "candidates_load_ml": float(np.mean(list(loads.values()))), "n_candidates": len(ids)}
    return chosen, info


def _links_match(folder: Path, ids: Sequence[str]) -> bool:
    if not folder.is_dir():
        return False
    found = {p.name.split("_seg")[0] for p in folder.iterdir() if "_seg." in p.name}
    return found == set(ids)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LesionMixError(f"'{path}' cannot be read as JSON ({exc}); remove it to redo that part.") from None
