"""``lesionmix carvemix``: one CarveMix sample from a host and a donor scan."""

from __future__ import annotations

import argparse

from napari_lesionmix.cli._common import add_pair_arguments, load_pair, pair_inputs, read_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "carvemix",
        help="carve a lesion ROI from a donor scan and paste it into a host scan",
        description="CarveMix (Eqs. 1-7): M = {D(donor lesions) <= lambda}; image and label "
        "replaced inside M. Writes DIR/image_0000.nii.gz (one per channel), label.nii.gz, "
        "mask.nii.gz and params.json.",
    )
    add_pair_arguments(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--lam", type=float, help="threshold lambda in mm (default: sampled, Eq. 7)")
    group.add_argument("--seed", type=int, default=None, help="seed for sampling lambda (default 0)")
    group.add_argument("--params", metavar="params.json", help="replay the params of an earlier sample")
    p.add_argument("--per-lesion", action="store_true",
                   help="one lambda per connected lesion, each from its own |Dmin|")
    p.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_lesionmix.augment.carvemix import (
        CarveField,
        CarveMixParams,
        carvemix,
        sample_carvemix,
    )
    from napari_lesionmix.io.synthetic import write_synthetic

    host, donor = load_pair(args)
    if args.params:
        params = read_params(args.params, CarveMixParams)
        field = None
    elif args.lam is not None:
        if args.per_lesion:
            field = CarveField.from_case(donor, per_lesion=True, connectivity=args.connectivity,
                                         max_lambda=max(args.lam, 0.0))
            params = CarveMixParams(host.case_id, donor.case_id, None, (args.lam,) * field.n_lesions,
                                    True, args.connectivity)
        else:
            field = CarveField.from_case(donor, max_lambda=max(args.lam, 0.0))
            params = CarveMixParams(host.case_id, donor.case_id, args.lam)
    else:
        seed = 0 if args.seed is None else args.seed
        field = CarveField.from_case(donor, per_lesion=args.per_lesion, connectivity=args.connectivity)
        params = sample_carvemix(np.random.default_rng(seed), field, host.case_id, donor.case_id, seed=seed)
    synthetic = carvemix(host, donor, params, field=field)
    paths = write_synthetic(args.out, synthetic, host, pair_inputs(host, donor))
    lam = (f"{len(params.lesion_lams)} per-lesion lambdas" if params.per_lesion
           else f"lambda={params.lam:.3f} mm")
    print(f"carvemix: {lam}, ROI {int(synthetic.mask.sum())} voxels -> {paths['params'].parent}")
    return 0
