"""Online lesion augmentation inside nnU-Net v2's own training (``pip install 'napari-lesionmix[nnunet]'``).

Trainers ``nnUNetTrainerCarveMix``, ``nnUNetTrainerSoftCP``, ``nnUNetTrainerMixup`` and
``nnUNetTrainerCutMix`` (one per registered method that mixes a donor into a host; made
below from the registry) put the method first in nnU-Net's training transforms, so it runs
per sample, in nnU-Net's data-augmentation workers, before nnU-Net's own spatial and
intensity augmentation. LesionMix is not offered: its likelihood map and lesion bank live on
the raw scans' grid, not on nnU-Net's cropped, resampled cases.

How a sample is made
--------------------
nnU-Net's loader cuts a patch (the host) from a training case. A donor is drawn uniformly
from the *training* cases of the same fold (``do_split``: validation cases never donate), and
a patch of the host patch's shape is cut from it around one of its foreground voxels
(nnU-Net's ``class_locations``). nnU-Net has resampled every case to one spacing, so both
patches share a grid (affine ``diag(spacing)``) and the method applies as on two scans.
nnU-Net's nonzero region (``seg >= 0``) is the brain mask; ``-1`` (outside it) is kept where
the result is background.

Settings
--------
Read when the trainer is made (``nnUNetv2_train`` passes none): ``LESIONMIX_OPTIONS``
(the method's options as JSON, e.g. ``'{"per_lesion": true}'``; names as the method
command's flags with ``_``), ``LESIONMIX_PROB`` (probability a patch is augmented, default
0.5) and ``LESIONMIX_SEED`` (default 0). ``lesionmix nnunet-train`` sets them from its flags.

Seeding
-------
Patch ``k`` of a data-augmentation process uses ``sample_rng(seed, k)`` for the method's
draws (prob, then params) and its first child stream ``SeedSequence(seed, spawn_key=(k, 1))``
for the donor and its patch; each worker process (``nnUNet_n_proc_DA`` > 0) offsets its
streams by its own key, so two workers never repeat each other. With ``nnUNet_n_proc_DA=0``
the draws are a function of (seed, k) alone; nnU-Net's own patch sampling is not seeded.

Each epoch the training log gets one line: how many patches the method changed and how many
it left as they were (a donor that could not make a sample); ``lesionmix_online.json`` in
the fold's output folder records the method, options, prob, seed and the donor cases.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
from typing import Any

import numpy as np

try:
    import torch
    from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"The nnU-Net trainers need nnU-Net v2: pip install 'napari-lesionmix[nnunet]' ({exc}).") from None

from napari_lesionmix.augment.pipeline import DONOR_TRIES
from napari_lesionmix.augment.registry import get_method, methods, options_of
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.integrations.online import OnlineMethod, case_from_arrays

#: The folder to give nnU-Net as ``nnUNet_extTrainer`` so that ``nnUNetv2_train -tr`` finds the trainers.
TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_trainers")
ENV_OPTIONS, ENV_PROB, ENV_SEED = "LESIONMIX_OPTIONS", "LESIONMIX_PROB", "LESIONMIX_SEED"
DEFAULT_PROB = 0.5
#: Training and validation iterations of the ``_smoke`` variants (one epoch): a CPU check of the chain.
SMOKE_ITERATIONS = (2, 1)


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


class DonorPatches:
    """Patches cut around the foreground of the fold's preprocessed training cases.

    Parameters
    ----------
    folder : str
        nnU-Net's preprocessed folder of the configuration.
    keys : sequence of str
        The fold's training cases (the only donors).
    dataset_class : type
        nnU-Net's dataset class for ``folder`` (blosc2 or numpy).
    """

    def __init__(self, folder: str, keys, dataset_class):
        self.folder, self.keys, self.dataset_class = folder, tuple(sorted(keys)), dataset_class
        if not self.keys:
            raise LesionMixError("The fold has no training case to take donors from.")
        self._dataset = None

    def __getstate__(self):
        return {**self.__dict__, "_dataset": None}  # each process opens the files itself

    def patch(self, rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[str, np.ndarray, np.ndarray] | None:
        """``(case key, image (C, *shape), seg (*shape))`` around a foreground voxel, or ``None`` without one."""
        from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

        if self._dataset is None:
            self._dataset = self.dataset_class(self.folder, list(self.keys))
        key = self.keys[int(rng.integers(len(self.keys)))]
        data, seg, _, props = self._dataset.load_case(key)
        locations = [v for k, v in sorted(props.get("class_locations", {}).items(), key=lambda kv: str(kv[0]))
                     if len(v)]
        if not locations:
            return None
        where = locations[int(rng.integers(len(locations)))]
        centre = np.asarray(where[int(rng.integers(len(where)))])[-len(shape):]
        lo = [int(c) - s // 2 for c, s in zip(centre, shape, strict=True)]
        bbox = [[0, data.shape[0]], *[[a, a + s] for a, s in zip(lo, shape, strict=True)]]
        image = np.asarray(crop_and_pad_nd(data, bbox, 0), np.float32)
        seg_box = [[0, seg.shape[0]], *bbox[1:]]
        label = np.asarray(crop_and_pad_nd(seg, seg_box, -1))[0]
        return key, image, label


class OnlineLesionTransform(BasicTransform):
    """A registered method as a batchgeneratorsv2 transform over nnU-Net's training patches.

    Parameters
    ----------
    method : str
        A registered method that mixes a donor into the host.
    options
        Its options (checked).
    prob : float
        Probability that a patch is augmented.
    seed : int
        Root seed.
    donors : DonorPatches
        The fold's training cases.
    spacing : sequence of float
        nnU-Net's target spacing (mm) of the configuration.
    counts : (multiprocessing.Value, multiprocessing.Value), optional
        Shared counters of changed and skipped patches (seen by the trainer across workers).
    """

    def __init__(self, method: str, options, prob: float, seed: int, donors: DonorPatches, spacing,
                 counts=None):
        super().__init__()
        self.method = get_method(method)
        if not self.method.needs_donor or self.method.needs_training_set:
            raise LesionMixError(f"{self.method.label} does not mix a donor patch into a host patch.")
        self.options = options_of(self.method, options)
        self.prob, self.seed, self.donors = float(prob), int(seed), donors
        self.affine = np.diag([*map(float, spacing), 1.0])
        self.counts = counts if counts is not None else (mp.Value("q", 0), mp.Value("q", 0))
        self._count, self._pid, self._worker = 0, os.getpid(), 0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method.name!r}, options={self.options.changed()!r}, "
                f"prob={self.prob}, seed={self.seed}, donors={len(self.donors.keys)} training cases)")

    def _next_index(self) -> tuple[int, int]:
        if os.getpid() != self._pid:  # a forked worker: its own streams, not a copy of the parent's
            self._pid, self._count, self._worker = os.getpid(), 0, os.getpid()
        k, self._count = self._count, self._count + 1
        return k, self._worker

    def apply(self, data_dict, **params):
        image, seg = data_dict["image"], data_dict["segmentation"]
        if image.ndim != 4:
            raise LesionMixError(f"{self.method.label} in nnU-Net needs 3D patches (a 3d configuration), "
                                 f"got shape {tuple(image.shape)}.")
        k, worker = self._next_index()
        out = self.augment(k, worker, image.numpy(), seg.numpy())
        if out is None:
            return data_dict
        data_dict["image"] = torch.from_numpy(out[0])
        new_seg = seg.clone()
        new_seg[0] = torch.from_numpy(out[1]).to(seg.dtype)
        data_dict["segmentation"] = new_seg
        return data_dict

    def augment(self, k: int, worker: int, image: np.ndarray, seg: np.ndarray):
        """``(image, seg channel 0)`` of patch ``k``, or ``None`` when it stays as it is."""
        host_seg = seg[0]
        shape = tuple(host_seg.shape)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(k, 1, worker)))
        host = case_from_arrays(image, np.maximum(host_seg, 0), affine=self.affine, case_id="patch")
        brain = host_seg >= 0 if np.any(host_seg < 0) else None
        if np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(k, 0, worker))).random() >= self.prob:
            return None
        for _ in range(DONOR_TRIES):
            got = self.donors.patch(rng, shape)
            if got is None:
                continue
            key, d_image, d_seg = got
            donor = case_from_arrays(d_image, np.maximum(d_seg, 0), affine=self.affine, case_id=f"donor-{key}")
            engine = OnlineMethod(self.method, [donor], self.options, 1.0)
            try:
                params = engine.draw(self.seed, k if not worker else (worker << 32) + k, host, brain)
                syn = engine.apply(params, host, brain)
            except LesionMixError:
                continue  # e.g. no place meets Soft-CP's constraints in this patch: another donor may
            label = np.asarray(syn.label)
            label = np.where((label == 0) & (host_seg < 0), -1, label)
            with self.counts[0].get_lock():
                self.counts[0].value += 1
            return np.ascontiguousarray(syn.image, np.float32), label
        with self.counts[1].get_lock():
            self.counts[1].value += 1
        return None


class nnUNetTrainerLesionAugment(nnUNetTrainer):
    """nnU-Net's trainer with a registered method first in its training transforms.

    Subclasses set ``lesion_method``; options, probability and seed come from the
    environment (:func:`settings_from_env`).
    """

    lesion_method: str = ""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 - nnU-Net's signature
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lesion_options, self.lesion_prob, self.lesion_seed = settings_from_env(self.lesion_method)
        self.lesion_counts = (mp.Value("q", 0), mp.Value("q", 0))
        self.lesion_donors: tuple[str, ...] = ()

    def lesion_transform(self) -> OnlineLesionTransform:
        """The method's transform over the fold's training cases."""
        tr_keys, val_keys = self.do_split()
        donors = DonorPatches(self.preprocessed_dataset_folder, tr_keys, self.dataset_class)
        self.lesion_donors = donors.keys
        if set(donors.keys) & set(val_keys):  # nnU-Net's split guarantees it; a donor in validation would leak
            raise LesionMixError("A donor case is in the validation set of this fold.")
        return OnlineLesionTransform(self.lesion_method, self.lesion_options, self.lesion_prob, self.lesion_seed,
                                     donors, self.configuration_manager.spacing, self.lesion_counts)

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
                  "seed": self.lesion_seed, "donors": list(self.lesion_donors), "fold": self.fold}
        os.makedirs(self.output_folder, exist_ok=True)
        with open(os.path.join(self.output_folder, "lesionmix_online.json"), "w") as f:
            json.dump(record, f, indent=2)
        return ComposeTransforms([transform, *base.transforms])

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        changed, skipped = (int(c.value) for c in self.lesion_counts)
        self.print_to_log_file(f"LesionMix: {get_method(self.lesion_method).label} changed {changed} training "
                               f"patches so far, left {skipped} as they were (no usable donor patch)")


class _Smoke:
    """One epoch of a few iterations: a CPU check that the whole chain runs."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 - nnU-Net's signature
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = SMOKE_ITERATIONS


class nnUNetTrainer_smoke(_Smoke, nnUNetTrainer):
    """nnU-Net's plain trainer for one epoch of a few iterations (the CPU smoke test of an export)."""


def trainer_class_name(label: str) -> str:
    return "nnUNetTrainer" + re.sub(r"\W", "", label)


def _trainer(name: str, label: str, base: type, suffix: str = "") -> type:
    cls_name = trainer_class_name(label) + suffix
    doc = f"nnU-Net v2's trainer with online {label} (:class:`nnUNetTrainerLesionAugment`)."
    return type(cls_name, base, {"lesion_method": name, "__doc__": doc, "__module__": __name__,
                                 "__qualname__": cls_name})


#: Trainer class name -> class, for every method that mixes a donor in (and its ``_smoke`` variant).
TRAINERS: dict[str, type] = {"nnUNetTrainer_smoke": nnUNetTrainer_smoke}
for _m in methods():
    if _m.needs_donor and not _m.needs_training_set:
        _full = _trainer(_m.name, _m.label, (nnUNetTrainerLesionAugment,))
        TRAINERS[_full.__name__] = _full
        TRAINERS[_full.__name__ + "_smoke"] = _trainer(_m.name, _m.label, (_Smoke, _full), "_smoke")
globals().update(TRAINERS)

__all__ = ["DonorPatches", "OnlineLesionTransform", "TRAINERS", "TRAINER_DIR", "nnUNetTrainerLesionAugment",
           "settings_from_env", *TRAINERS]
