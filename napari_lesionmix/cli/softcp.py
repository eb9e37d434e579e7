"""``lesionmix softcp``: one Soft-CP sample from a host and a donor scan."""

from __future__ import annotations

import argparse

from napari_lesionmix.cli._common import (
    add_pair_arguments,
    load_mask_on_grid,
    load_pair,
    pair_inputs,
    read_params,
)


def register(sub: argparse._SubParsersAction) -> None:
    from napari_lesionmix.augment.softmask import DEFAULT_A, DEFAULT_K_DILATE, DEFAULT_K_ERODE

    p = sub.add_parser(
        "softcp",
        help="soft-copy a donor lesion with its surroundings and soft-paste it into a host scan",
        description="Soft-CP (Eqs. 1-4): I = S*I_lesion + (1-S)*I_host with a soft mask S; label = "
        "donor lesion U host label; the position keeps >= delta1 of the lesion in the reference "
        "(brain mask, a host label, or the host's non-zero image) and <= delta2 on host lesions. "
        "Writes DIR/image_0000.nii.gz (one per channel), label.nii.gz, mask.nii.gz (S) and params.json.",
    )
    add_pair_arguments(p)
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--brain-mask", metavar="BM.nii.gz", help="host brain (or organ) mask: the reference of Eq. 3")
    ref.add_argument("--reference-label", type=int, metavar="N",
                     help="use host label value N as the reference of Eq. 3 (e.g. the kidney)")
    ref.add_argument("--reference", choices=("foreground", "none"),
                     help="reference without a mask: the host's non-zero image (default) or the whole volume")
    p.add_argument("--a", type=float, default=DEFAULT_A, help=f"softening coefficient in (0, 1) [{DEFAULT_A}]")
    p.add_argument("--k-erode", type=int, default=DEFAULT_K_ERODE, help=f"erosion iterations [{DEFAULT_K_ERODE}]")
    p.add_argument("--k-dilate", type=int, default=DEFAULT_K_DILATE,
                   help=f"dilation iterations [{DEFAULT_K_DILATE}]")
    p.add_argument("--delta1", type=float, default=0.9,
                   help="least fraction of the lesion inside the reference (Eq. 3) [0.9]")
    p.add_argument("--delta2", type=float, default=0.0,
                   help="largest fraction of the lesion on host lesions (Eq. 4) [0]")
    p.add_argument("--max-tries", type=int, default=200, help="positions tried per lesion [200]")
    p.add_argument("--placement", choices=("random", "source"), default="random",
                   help="random: anywhere in the reference (the paper); source: near the lesion's own place "
                        "in the donor (registered data) [random]")
    p.add_argument("--jitter-mm", type=float, default=10.0, help="spread of --placement source, in mm [10]")
    p.add_argument("--n-lesions", type=int, default=1, help="donor lesions pasted [1]")
    p.add_argument("--lesion-label", type=int, action="append", metavar="V",
                   help="label value that is lesion (repeatable; default: every non-zero value)")
    p.add_argument("--image-ops", type=int, default=1, metavar="N",
                   help="image-level transforms of the host drawn from none/crop_resize/gamma/noise [1]")
    p.add_argument("--intensity-compat", action="store_true",
                   help="match the lesion's surrounding-ring statistics to the host's (off in the paper)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int, default=None, help="seed of every random choice (default 0)")
    group.add_argument("--params", metavar="params.json", help="replay the params of an earlier sample")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_lesionmix.augment.softcp import DonorLesions, SoftCPParams, sample_softcp, softcp
    from napari_lesionmix.io.synthetic import write_synthetic

    host, donor = load_pair(args)
    brain = load_mask_on_grid(args.brain_mask, host) if args.brain_mask else None
    if args.params:
        params = read_params(args.params, SoftCPParams)
    else:
        if args.reference_label is not None:
            reference = f"label:{args.reference_label}"
        elif brain is not None:
            reference = "brain_mask"
        else:
            reference = args.reference or "foreground"
        seed = 0 if args.seed is None else args.seed
        lesion_labels = tuple(args.lesion_label or ())
        donor_lesions = DonorLesions.from_case(donor, lesion_labels)
        params = sample_softcp(
            np.random.default_rng(seed), host, donor, brain, reference=reference, n_lesions=args.n_lesions,
            a=args.a, k_erode=args.k_erode, k_dilate=args.k_dilate, delta1=args.delta1, delta2=args.delta2,
            max_tries=args.max_tries, placement=args.placement, jitter_mm=args.jitter_mm,
            n_image_ops=args.image_ops, intensity_compat=args.intensity_compat,
            lesion_labels=lesion_labels, seed=seed, donor_lesions=donor_lesions,
        )
    synthetic = softcp(host, donor, params, brain)
    inputs = {**pair_inputs(host, donor), "brain_mask": args.brain_mask}
    paths = write_synthetic(args.out, synthetic, host, inputs)
    ops = ",".join(op.kind for op in params.image_ops) or "none"
    print(f"softcp: {len(params.lesions)} lesion(s) pasted (components "
          f"{', '.join(str(p.component) for p in params.lesions)}), image ops {ops}, "
          f"soft mask {int(np.count_nonzero(synthetic.mask))} voxels -> {paths['params'].parent}")
    return 0
