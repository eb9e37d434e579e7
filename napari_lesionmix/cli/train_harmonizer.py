"""``lesionmix train-harmonizer``: train ARHNet on a labelled dataset folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-harmonizer",
        help="train an ARHNet lesion harmonizer on a labelled dataset (self-supervised)",
        description="ARHNet (Huo et al. 2023): perturb each lesion's intensity by Eq. 1 and learn to "
        "undo it (losses of Eq. 6). Writes a resumable checkpoint after every epoch and the best one "
        "(lowest validation fMAE with every held-out cross-subject paste within 15 %; unanchored models: lowest "
        "contrast error) as NAME.best.pt. Progress shows it/s and "
        "the time left; each validation prints the paper's fMAE task and the cross-subject criterion.",
    )
    p.add_argument("--dataset", required=True, metavar="DIR", help="dataset folder (nnU-Net, MSD or CASE/CASE_seg pairs)")
    p.add_argument("--out", required=True, metavar="model.pt", help="checkpoint file to write")
    p.add_argument("--recipe", default="paper", choices=("paper", "cpu"),
                   help="defaults of the settings below: the paper's (200 epochs of 64^3 patches, lr 1e-4 / 5e-5; "
                   "for a GPU) or the CPU recipe the shipped model was trained with (32 epochs of 24^3 patches, "
                   "lr 1e-3 / 5e-4, --gain-range 4: a useful model in minutes at 2 mm); flags given override it")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--patch-size", type=int, default=None, help="patch side in voxels (multiple of 2**depth)")
    p.add_argument("--patches-per-case", type=int, default=None,
                   help="random lesion patches per training case and epoch")
    p.add_argument("--lr-g", type=float, default=None)
    p.add_argument("--lr-d", type=float, default=None)
    p.add_argument("--base-channels", type=int, default=8, help="generator width at full resolution")
    p.add_argument("--depth", type=int, default=3, help="generator down-sampling levels")
    p.add_argument("--val-case", action="append", default=None, metavar="ID",
                   help="hold out this case for validation (repeat); default: --n-val cases drawn with the seed")
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--gain-range", type=float, default=None,
                   help="draw the Eq. 1 factor 1+alpha log-uniformly in [1/G, G] (G > 1) instead of U(0.7, 1.3): "
                   "teaches undoing lesions pasted from scans of another gain (the shipped model uses 4)")
    p.add_argument("--anchor", default=None, choices=("host-lesions", "none"),
                   help="host-lesions (default): half the training pairs get their lesion's level given, with an "
                   "input channel saying so, as harmonizing with a label gives a paste the level of the host's own "
                   "lesions (issue 17); none: the paper's pairs only")
    p.add_argument("--normalisation", default=None, choices=("robust", "minmax"),
                   help="per-scan intensity scaling: robust (median of the brain at 0.5; default) or the paper's minmax")
    p.add_argument("--cross-val-every", type=int, default=None,
                   help="score the cross-subject contrast criterion every N validations (0: never; needs 2 held-out cases)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --out when it exists")
    p.add_argument("--overwrite", action="store_true", help="train anew over an existing --out checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from tqdm import tqdm

    from napari_lesionmix.errors import LesionMixError
    from napari_lesionmix.harmonize import ModelConfig, TrainConfig
    from napari_lesionmix.harmonize.device import require_torch

    require_torch("lesionmix train-harmonizer")
    from napari_lesionmix.harmonize.train import check_out_not_input, train_harmonizer
    from napari_lesionmix.io.atomic import check_output

    if Path(args.out).is_dir():
        raise LesionMixError(f"Checkpoint '{args.out}' is a folder; name a checkpoint file, e.g. '{args.out}/model.pt'.")
    # A dataset file is never replaced (and --overwrite never offered for one); a trained checkpoint
    # is the user's work: --resume continues it, --overwrite trains anew over it.
    check_out_not_input(args.dataset, args.out)
    check_output(args.out, (), args.overwrite or args.resume, "Checkpoint")
    base = TrainConfig.cpu_recipe() if args.recipe == "cpu" else TrainConfig()
    # Settings given on the command line override the recipe's; the others keep its values.
    names = ("epochs", "batch_size", "patch_size", "patches_per_case", "lr_g", "lr_d", "n_val", "val_every",
             "gain_range", "anchor", "normalisation", "cross_val_every")
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    config = base.replace(
        **given, val_cases=tuple(args.val_case) if args.val_case else None, seed=args.seed, device=args.device,
        amp=not args.no_amp, model=ModelConfig(base_channels=args.base_channels, depth=args.depth),
    )
    bar = None

    def callback(info: dict) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            # tqdm's bar shows steps done, it/s and the time left (ETA).
            bar = tqdm(total=info["epochs"] * info["n_steps"], initial=info["global_step"] - 1,
                       unit="it", desc="train-harmonizer", dynamic_ncols=True)
        if "val" in info:
            v = info["val"]
            cross = (f" | contrast error mean {v['contrast_error_mean']:.3f} max {v['contrast_error_max']:.3f} "
                     f"(raw paste {v['composite_contrast_error_mean']:.3f})" if "contrast_error_mean" in v else "")
            bar.write(f"epoch {info['epoch']}: loss_g {info['loss_g']:.4f} loss_d {info['loss_d']:.4f} | "
                      f"val fMAE {v['fmae']:.4f} (composite {v['composite_fmae']:.4f}) "
                      f"fPSNR {v['fpsnr']:.2f} dB (composite {v['composite_fpsnr']:.2f}){cross}"
                      + (" *best*" if info.get("is_best") else ""))
            return
        bar.update(1)
        bar.set_postfix(epoch=info["epoch"], g=f"{info['loss_g']:.3f}", d=f"{info['loss_d']:.3f}")

    with warnings.catch_warnings():
        warnings.simplefilter("always", RuntimeWarning)
        result = train_harmonizer(args.dataset, args.out, config, callback=callback, resume=args.resume,
                                  log=lambda m: print(f"train-harmonizer: {m}"))
    if bar is not None:
        bar.close()
    print(f"train-harmonizer: {result['epochs_done']} epoch(s) done in {result['seconds']:.0f} s -> {result['out']}")
    if result.get("best_path"):
        b = result["best"]
        print(f"train-harmonizer: best {b['metric']} {b['score']:.4f} at epoch {b['epoch']} -> {result['best_path']}")
    return 0
