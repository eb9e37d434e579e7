"""``lesionmix export``: a reproducible, resumable, verified nnU-Net v2 dataset of synthetic cases."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write N synthetic cases as an nnU-Net v2 raw dataset (resumable, parallel, verified)",
        description="Make N synthetic cases from a labelled dataset and write them as an nnU-Net v2 raw "
        "dataset: imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, manifest.jsonl (provenance), "
        "splits_final.json (held-out cases and their derivatives out of training) and dataset.json "
        "(last). Sample i depends only on (seed, i): any worker count gives identical files. "
        "Rerunning the same command completes an interrupted export.",
    )
    p.add_argument("--dataset", required=True, metavar="DIR",
                   help="source dataset (nnU-Net v1/v2, Decathlon, or CASE.nii.gz + CASE_seg.nii.gz pairs)")
    p.add_argument("--out", metavar="OUT",
                   help="output folder, named DatasetXXX_Name for nnU-Net (e.g. Dataset501_MSsyn); default: "
                        "DatasetXXX_Name from --dataset-id and --name, under $nnUNet_raw when it is set")
    p.add_argument("--dataset-id", type=int, metavar="XXX",
                   help="nnU-Net dataset id (1-999): with --name it makes the folder DatasetXXX_Name")
    p.add_argument("--name", metavar="NAME",
                   help="dataset name in the folder and in dataset.json (default: the folder's, else LesionMix)")
    p.add_argument("--channel-names", nargs="+", metavar="NAME",
                   help="dataset.json channel names, one per image channel in order, e.g. FLAIR or FLAIR T1; "
                        "CT switches nnU-Net to its CT normalisation (default: the source's, else image)")
    p.add_argument("--label-names", nargs="+", metavar="NAME",
                   help="dataset.json names of label values 1, 2, ... e.g. lesion or edema tumor "
                        "(default: the source's, else lesion)")
    p.add_argument("--n", type=int, default=100, help="number of synthetic cases (default 100)")
    p.add_argument("--method", nargs="+", default=["carvemix"], metavar="NAME[:WEIGHT]",
                   help="methods and relative weights, e.g. carvemix:2 softcp:1 (default carvemix)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE",
                   help="per-method setting, repeatable, e.g. carvemix.per_lesion=true, softcp.n_lesions=2, "
                   "lesionmix.load_dist=high, lesionmix.dist_low=5, mixup.label=hard: the names are the "
                   "method command's flags (`lesionmix METHOD --help`) with _ for -. Every method's "
                   "intensity_match defaults to brain-linear here (none in the method commands, as in the papers)")
    p.add_argument("--harmonize", metavar="SPEC",
                   help="harmonize inside each mixing mask: a checkpoint .pt, arhnet, hm, hm-ring or composite")
    p.add_argument("--device", default="cpu", help="device for ARHNet harmonization (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    run_on = p.add_mutually_exclusive_group()
    run_on.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    run_on.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run the tasks on this dask.distributed scheduler instead")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--holdout-fraction", type=float, default=0.0, metavar="F",
                       help="hold out this fraction of real cases: never a source, in no training fold")
    split.add_argument("--splits", metavar="FILE",
                       help="nnU-Net splits_final.json over real cases, or a JSON list of case ids to hold out")
    # No argparse choices: ExportConfig checks the name against io.nifti.GZIP_CODECS (one list).
    p.add_argument("--gzip", default=None, metavar="CODEC",
                   help="gzip encoder of the .nii.gz files: isal (default, several times faster) or "
                        "zlib (nibabel's); same voxels, other compressed bytes")
    p.add_argument("--folds", type=int, default=5,
                   help="folds in splits_final.json (default 5); 0 writes none (nnU-Net then draws random folds, "
                        "which can leak a case's synthetic derivatives into its validation fold)")
    p.add_argument("--include-real", action="store_true", help="copy the real cases into imagesTr too")
    p.add_argument("--prefix", default="lmx", help="synthetic case ids are PREFIX_000000... (default lmx)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output folder that was made with other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from napari_lesionmix.cli._common import ProgressBar
    from napari_lesionmix.export import ExportConfig, export_dataset
    from napari_lesionmix.export.naming import resolve_output
    from napari_lesionmix.export.plan import parse_method_specs, parse_option_specs
    from napari_lesionmix.export.runners import keep_freed_memory

    keep_freed_memory()  # this process exists to export (with --workers 1 it is the worker)

    target = resolve_output(args.out, args.dataset_id, args.name)
    if target.warning:
        print(f"lesionmix export: warning: {target.warning}", file=sys.stderr)
    names = {"dataset_name": target.name} if target.name else {}
    cfg = ExportConfig(
        dataset=args.dataset, out=str(target.out), **names,
        channel_names=tuple(args.channel_names or ()), label_names=tuple(args.label_names or ()),
        n=args.n, methods=parse_method_specs(args.method),
        seed=args.seed, workers=args.workers, scheduler=args.scheduler,
        holdout_fraction=args.holdout_fraction, splits=args.splits, include_real=args.include_real,
        overwrite=args.overwrite, harmonize=args.harmonize, harmonize_device=args.device,
        n_folds=args.folds, prefix=args.prefix, options=parse_option_specs(args.option),
        **({"gzip": args.gzip} if args.gzip else {}),
    )
    with ProgressBar("export", "case", not args.no_progress) as bar:
        report = export_dataset(cfg, progress=bar)
    for line in report.warnings():
        print(line, file=sys.stderr)
    rss = ", ".join(f"{v:.0f}" for v in report.peak_rss_mb.values()) or "-"
    print(
        f"export: {report.n_total} case(s) in '{report.out}' ({report.n_written} made, "
        f"{report.n_skipped} already done) in {report.seconds:.1f} s; verified; "
        f"held out: {', '.join(report.holdout) or 'none'}; peak MiB per worker: {rss}"
    )
    return 0
