"""``lesionmix likelihood``: the lesion likelihood map of a dataset, as NIfTI."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "likelihood",
        help="write a dataset's lesion likelihood map (where LesionMix pastes lesions)",
        description="LesionMix's lesion likelihood map: the normalised voxel-wise sum of the "
        "dataset's lesion masks (all cases on one grid), optionally smoothed, restricted to the "
        "brain (the union of the cases' brain masks, or --brain-mask). Written as float32 NIfTI "
        "summing to 1.",
    )
    p.add_argument("--dataset", required=True, metavar="DIR",
                   help="dataset folder (nnU-Net, Decathlon, or CASE.nii.gz + CASE_seg.nii.gz pairs)")
    p.add_argument("--out", required=True, metavar="map.nii.gz", help="output NIfTI file")
    p.add_argument("--sigma-mm", type=float, default=0.0,
                   help="Gaussian smoothing sigma in mm (default 0: the plain sum)")
    p.add_argument("--brain-mask", metavar="B.nii.gz", help="restrict to this mask instead of the cases' brain masks")
    p.add_argument("--no-brain-masks", action="store_true",
                   help="do not restrict to the union of the dataset's brain masks")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_lesionmix.augment.likelihood import likelihood_map, save_likelihood
    from napari_lesionmix.errors import LesionMixError
    from napari_lesionmix.io.atomic import check_output
    from napari_lesionmix.io.brain import load_brain_mask
    from napari_lesionmix.io.dataset import discover_dataset

    out = str(args.out)
    if not (out.endswith(".nii.gz") or out.endswith(".nii")):
        raise LesionMixError(f"Output '{out}' must end in .nii.gz or .nii.")
    ds = discover_dataset(args.dataset)
    inputs = [args.brain_mask, *(c.label_path for c in ds.cases), *(p for c in ds.cases for p in c.image_paths)]
    check_output(out, inputs, args.overwrite)
    brain = None
    if args.brain_mask:
        brain = load_brain_mask(args.brain_mask)[0]
    lmap = likelihood_map(ds, brain_mask=brain, sigma_mm=args.sigma_mm,
                          use_dataset_brain_masks=not args.no_brain_masks)
    save_likelihood(lmap, out)
    n = int(np.count_nonzero(lmap.values))
    print(f"likelihood: {len(ds)} cases, {n} voxels with non-zero likelihood -> {out}")
    return 0
