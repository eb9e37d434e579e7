"""Online lesion augmentation inside nnU-Net v2's own training (``pip install 'napari-lesionmix[nnunet]'``).

Trainers ``nnUNetTrainerCarveMix``, ``nnUNetTrainerSoftCP``, ``nnUNetTrainerMixup``,
``nnUNetTrainerCutMix``, ``nnUNetTrainerTumorCP`` (one per registered method that mixes a
donor into a host; made below from the registry) and ``nnUNetTrainerLesionMix`` (a lesion
bank of the fold's training cases, in patch space: :mod:`~napari_lesionmix.integrations.nnunet_lesionmix`)
put the method first in nnU-Net's training transforms, so it runs per sample, in nnU-Net's
data-augmentation workers, before nnU-Net's own spatial and intensity augmentation.

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
Patch ``k`` of data-augmentation worker ``w`` (0 in the main process with
``nnUNet_n_proc_DA=0``; batchgenerators' thread id otherwise, passed to the transform by
the loader's ``set_thread_id``: :func:`worker_aware_loader`) decides whether it is augmented
from ``SeedSequence(seed, spawn_key=(k, 0, w))`` and draws the donor, its patch and the
method's params from ``(k, 1, w)`` (:func:`patch_streams`; the method's own params stream is
``sample_rng(seed, k)``, ``(w << 32) + k`` for ``w > 0``). Two runs with one
``LESIONMIX_SEED`` thus make the same draws in every worker, and two workers never repeat each
other. nnU-Net's own choice of host patches is not seeded (its workers get ``seeds=None``), so
the host patches, and therefore the samples, still differ between runs.

Each epoch the training log gets one line: how many patches the method changed and how many
it left as they were (a donor that could not make a sample); ``lesionmix_online.json`` in
the fold's output folder records the method, options, prob, seed and the donor cases.
"""

from __future__ import annotations

import os
import re

import numpy as np

try:
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"The nnU-Net trainers need nnU-Net v2: pip install 'napari-lesionmix[nnunet]' ({exc}).") from None

from napari_lesionmix.augment.pipeline import DONOR_TRIES
from napari_lesionmix.augment.registry import get_method, methods, options_of
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.integrations.nnunet_base import (
    DEFAULT_PROB,
    ENV_OPTIONS,
    ENV_PROB,
    ENV_SEED,
    MANIFEST_COPY,
    SMOKE_ITERATIONS,
    PatchTransform,
    carry_export_provenance,
    nnUNetTrainerLesionAugment,
    patch_streams,
    settings_from_env,
    worker_aware_loader,
)
from napari_lesionmix.integrations.nnunet_lesionmix import TRAINING_SET_TRAINERS
from napari_lesionmix.integrations.online import OnlineMethod, case_from_arrays

#: The folder to give nnU-Net as ``nnUNet_extTrainer`` so that ``nnUNetv2_train -tr`` finds the trainers.
TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_trainers")


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


class OnlineLesionTransform(PatchTransform):
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
        super().__init__(prob, seed, counts)
        self.method = get_method(method)
        self.method_name = self.method.name
        if not self.method.needs_donor or self.method.needs_training_set:
            raise LesionMixError(f"{self.method.label} does not mix a donor patch into a host patch.")
        self.options = options_of(self.method, options)
        self.donors = donors
        self.affine = np.diag([*map(float, spacing), 1.0])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method.name!r}, options={self.options.changed()!r}, "
                f"prob={self.prob}, seed={self.seed}, donors={len(self.donors.keys)} training cases)")

    def augment(self, k: int, worker: int, rng: np.random.Generator, image: np.ndarray, seg: np.ndarray):
        host_seg = seg[0]
        shape = tuple(host_seg.shape)
        host = case_from_arrays(image, np.maximum(host_seg, 0), affine=self.affine, case_id="patch")
        brain = host_seg >= 0 if np.any(host_seg < 0) else None
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
            return syn.image, np.asarray(syn.label)
        return None


class nnUNetTrainerDonorAugment(nnUNetTrainerLesionAugment):
    """The trainer base of the methods that mix a patch of another training case into the host patch."""

    def make_lesion_transform(self, tr_keys) -> OnlineLesionTransform:
        donors = DonorPatches(self.preprocessed_dataset_folder, tr_keys, self.dataset_class)
        self.lesion_donors = donors.keys
        return OnlineLesionTransform(self.lesion_method, self.lesion_options, self.lesion_prob, self.lesion_seed,
                                     donors, self.configuration_manager.spacing, self.lesion_counts)


class _Smoke:
    """One epoch of a few iterations: a CPU check that the whole chain runs."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 - nnU-Net's signature
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = SMOKE_ITERATIONS


class nnUNetTrainer_smoke(_Smoke, nnUNetTrainer):
    """nnU-Net's plain trainer for one epoch of a few iterations (the CPU smoke test of an export)."""

    def on_train_start(self):
        super().on_train_start()
        carry_export_provenance(self)


def trainer_class_name(label: str) -> str:
    return "nnUNetTrainer" + re.sub(r"\W", "", label)


def _trainer(name: str, label: str, base: type, suffix: str = "") -> type:
    cls_name = trainer_class_name(label) + suffix
    doc = f"nnU-Net v2's trainer with online {label} (:class:`nnUNetTrainerLesionAugment`)."
    return type(cls_name, base, {"lesion_method": name, "__doc__": doc, "__module__": __name__,
                                 "__qualname__": cls_name})


def _trainer_base(method) -> type | None:
    """The trainer base of a registered method in patch space, or ``None`` where it has none."""
    if method.needs_donor and not method.needs_training_set:
        return nnUNetTrainerDonorAugment
    return TRAINING_SET_TRAINERS.get(method.name)  # a lesion bank of the fold's training cases (LesionMix)


#: Trainer class name -> class, for every method with a patch-space trainer (and its ``_smoke`` variant).
TRAINERS: dict[str, type] = {"nnUNetTrainer_smoke": nnUNetTrainer_smoke}
for _m in methods():
    _base = _trainer_base(_m)
    if _base is not None:
        _full = _trainer(_m.name, _m.label, (_base,))
        TRAINERS[_full.__name__] = _full
        TRAINERS[_full.__name__ + "_smoke"] = _trainer(_m.name, _m.label, (_Smoke, _full), "_smoke")
globals().update(TRAINERS)

__all__ = ["DEFAULT_PROB", "DonorPatches", "ENV_OPTIONS", "ENV_PROB", "ENV_SEED", "MANIFEST_COPY",
           "OnlineLesionTransform", "PatchTransform", "SMOKE_ITERATIONS", "TRAINERS", "TRAINER_DIR",
           "carry_export_provenance", "nnUNetTrainerDonorAugment", "nnUNetTrainerLesionAugment", "patch_streams",
           "settings_from_env", "worker_aware_loader", *TRAINERS]
