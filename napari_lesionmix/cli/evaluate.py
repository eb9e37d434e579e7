"""``lesionmix evaluate``: does the synthetic data help a segmenter trained on few real cases?"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="train a small 3D U-Net on K real (+ N synthetic) cases per method and compare on held-out cases",
        description="Hold out real test cases first; for each training size K and seed, draw K real training "
        "cases, make N synthetic cases per method from those K only (through export's code and leakage rules), "
        "train the same small MONAI 3D U-Net on real K (+ synthetic N) with the same real patches, augmentation "
        "and seed, and score the test cases with sliding-window inference: Dice, lesion-wise F1 (26-connected "
        "components matched one to one at IoU >= 0.1), predicted/true volume, HD95, NSD, and the test Dice at the "
        "threshold chosen on validation cases beside 0.5. Writes results.csv, summary.md (mean, 95%% interval, paired "
        "difference to 'none') and downstream.png. Rerunning the same command resumes after an interruption. "
        "Needs the monai extra.",
    )
    p.add_argument("--dataset", required=True, metavar="DIR", help="labelled dataset (any layout export reads)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder (created; resumable)")
    p.add_argument("--methods", nargs="+", default=["none", "carvemix", "softcp", "lesionmix"],
                   metavar="CONDITION", help="'none', method names, or METHOD+HARMONIZER (e.g. carvemix+arhnet); "
                   "default: none carvemix softcp lesionmix")
    p.add_argument("--train-cases", nargs="+", type=int, default=[2, 4], metavar="K",
                   help="real training cases per run (default 2 4)")
    p.add_argument("--synthetic", type=int, default=16, metavar="N", help="synthetic cases per run (default 16)")
    p.add_argument("--sampling", choices=["pooled", "ratio"], default="pooled",
                   help="pooled (default, as nnU-Net): synthetic cases join the training set and each patch comes "
                   "from a case drawn uniformly, 33%% of patches centred near a lesion; ratio: a fixed share of the "
                   "patches (--synthetic-ratio) from synthetic cases, 50%% near a lesion (the earlier protocol)")
    extra = p.add_mutually_exclusive_group()
    extra.add_argument("--extra-iterations", dest="extra_iterations", action="store_true", default=True,
                       help="(default) every condition trains on the real patches of 'none'; synthetic patches "
                       "come on top in extra steps")
    extra.add_argument("--fixed-iterations", dest="extra_iterations", action="store_false",
                       help="the same number of steps in every condition: synthetic patches replace real ones")
    p.add_argument("--synthetic-ratio", type=float, default=0.5, metavar="R",
                   help="with --sampling ratio: fraction of training patches taken from synthetic cases "
                   "(default 0.5; the 25%% ablation is 0.25)")
    p.add_argument("--foreground-fraction", type=float, metavar="F",
                   help="chance that a patch is centred near a lesion (default 0.33 pooled, 0.5 ratio)")
    p.add_argument("--synthetic-load", choices=["all", "cap", "match"], default="all",
                   help="keep every synthetic case (default), or export --load-candidates x N and keep the N whose "
                   "lesion load is at most the largest real training case's (cap) or nearest the real mean (match)")
    p.add_argument("--load-candidates", type=int, default=2, metavar="M",
                   help="candidates per kept case with --synthetic-load cap/match (default 2)")
    p.add_argument("--downsample", type=int, default=1, metavar="F",
                   help="average blocks of F voxels per axis when reading cases (e.g. 2 for 1 mm scans on a CPU)")
    p.add_argument("--harmonize", choices=["arhnet", "hm", "composite"],
                   help="harmonize every method's samples inside the mixing mask")
    p.add_argument("--seeds", type=int, default=3, help="seeds per condition and K (default 3)")
    p.add_argument("--iterations", type=int, default=1000, help="training iterations per run (default 1000)")
    p.add_argument("--patch", type=int, default=32, help="training patch edge in voxels (default 32)")
    p.add_argument("--batch", type=int, default=2, help="patches per iteration (default 2)")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32], metavar="C",
                   help="U-Net feature maps per level (default 8 16 32)")
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW learning rate, cosine-annealed (default 0.005)")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--test-cases", nargs="+", metavar="ID", help="held-out test cases (default: a fraction)")
    held.add_argument("--test-fraction", type=float, default=0.3, metavar="F",
                      help="fraction of cases held out for testing (default 0.3)")
    p.add_argument("--cases", nargs="+", metavar="ID",
                   help="use only these cases (e.g. one lesion kind: keep MS-like and stroke-like apart)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE",
                   help="per-method setting, as in `lesionmix export`")
    p.add_argument("--device", default="auto", help="auto (GPU with mixed precision if present), cpu or cuda[:N]")
    p.add_argument("--workers", type=int, default=1, help="runs trained in parallel processes (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM",
                   help="tolerance of the normalised surface distance in mm (default 2); HD95 needs none")
    p.add_argument("--overwrite", action="store_true", help="replace a report folder made with other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from napari_lesionmix.cli._common import ProgressBar
    from napari_lesionmix.evaluate import EvalConfig, run_evaluation
    from napari_lesionmix.export.plan import parse_option_specs

    cfg = EvalConfig(
        dataset=args.dataset, out=args.out, conditions=tuple(args.methods), train_sizes=tuple(args.train_cases),
        seeds=args.seeds, n_synthetic=args.synthetic, synthetic_ratio=args.synthetic_ratio,
        sampling=args.sampling, extra_iterations=args.extra_iterations, foreground_fraction=args.foreground_fraction,
        synthetic_load=args.synthetic_load, load_candidates=args.load_candidates, downsample=args.downsample,
        iterations=args.iterations, batch=args.batch, patch=args.patch, channels=tuple(args.channels), lr=args.lr,
        test_cases=tuple(args.test_cases) if args.test_cases else None, test_fraction=args.test_fraction,
        cases=tuple(args.cases) if args.cases else None, options=parse_option_specs(args.option),
        harmonize=args.harmonize, device=args.device, workers=args.workers, threads=args.threads,
        overwrite=args.overwrite, nsd_tolerance_mm=args.nsd_tolerance,
    )
    with ProgressBar("evaluate", "it", not args.no_progress) as bar:
        report = run_evaluation(cfg, progress=bar, log=bar.write)
    print(f"evaluate: {report.n_runs} run(s) ({report.n_done_before} already done) in {report.seconds:.0f} s; "
          f"held out: {', '.join(report.test_ids)}; report in '{report.out / 'summary.md'}'")
    print((report.out / "summary.md").read_text())
    return 0
