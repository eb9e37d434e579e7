"""LesionMix inside nnU-Net v2, in nnU-Net's patch space (``nnUNetTrainerLesionMix``).

LesionMix (Basaran et al., 2023) places lesions from a lesion bank at positions
drawn from a lesion likelihood map until a target lesion load drawn from a
distribution is met (populate), or removes lesions and fills them by Telea's
inpainting (inpaint). In nnU-Net's training loop each sample is a patch of a
preprocessed case (cropped to its nonzero region, resampled to the
configuration's spacing, normalised), so each ingredient is rebuilt there:

lesion bank
    the connected lesions of the fold's *training* cases as nnU-Net preprocessed
    them (same spacing and normalisation as the patches; validation cases never
    donate), built once in the trainer before the workers fork;
placement
    the paper's likelihood map is the normalised sum of training labels in one
    registered frame. nnU-Net's cases are not in one frame (each is cropped to
    its own nonzero box, and a patch does not know where in its case it lies), so
    a map from the labels cannot be placed under a patch honestly; the placement
    region is the patch's nonzero (brain/organ) region, nnU-Net's ``seg >= 0``,
    uniformly. A likelihood-map file (``likelihood``) is refused for this reason;
target load
    drawn per patch from the chosen distribution over the fold's per-case loads
    (mL at the preprocessed spacing) and scaled to the patch:
    ``v * (nonzero mL of the patch) / (mean nonzero mL of the fold's cases)``,
    i.e. the drawn case's load density (``target_load`` is scaled the same way);
populate / inpaint
    :func:`~napari_lesionmix.augment.lesionmix.sample_lesionmix` and
    :func:`~napari_lesionmix.augment.lesionmix.lesionmix` as in the other faces
    (per-lesion transforms, soft-mask blending, clipping to the nonzero region).

Draws come from :func:`~napari_lesionmix.integrations.nnunet.patch_streams`
(seed, worker, patch), as for the other online methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesionmix.augment.lesion_load import voxel_volume_ml
from napari_lesionmix.augment.lesionmix import lesionmix, sample_lesionmix
from napari_lesionmix.augment.lesions import LesionBank
from napari_lesionmix.augment.registry import get_method, options_of
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.integrations.donors import case_from_arrays
from napari_lesionmix.integrations.nnunet_base import PatchTransform, nnUNetTrainerLesionAugment

METHOD = "lesionmix"


@dataclass
class PreprocessedRecord:
    """One preprocessed training case as a lesion-bank record (read when the bank first needs it).

    Attributes
    ----------
    case_id : str
        nnU-Net's case key.
    folder : str
        The configuration's preprocessed folder.
    dataset_class : type
        nnU-Net's dataset class for ``folder``.
    spacing : tuple of float
        The configuration's spacing (mm).
    """

    case_id: str
    folder: str
    dataset_class: type
    spacing: tuple[float, ...]
    nonzero_ml: float | None = None

    def _arrays(self):
        data, seg, _, _ = self.dataset_class(self.folder, [self.case_id]).load_case(self.case_id)
        data, seg = np.asarray(data, np.float32), np.asarray(seg)[0]
        self.nonzero_ml = float(np.count_nonzero(seg >= 0)) * voxel_volume_ml(self.spacing)
        return data, seg

    def load(self):
        data, seg = self._arrays()
        return case_from_arrays(data, np.maximum(seg, 0), affine=np.diag([*self.spacing, 1.0]),
                                case_id=self.case_id)

    def load_brain_mask(self) -> np.ndarray:
        return self._arrays()[1] >= 0


class FoldLesions:
    """The lesion bank, loads and nonzero volumes of a fold's preprocessed training cases.

    Parameters
    ----------
    folder : str
        nnU-Net's preprocessed folder of the configuration.
    keys : sequence of str
        The fold's training cases (the only lesion sources).
    dataset_class : type
        nnU-Net's dataset class for ``folder``.
    spacing : sequence of float
        The configuration's spacing (mm).
    connectivity : int
        Lesion connectivity (6, 18 or 26).
    """

    def __init__(self, folder: str, keys, dataset_class, spacing, connectivity: int = 26):
        self.keys = tuple(sorted(keys))
        if not self.keys:
            raise LesionMixError("The fold has no training case to take lesions from.")
        self.spacing = spacing = tuple(float(s) for s in spacing)
        records = [PreprocessedRecord(k, folder, dataset_class, spacing) for k in self.keys]
        self.bank = LesionBank(records=records, connectivity=connectivity)
        self.loads = self.bank.loads()  # extracts every case's lesions now (once, before the workers fork)
        volumes = []
        for r in records:
            if r.nonzero_ml is None:
                r._arrays()
            volumes.append(r.nonzero_ml)
        self.mean_nonzero_ml = float(np.mean(volumes))
        if not self.mean_nonzero_ml > 0:
            raise LesionMixError("The fold's training cases have no nonzero region to place lesions in.")
        if not len(self.bank):
            raise LesionMixError("The fold's training cases hold no lesion for LesionMix's bank.")

    def __repr__(self) -> str:
        return f"FoldLesions({len(self.keys)} training cases, {len(self.bank)} lesions)"


class LesionMixPatchTransform(PatchTransform):
    """LesionMix over nnU-Net's training patches (populate or inpaint to a per-patch target load).

    Parameters
    ----------
    options : LesionMixOptions or dict
        LesionMix's options (``likelihood``, ``sigma_mm`` and ``intensity_match`` do not apply here).
    prob : float
        Probability that a patch is augmented.
    seed : int
        Root seed.
    fold : FoldLesions
        The fold's training lesions and loads.
    counts : (multiprocessing.Value, multiprocessing.Value), optional
        Shared counters of changed and unchanged patches.
    """

    method_name = METHOD

    def __init__(self, options, prob: float, seed: int, fold: FoldLesions, counts=None):
        super().__init__(prob, seed, counts)
        self.options = options_of(get_method(METHOD), options)
        check_patch_options(self.options)
        self.fold = fold
        self.distribution = self.options.distribution(fold.loads)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(options={self.options.changed()!r}, prob={self.prob}, seed={self.seed}, "
                f"{len(self.fold.keys)} training cases, {len(self.fold.bank)} lesions, "
                f"load {self.distribution.describe()} per case, placed in the patch's nonzero region)")

    def patch_target(self, rng: np.random.Generator, nonzero_ml: float) -> float:
        """A case load (``target_load`` or a draw) scaled to a patch with ``nonzero_ml`` of nonzero region."""
        v = self.options.target_load if self.options.target_load is not None else self.distribution.sample(rng)
        return float(v) * nonzero_ml / self.fold.mean_nonzero_ml

    def augment(self, k: int, worker: int, rng: np.random.Generator, image: np.ndarray, seg: np.ndarray):
        host_seg = seg[0]
        spacing = self.fold.spacing
        host = case_from_arrays(image, np.maximum(host_seg, 0), affine=np.diag([*spacing, 1.0]), case_id="patch")
        region = host_seg >= 0
        if not region.any():
            return None
        target = self.patch_target(rng, float(np.count_nonzero(region)) * voxel_volume_ml(spacing))
        o = self.options
        try:
            params = sample_lesionmix(
                rng, host, self.fold.bank, region.astype(np.float32), target_load_ml=target, mode=o.mode,
                brain_mask=region, augment=o.augment(), source_cases=self.fold.keys,
                lesion_sampling=o.lesion_sampling, tolerance_ml=o.tolerance_ml, tolerance_frac=o.tolerance_frac,
                max_insertions=o.max_insertions, on_unreachable="raise" if o.strict else "ignore",
                seed=self.seed, sample_index=(worker << 32) + k)
            if not (params.insertions or params.removals):
                return None  # the patch already has its target load
            syn = lesionmix(host, params, self.fold.bank, brain_mask=region)
        except LesionMixError:
            return None  # e.g. strict and the target cannot be reached in this patch
        return syn.image, np.asarray(syn.label)


def check_patch_options(options) -> None:
    """Refuse the LesionMix options that only mean something on the raw scans' grid."""
    if options.likelihood:
        raise LesionMixError("LesionMix in nnU-Net places lesions in the patch's nonzero region: a likelihood "
                             "map file lies on the raw scans' grid, which nnU-Net's patches are not on.")
    if options.sigma_mm:
        raise LesionMixError("LesionMix in nnU-Net computes no likelihood map, so sigma_mm does not apply.")
    if options.intensity_match != "none":
        raise LesionMixError("LesionMix in nnU-Net pastes lesions between cases nnU-Net has already normalised: "
                             f"intensity_match must be 'none', got '{options.intensity_match}'.")


class nnUNetTrainerLesionMixBase(nnUNetTrainerLesionAugment):
    """nnU-Net's trainer with LesionMix (:class:`LesionMixPatchTransform`) first in its training transforms."""

    lesion_method = METHOD
    lesion_skip_reason = "already at their target load, or no lesion fitted"

    def make_lesion_transform(self, tr_keys) -> LesionMixPatchTransform:
        check_patch_options(self.lesion_options)
        fold = FoldLesions(self.preprocessed_dataset_folder, tr_keys, self.dataset_class,
                           self.configuration_manager.spacing, self.lesion_options.connectivity)
        self.lesion_donors = fold.keys
        transform = LesionMixPatchTransform(self.lesion_options, self.lesion_prob, self.lesion_seed, fold,
                                            self.lesion_counts)
        self.lesion_record = {"lesions": len(fold.bank),
                              "case_loads_ml": {k: round(v, 4) for k, v in fold.loads.items()},
                              "distribution": transform.distribution.describe(),
                              "mean_nonzero_ml": round(fold.mean_nonzero_ml, 4),
                              "placement": "the patch's nonzero region (seg >= 0)"}
        return transform


#: Registered method name -> the trainer base of a method whose lesions come from the fold's training set.
TRAINING_SET_TRAINERS: dict[str, type] = {METHOD: nnUNetTrainerLesionMixBase}
