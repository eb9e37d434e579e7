"""``lesionmix nnunet-train``: nnU-Net v2 training with a method applied online, per training patch.

``LESIONMIX_SEED`` (``--seed``) makes the method's draws the same in every data-augmentation
worker from one run to the next (:func:`~napari_lesionmix.integrations.nnunet.patch_streams`).

It runs nnU-Net's own training (its trainer, checkpoints, final validation) with the
trainer class of :mod:`napari_lesionmix.integrations.nnunet` given directly, so nnU-Net's
trainer search (which imports every trainer module nnU-Net ships, some of them needing
torchvision) is not needed. ``nnUNetv2_train -tr nnUNetTrainerCarveMix`` with
``nnUNet_extTrainer`` set to ``--trainer-dir`` does the same through nnU-Net's own command.
"""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nnunet-train",
        help="train nnU-Net v2 with CarveMix, Soft-CP, TumorCP, Mixup, CutMix or LesionMix applied online to its "
        "training patches",
        description="Runs nnU-Net v2's training of DATASET CONFIG FOLD (as nnUNetv2_train) with the method first "
        "in nnU-Net's training transforms: each training patch is, with probability --prob, mixed with a patch "
        "of another training case of the same fold (LesionMix: populated or inpainted with lesions of the fold's "
        "training cases); validation cases never donate. Needs nnUNet_preprocessed and nnUNet_results, as "
        "nnUNetv2_train does.",
    )
    p.add_argument("dataset", nargs="?", metavar="DATASET", help="dataset id or DatasetXXX_Name")
    p.add_argument("configuration", nargs="?", metavar="CONFIG", help="a 3d configuration, e.g. 3d_fullres")
    p.add_argument("fold", nargs="?", metavar="FOLD", help="fold number (or 'all')")
    p.add_argument("--method", default="carvemix", help="carvemix, softcp, tumorcp, mixup, cutmix or lesionmix (default carvemix)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option, repeatable, e.g. per_lesion=true or label=hard (the method command's "
                   "flags with _ for -)")
    p.add_argument("--prob", type=float, default=None, help="probability a training patch is augmented (0.5)")
    p.add_argument("--seed", type=int, default=None, help="root seed of the method's draws (0)")
    p.add_argument("--smoke", action="store_true",
                   help="one epoch of a few iterations (the _smoke trainer): a CPU check of the whole chain")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (nnUNetPlans)")
    p.add_argument("-device", "--device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (cuda)")
    p.add_argument("--c", dest="continue_training", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--trainer-dir", action="store_true",
                   help="print the folder to set as nnUNet_extTrainer (for nnUNetv2_train -tr) and exit")
    p.set_defaults(func=run)


def _options(specs) -> dict:
    from napari_lesionmix.errors import LesionMixError

    out = {}
    for spec in specs:
        name, eq, value = str(spec).partition("=")
        if not (eq and name.strip()):
            raise LesionMixError(f"Option '{spec}' must look like NAME=VALUE (e.g. per_lesion=true).")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    from napari_lesionmix.errors import LesionMixError

    if args.trainer_dir:
        from napari_lesionmix.integrations.nnunet import TRAINER_DIR

        print(TRAINER_DIR)
        return 0
    if not (args.dataset and args.configuration and args.fold):
        raise LesionMixError("nnunet-train needs DATASET CONFIG FOLD (e.g. 501 3d_fullres 0).")
    for var in ("nnUNet_preprocessed", "nnUNet_results"):
        if not os.environ.get(var):
            raise LesionMixError(f"Set {var} (nnU-Net's folders) before training.")
    from napari_lesionmix.augment.registry import get_method

    method = get_method(args.method)
    os.environ["LESIONMIX_OPTIONS"] = json.dumps(_options(args.option))
    if args.prob is not None:
        os.environ["LESIONMIX_PROB"] = repr(float(args.prob))
    if args.seed is not None:
        os.environ["LESIONMIX_SEED"] = str(int(args.seed))
    from napari_lesionmix.integrations import nnunet

    name = nnunet.trainer_class_name(method.label) + ("_smoke" if args.smoke else "")
    if name not in nnunet.TRAINERS:
        raise LesionMixError(f"{method.label} has no nnU-Net trainer; these do: "
                             f"{', '.join(sorted(n for n in nnunet.TRAINERS if not n.endswith('_smoke')))}.")
    nnunet.settings_from_env(method.name)  # a bad option fails here, before nnU-Net starts
    return train(nnunet.TRAINERS[name], args.dataset, args.configuration, args.fold, args.plans, args.device,
                 args.continue_training)


def train(trainer_class, dataset: str, configuration: str, fold: str, plans_identifier: str = "nnUNetPlans",
          device: str = "cuda", continue_training: bool = False) -> int:
    """nnU-Net's ``run_training`` for one fold with ``trainer_class`` given (no trainer search)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.run.run_training import maybe_load_checkpoint
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from napari_lesionmix.errors import LesionMixError

    fold_value: int | str = fold if fold == "all" else int(fold)
    try:
        name = maybe_convert_to_dataset_name(dataset if dataset.startswith("Dataset") else int(dataset))
    except (RuntimeError, ValueError) as exc:
        raise LesionMixError(f"nnU-Net has no preprocessed dataset '{dataset}' ({exc}).") from None
    folder = os.path.join(nnUNet_preprocessed, name)
    plans_file = os.path.join(folder, plans_identifier + ".json")
    if not os.path.isfile(plans_file):
        raise LesionMixError(f"'{plans_file}' does not exist: run nnUNetv2_plan_and_preprocess first.")
    plans = load_json(plans_file)
    plans["continue_training"] = continue_training
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))  # as nnUNetv2_train does on the CPU
    trainer = trainer_class(plans=plans, configuration=configuration, fold=fold_value,
                            dataset_json=load_json(os.path.join(folder, "dataset.json")),
                            device=torch.device(device))
    maybe_load_checkpoint(trainer, continue_training, False, None)
    trainer.run_training()
    trainer.perform_actual_validation(False)
    return 0
