"""Downstream benchmark: does synthetic data help a small 3D U-Net trained on few real cases? (``lesionmix evaluate``)

The fair protocol (issue 25): the synthetic cases join the real ones as nnU-Net
and the papers use them (``sampling="pooled"``: every patch from a case drawn
uniformly, 33 % of patches centred near a lesion) and the synthetic patches are
*added* in extra steps, so every condition of a seed trains on exactly the real
patches of ``none``. Results and their reading: docs/downstream.md.

Presets
-------
``full`` (default; a GPU or a long CPU night): the six MS-like sample subjects
(sub-01, sub-02 held out), K = 2 and 4, 3 seeds, N = 16 synthetic cases per run
(so a method's run has 9x the steps of ``none`` at K = 2), 2000 iterations of
2 patches of 32³, every method and baseline plus harmonized CarveMix.

``reduced`` (about 10 CPU-minutes per dataset): K = 2, N = 2 (1:1 real:synthetic
patches, 2x steps), 1000 iterations of 2 patches of 32³, 3 seeds. Measured on 2 shared
CPU cores: 18 MS runs in 23 min wall, 12 BraTS runs in about 19 min wall (2-3 runs at a time).

``--dataset brats --brats DIR``: the six real BraTS 2013 cases (whole tumour,
FLAIR) read at run time from DIR through a temporary nnU-Net folder of links
under /tmp (nothing copied), at 1/2 resolution, 3 held out.

``--ablation NAME`` (reduced preset, each one command; a ``none`` beside it):
``load-cap`` (CarveMix cases chosen among 4 x N candidates with a lesion load at
most the largest real case's), ``load-match`` (nearest the real mean load),
``softcp-kerode0`` (Soft-CP with ``k_erode = 0``: small lesions keep a weight-1
core), ``carvemix-per-lesion`` (one lambda per lesion), ``share25`` (25 % of the
patches synthetic, ``sampling="ratio"``, added), ``old-protocol`` (the earlier
protocol: 50 % swapped in at fixed steps, 50 % foreground), ``n6`` (N = 6: 75 %
of the patches synthetic), ``equal-steps`` (``none`` alone, trained for the 2000
steps a method's run takes: the control for the added steps).

    python benchmarks/downstream.py [REPORT_DIR] [--preset reduced] [--dataset ms|brats] [--ablation NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from napari_lesionmix.evaluate import EvalConfig, run_evaluation
from napari_lesionmix.sample_data import sample_data_dir

HARD = {"mixup": {"label": "hard"}, "cutmix": {"label": "hard"}}
#: LesionMix's default draws the target load from the K real loads; with K = 2 it can draw the host's own
#: load (nothing to paste, the draw is refused): draw it uniformly between them instead.
LESIONMIX = {"lesionmix": {"load_dist": "uniform"}}
ABLATIONS = {
    "load-cap": dict(methods=("carvemix",), synthetic_load="cap", load_candidates=4),
    "load-match": dict(methods=("carvemix",), synthetic_load="match", load_candidates=4),
    "softcp-kerode0": dict(methods=("softcp",), options={"softcp": {"k_erode": 0}}),
    "carvemix-per-lesion": dict(methods=("carvemix",), options={"carvemix": {"per_lesion": True}}),
    "share25": dict(methods=("carvemix", "softcp"), sampling="ratio", synthetic_ratio=0.25, foreground_fraction=0.33),
    "old-protocol": dict(methods=("carvemix", "softcp"), sampling="ratio", synthetic_ratio=0.5,
                         extra_iterations=False, foreground_fraction=0.5),
    "n6": dict(methods=("carvemix",), n_synthetic=6),
    "equal-steps": dict(methods=(), iterations=2000),
}


def ms_like_cases() -> tuple[str, ...]:
    subjects = json.loads((sample_data_dir() / "subjects.json").read_text())
    items = subjects.items() if isinstance(subjects, dict) else ((s["id"], s) for s in subjects)
    return tuple(sorted(sid for sid, s in items if s.get("kind") == "ms"))


def brats_folder(src: Path) -> Path:
    """An nnU-Net raw folder of links to the BraTS cases' FLAIR and labels (under /tmp; nothing is copied)."""
    cases = sorted(p for p in Path(src).resolve().glob("brats_2013_pat*") if p.is_dir())  # links need absolute paths
    if len(cases) < 4:
        raise SystemExit(f"'{src}' holds {len(cases)} BraTS case folders; 4 or more are needed.")
    root = Path(tempfile.mkdtemp(prefix="lmx_brats_")) / "Dataset901_BraTSwt"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case in cases:
        cid = case.name.replace("brats_2013_", "").replace("_1", "")
        (root / "imagesTr" / f"{cid}_0000.nii.gz").symlink_to(case / "Flair_subtrMeanDivStd.nii.gz")
        (root / "labelsTr" / f"{cid}.nii.gz").symlink_to(case / "OTMultiClass.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR"}, "labels": {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3,
                                                    "enhancing": 4}, "numTraining": len(cases),
        "file_ending": ".nii.gz"}))
    return root


def config(args) -> EvalConfig:
    full = args.preset == "full"
    if args.dataset == "brats":
        if not args.brats:
            raise SystemExit("--dataset brats needs --brats DIR (the folder of brats_2013_pat* case folders).")
        data = dict(dataset=str(brats_folder(Path(args.brats))), test_fraction=0.5, downsample=2)
        # Mixup and CutMix with label=hard keep BraTS' class ids (1-4); soft labels would need binary ones.
        methods = ("none", "carvemix", "softcp", "lesionmix", "mixup", "cutmix")
    else:
        data = dict(dataset=str(sample_data_dir()), cases=ms_like_cases(), test_cases=("sub-01", "sub-02"))
        methods = ("none", "carvemix", "softcp", "lesionmix", "mixup", "cutmix") + (("carvemix+arhnet",) if full
                                                                                     else ())
    settings = dict(train_sizes=(2, 4) if full else (2,), seeds=args.seeds or 3,
                    n_synthetic=16 if full else 2, iterations=args.iterations or (2000 if full else 1000),
                    batch=2, patch=32, channels=(8, 16, 32), lr=5e-3, sampling="pooled", extra_iterations=True)
    options = {**HARD, **LESIONMIX}
    if args.ablation:
        ab = dict(ABLATIONS[args.ablation])
        methods = ("none", *ab.pop("methods"))
        options = {**options, **ab.pop("options", {})}
        settings.update(ab)
    if getattr(args, "methods", None):
        methods = tuple(args.methods)
    options = {m: o for m, o in options.items() if m in {c.split("+")[0] for c in methods}}
    return EvalConfig(out=args.out, conditions=methods, options=options, workers=args.workers, threads=1,
                      device=args.device, **data, **settings)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="downstream_report")
    ap.add_argument("--preset", choices=["full", "reduced"], default="full")
    ap.add_argument("--dataset", choices=["ms", "brats"], default="ms")
    ap.add_argument("--brats", metavar="DIR", help="folder of the BraTS 2013 case folders (read, never copied)")
    ap.add_argument("--ablation", choices=sorted(ABLATIONS), help="one ablation of the reduced preset")
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", nargs="+", help="only these conditions (e.g. none mixup cutmix)")
    args = ap.parse_args()
    if args.ablation:
        args.preset = "reduced"
    cfg = config(args)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        el = time.perf_counter() - t0
        if done and (el - last[0] > 30 or done == total):
            last[0] = el
            eta = el / done * (total - done) if done else float("nan")
            print(f"[{el / 60:5.1f} min] {done}/{total} steps, ETA {eta / 60:.1f} min", flush=True)

    report = run_evaluation(cfg, progress=progress, log=lambda s: print(s, flush=True))
    print(f"wall time {report.seconds / 60:.1f} min ({report.n_done_before} runs resumed)")
    print((report.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
