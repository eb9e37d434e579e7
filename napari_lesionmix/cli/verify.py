"""``lesionmix verify``: integrity check of an nnU-Net v2 raw dataset folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check an nnU-Net v2 dataset folder (channels, labels, shapes, affines, NaNs, checksums)",
        description="What nnU-Net's verify_dataset_integrity checks: dataset.json keys, one image per "
        "channel for every label, numTraining, shapes and affines within a case, label values declared "
        "in dataset.json, no NaN; plus the SHA-256 sums of manifest.jsonl when present. "
        "Exit status 0 if clean, 1 if problems were found.",
    )
    p.add_argument("out", metavar="OUT", help="dataset folder (holding imagesTr, labelsTr, dataset.json)")
    p.add_argument("--no-checksums", action="store_true", help="skip the manifest checksum comparison")
    p.add_argument("--no-nnunet", action="store_true",
                   help="skip nnU-Net's own verify_dataset_integrity (run after ours when nnU-Net v2 is installed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from napari_lesionmix.export.verify import nnunet_check, verify_dataset

    problems = verify_dataset(args.out, check_checksums=not args.no_checksums)
    ran = False
    if not problems and not args.no_nnunet:  # ours names the file; nnU-Net's is the consumer's verdict
        ran, problem = nnunet_check(args.out)
        problems = [problem] if problem else []
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} problem(s) in '{args.out}'", file=sys.stderr)
        return 1
    checked = " (and nnU-Net's own verify_dataset_integrity passed)" if ran else \
        " (nnU-Net is not installed: our check only)" if not args.no_nnunet else ""
    print(f"verify: '{args.out}' is a consistent nnU-Net v2 dataset{checked}")
    return 0
