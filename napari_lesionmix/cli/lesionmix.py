"""``lesionmix lesionmix``: one LesionMix sample (populate or inpaint lesions to a target load)."""

from __future__ import annotations

import argparse

from napari_lesionmix.cli._common import load_mask_on_grid, read_params

DISTRIBUTIONS = ("low", "medium", "high", "uniform", "gaussian", "real")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lesionmix",
        help="populate or inpaint lesions of a host scan until a target lesion load is reached",
        description="LesionMix: a target lesion load (--target-load, or drawn from --load-dist over "
        "the dataset's loads) is reached by pasting augmented lesions of the dataset at positions "
        "drawn from the lesion likelihood map (populate) or by removing host lesions with Telea "
        "inpainting (inpaint). Writes DIR/image_0000.nii.gz (one per channel), label.nii.gz, "
        "mask.nii.gz and params.json.",
    )
    p.add_argument("--dataset", required=True, metavar="DIR",
                   help="dataset folder: the lesion bank, the load distribution and the likelihood map")
    host = p.add_mutually_exclusive_group(required=True)
    host.add_argument("--host", metavar="CASE_ID", help="host case of the dataset")
    host.add_argument("--host-image", action="append", metavar="H.nii.gz",
                      help="host image file; repeat once per channel")
    p.add_argument("--host-label", metavar="HL.nii.gz", help="host label (with --host-image)")
    p.add_argument("--host-brain-mask", metavar="HB.nii.gz", help="host brain mask (with --host-image)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-load", type=float, metavar="ML", help="target lesion load in mL")
    target.add_argument("--load-dist", choices=DISTRIBUTIONS,
                        help="draw the target load from this distribution of the dataset's loads")
    p.add_argument("--dist-low", type=float, metavar="ML", help="override the distribution's lower bound")
    p.add_argument("--dist-high", type=float, metavar="ML", help="override the distribution's upper bound")
    p.add_argument("--dist-mean", type=float, metavar="ML", help="override the gaussian mean")
    p.add_argument("--dist-sd", type=float, metavar="ML", help="override the gaussian sd")
    p.add_argument("--mode", choices=("auto", "populate", "inpaint"), default="auto",
                   help="populate (add), inpaint (remove) or auto (by the target; default)")
    p.add_argument("--likelihood", metavar="map.nii.gz",
                   help="likelihood map (default: computed from the dataset, see `lesionmix likelihood`)")
    p.add_argument("--sigma-mm", type=float, default=0.0, help="smoothing of a computed likelihood map (mm)")
    replay = p.add_mutually_exclusive_group()
    replay.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    replay.add_argument("--params", metavar="params.json", help="replay the params of an earlier sample")
    p.add_argument("--tolerance-ml", type=float, default=0.05, help="absolute load tolerance (mL)")
    p.add_argument("--tolerance-frac", type=float, default=0.05, help="relative load tolerance")
    p.add_argument("--max-insertions", type=int, default=100, help="cap on pasted lesions")
    p.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26)
    p.add_argument("--intensity-match", choices=("none", "median"), default="none",
                   help="scale pasted lesions by the host/source normal-tissue median ratio (default none)")
    p.add_argument("--strict", action="store_true", help="fail (exit 2) when the target load is not reached")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from napari_lesionmix.augment.lesion_load import LoadDistribution
    from napari_lesionmix.augment.lesionmix import LesionMixParams, lesionmix, sample_lesionmix
    from napari_lesionmix.augment.lesions import LesionBank
    from napari_lesionmix.augment.likelihood import likelihood_map, load_likelihood
    from napari_lesionmix.errors import LesionMixError
    from napari_lesionmix.io.dataset import discover_dataset
    from napari_lesionmix.io.nifti import load_case
    from napari_lesionmix.io.synthetic import write_synthetic

    ds = discover_dataset(args.dataset)
    params = None
    if args.params:
        params = read_params(args.params, LesionMixParams)
        bank = LesionBank.from_dataset(ds, connectivity=params.connectivity, margin=params.bank_margin)
    else:
        bank = LesionBank.from_dataset(ds, connectivity=args.connectivity)
    if args.host is not None:
        if args.host_label or args.host_brain_mask:
            raise LesionMixError("--host-label and --host-brain-mask go with --host-image, not --host.")
        rec = ds[args.host]
        host = rec.load()
        brain = rec.load_brain_mask()
    else:
        if not args.host_label:
            raise LesionMixError("--host-image needs --host-label (the host's lesion label).")
        host = load_case(args.host_image, args.host_label)
        brain = None
        if args.host_brain_mask:
            brain = load_mask_on_grid(args.host_brain_mask, host)
    if host.label is None:
        raise LesionMixError(f"Host '{host.case_id}' has no label map; LesionMix needs one.")

    if params is not None:
        if params.host_id != host.case_id:
            raise LesionMixError(
                f"Params file '{args.params}' was drawn for host '{params.host_id}', not '{host.case_id}'."
            )
    else:
        overrides = {k: v for k, v in (("low", args.dist_low), ("high", args.dist_high),
                                       ("mean", args.dist_mean), ("sd", args.dist_sd)) if v is not None}
        distribution = None
        if args.target_load is None and args.load_dist is None:
            raise LesionMixError("Give --target-load ML or --load-dist NAME (or --params to replay a sample).")
        if args.load_dist is not None:
            distribution = LoadDistribution.from_dataset(bank.loads(), args.load_dist, **overrides)
        elif overrides:
            raise LesionMixError("--dist-low/--dist-high/--dist-mean/--dist-sd go with --load-dist.")
        if args.likelihood:
            lmap = load_likelihood(args.likelihood)
            if lmap.shape != host.shape:
                raise LesionMixError(
                    f"Likelihood map '{args.likelihood}' has shape {lmap.shape} but host '{host.case_id}' "
                    f"has {host.shape}; they must share a grid."
                )
        else:
            lmap = likelihood_map(ds, sigma_mm=args.sigma_mm)
        seed = 0 if args.seed is None else args.seed
        params = sample_lesionmix(
            np.random.default_rng(seed), host, bank, lmap, target_load_ml=args.target_load,
            distribution=distribution, mode=args.mode, brain_mask=brain,
            tolerance_ml=args.tolerance_ml, tolerance_frac=args.tolerance_frac,
            max_insertions=args.max_insertions, intensity_match=args.intensity_match,
            on_unreachable="raise" if args.strict else "ignore", seed=seed,
        )
    synthetic = lesionmix(host, params, bank, brain_mask=brain)
    inputs = {
        "dataset": str(ds.root), "host_image": list(host.image_paths), "host_label": host.label_path,
        "likelihood": args.likelihood,
    }
    paths = write_synthetic(args.out, synthetic, host, inputs)
    print(f"lesionmix: {params.report()} -> {paths['params'].parent}")
    if not params.target_reached:
        print(f"lesionmix: warning: the target load {params.target_load_ml:.3f} mL was not reached "
              f"(got {params.reached_load_ml:.3f} mL).", file=sys.stderr)
    return 0
