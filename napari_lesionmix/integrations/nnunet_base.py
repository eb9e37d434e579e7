"""The shared part of the nnU-Net v2 trainers: settings, seeded patch streams, the trainer base.

:mod:`napari_lesionmix.integrations.nnunet` (donor methods) and
:mod:`napari_lesionmix.integrations.nnunet_lesionmix` (LesionMix) build on it; see the
former for how the trainers are used.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from typing import Any

import numpy as np

try:
    import torch
    from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"The nnU-Net trainers need nnU-Net v2: pip install 'napari-lesionmix[nnunet]' ({exc}).") from None

from napari_lesionmix.augment.registry import get_method, options_of
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export.provenance import DATASET_JSON_KEY

ENV_OPTIONS, ENV_PROB, ENV_SEED = "LESIONMIX_OPTIONS", "LESIONMIX_PROB", "LESIONMIX_SEED"
DEFAULT_PROB = 0.5
#: Training and validation iterations of the ``_smoke`` variants (one epoch): a CPU check of the chain.
SMOKE_ITERATIONS = (2, 1)
#: The export's manifest as copied beside the trained model (``$nnUNet_results/DATASET/TRAINER__PLANS__CONFIG``).
MANIFEST_COPY = "lesionmix_manifest.jsonl"


def settings_from_env(method: str, environ=None) -> tuple[Any, float, int]:
    """``(options, prob, seed)`` of ``method`` from ``LESIONMIX_OPTIONS``/``_PROB``/``_SEED`` (checked)."""
    env = os.environ if environ is None else environ
    m = get_method(method)
    text = env.get(ENV_OPTIONS, "").strip()
    try:
        raw = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise LesionMixError(f"{ENV_OPTIONS} must be a JSON object of {m.label} options, got {text!r} ({exc}).") from None
    if not isinstance(raw, dict):
        raise LesionMixError(f"{ENV_OPTIONS} must be a JSON object of {m.label} options, got {text!r}.")
    options = options_of(m, raw)
    if m.soft_labels(options):
        raise LesionMixError(f"{m.label} with these options makes soft labels, which nnU-Net cannot train on; "
                             f"set {ENV_OPTIONS}='{{\"label\": \"hard\"}}'.")
    try:
        prob = float(env.get(ENV_PROB, DEFAULT_PROB))
        seed = int(env.get(ENV_SEED, 0))
    except ValueError:
        raise LesionMixError(f"{ENV_PROB} must be a number in [0, 1] and {ENV_SEED} a non-negative integer.") from None
    if not 0.0 <= prob <= 1.0 or seed < 0:
        raise LesionMixError(f"{ENV_PROB} must lie in [0, 1] and {ENV_SEED} be non-negative, got {prob} and {seed}.")
    return options, prob, seed


def patch_streams(seed: int, k: int, worker: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(choice, draws)`` generators of patch ``k`` of data-augmentation worker ``worker``.

    ``SeedSequence(seed, spawn_key=(k, 0, worker))`` decides whether the patch is
    augmented, ``(k, 1, worker)`` draws the rest: a function of (seed, worker, k)
    alone, so two runs with one seed make the same draws in every worker.
    """
    return tuple(np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(k), j, int(worker))))
                 for j in (0, 1))


class PatchTransform(BasicTransform):
    """The seeding, counting and tensor handling of a method over nnU-Net's training patches.

    Subclasses implement :meth:`augment`. Patch ``k`` of worker ``w`` draws from
    :func:`patch_streams` ``(seed, k, w)``; nnU-Net's loader tells each worker its
    number (:meth:`set_worker`, through :func:`worker_aware_loader`).

    Parameters
    ----------
    prob : float
        Probability that a patch is augmented.
    seed : int
        Root seed.
    counts : (multiprocessing.Value, multiprocessing.Value), optional
        Shared counters of changed and skipped patches (seen by the trainer across workers).
    """

    method_name: str = ""

    def __init__(self, prob: float, seed: int, counts=None):
        super().__init__()
        self.prob, self.seed = float(prob), int(seed)
        self.counts = counts if counts is not None else (mp.Value("q", 0), mp.Value("q", 0))
        self._count, self._pid, self._worker = 0, os.getpid(), 0

    def set_worker(self, worker: int) -> None:
        """Start the streams of data-augmentation worker ``worker`` (0 in the main process) at patch 0."""
        self._pid, self._count, self._worker = os.getpid(), 0, int(worker)

    def _next_index(self) -> tuple[int, int]:
        if os.getpid() != self._pid:
            # A process nobody numbered (a loader that never called set_worker): streams of its own,
            # keyed by its pid, so workers never repeat each other (but a rerun does not repeat them).
            self.set_worker(os.getpid())
        k, self._count = self._count, self._count + 1
        return k, self._worker

    def _tally(self, changed: bool) -> None:
        counter = self.counts[0 if changed else 1]
        with counter.get_lock():
            counter.value += 1

    def apply(self, data_dict, **params):
        image, seg = data_dict["image"], data_dict["segmentation"]
        if image.ndim != 4:
            raise LesionMixError(f"{get_method(self.method_name).label} in nnU-Net needs 3D patches (a 3d "
                                 f"configuration), got shape {tuple(image.shape)}.")
        k, worker = self._next_index()
        choice, draws = patch_streams(self.seed, k, worker)
        if choice.random() >= self.prob:
            return data_dict
        out = self.augment(k, worker, draws, image.numpy(), seg.numpy())
        self._tally(out is not None)
        if out is None:
            return data_dict
        data_dict["image"] = torch.from_numpy(np.ascontiguousarray(out[0], np.float32))
        new_seg = seg.clone()
        new_seg[0] = torch.from_numpy(np.where((out[1] == 0) & (seg.numpy()[0] < 0), -1, out[1])).to(seg.dtype)
        data_dict["segmentation"] = new_seg
        return data_dict

    def augment(self, k: int, worker: int, rng: np.random.Generator, image: np.ndarray, seg: np.ndarray):
        """``(image, label)`` of patch ``k`` (``rng``: its draws), or ``None`` when it stays as it is."""
        raise NotImplementedError


def worker_aware_loader(loader_class: type) -> type:
    """``loader_class`` whose ``set_thread_id`` (called by batchgenerators in each worker) numbers our transforms."""

    class WorkerAwareLoader(loader_class):
        def set_thread_id(self, thread_id):
            super().set_thread_id(thread_id)
            for t in getattr(self.transforms, "transforms", ()):
                if isinstance(t, PatchTransform):
                    t.set_worker(thread_id)

    WorkerAwareLoader.__name__ = WorkerAwareLoader.__qualname__ = f"WorkerAware{loader_class.__name__}"
    return WorkerAwareLoader


class nnUNetTrainerLesionAugment(nnUNetTrainer):
    """nnU-Net's trainer with a registered method first in its training transforms.

    Subclasses set ``lesion_method``; options, probability and seed come from the
    environment (:func:`settings_from_env`).
    """

    lesion_method: str = ""
    #: Why a patch the method was asked to change stayed as it was (the epoch's log line).
    lesion_skip_reason: str = "no usable donor patch"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 - nnU-Net's signature
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lesion_options, self.lesion_prob, self.lesion_seed = settings_from_env(self.lesion_method)
        self.lesion_counts = (mp.Value("q", 0), mp.Value("q", 0))
        self.lesion_donors: tuple[str, ...] = ()
        self.lesion_record: dict[str, Any] = {}

    def lesion_transform(self) -> PatchTransform:
        """The method's transform over the fold's training cases (validation cases never feed it)."""
        tr_keys, val_keys = self.do_split()
        if set(tr_keys) & set(val_keys):  # nnU-Net's split guarantees it; a training case in validation would leak
            raise LesionMixError("A training case of this fold is also in its validation set.")
        return self.make_lesion_transform(tr_keys)

    def make_lesion_transform(self, tr_keys) -> PatchTransform:
        """The transform over ``tr_keys``; sets :attr:`lesion_donors` (and :attr:`lesion_record`)."""
        raise NotImplementedError

    def on_train_start(self):
        super().on_train_start()  # nnU-Net writes dataset.json (with the export's summary) beside the model here
        carry_export_provenance(self)

    def get_dataloaders(self):
        # batchgenerators numbers its workers through the loader's set_thread_id: a loader class that passes
        # the number on to our transform makes each worker's draws a function of (seed, worker, patch).
        import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

        original = trainer_module.nnUNetDataLoader
        trainer_module.nnUNetDataLoader = worker_aware_loader(original)
        try:
            loaders = super().get_dataloaders()
        finally:
            trainer_module.nnUNetDataLoader = original
        loader = getattr(loaders[0], "generator", getattr(loaders[0], "data_loader", None))
        numbered = type(loader).__name__.startswith("WorkerAware")
        self.print_to_log_file(f"LesionMix: {type(loaders[0]).__name__} over {type(loader).__name__}: "
                               + ("each worker's draws keyed by its number" if numbered else
                                  "this nnU-Net builds its loader elsewhere; workers keyed by process id "
                                  "(not repeatable from run to run)"))
        return loaders

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        base = nnUNetTrainer.get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=use_mask_for_norm, is_cascaded=is_cascaded, foreground_labels=foreground_labels,
            regions=regions, ignore_label=ignore_label)
        if len(patch_size) != 3:
            raise LesionMixError(f"{get_method(self.lesion_method).label} in nnU-Net needs a 3d configuration, "
                                 f"not '{self.configuration_name}'.")
        transform = self.lesion_transform()
        self.print_to_log_file(f"LesionMix: {transform!r} runs first in the training transforms")
        record = {"method": self.lesion_method, "options": self.lesion_options.to_dict(), "prob": self.lesion_prob,
                  "seed": self.lesion_seed, "donors": list(self.lesion_donors), "fold": self.fold,
                  **self.lesion_record}
        os.makedirs(self.output_folder, exist_ok=True)
        with open(os.path.join(self.output_folder, "lesionmix_online.json"), "w") as f:
            json.dump(record, f, indent=2)
        return ComposeTransforms([transform, *base.transforms])

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        changed, skipped = (int(c.value) for c in self.lesion_counts)
        self.print_to_log_file(f"LesionMix: {get_method(self.lesion_method).label} changed {changed} training "
                               f"patches so far, left {skipped} as they were ({self.lesion_skip_reason})")




def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def carry_export_provenance(trainer) -> str | None:
    """Copy the export's ``manifest.jsonl`` beside the trained model, when its hash is the one recorded.

    nnU-Net already copies ``dataset.json`` (with the export's summary under
    :data:`~napari_lesionmix.export.provenance.DATASET_JSON_KEY`) into the model
    folder; this adds the per-case manifest it names, from ``$nnUNet_raw``.
    Returns the copy's path, or ``None`` (with a log line saying why) when
    there is none to make.
    """
    summary = trainer.dataset_json.get(DATASET_JSON_KEY)
    if not isinstance(summary, dict) or trainer.local_rank != 0:
        return None
    from nnunetv2.paths import nnUNet_raw

    name = os.path.basename(str(summary.get("manifest", "manifest.jsonl")))
    source = os.path.join(nnUNet_raw or "", trainer.plans_manager.dataset_name, name)
    if not (nnUNet_raw and os.path.isfile(source)):
        trainer.print_to_log_file(f"LesionMix: the export's {name} is not under $nnUNet_raw; dataset.json's "
                                  f"'{DATASET_JSON_KEY}' entry is the model's provenance")
        return None
    if _sha256(source) != summary.get("manifest_sha256"):
        trainer.print_to_log_file(f"LesionMix: {source} is not the manifest dataset.json records (changed since "
                                  "the export); not copied")
        return None
    target = os.path.join(trainer.output_folder_base, MANIFEST_COPY)
    shutil.copyfile(source, target)
    return target
