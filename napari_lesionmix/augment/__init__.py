"""Augmentation methods, each a ``sample_*`` (draws frozen params from a Generator) and an
apply function (uses only the params, deterministic).

========== ================================ ====================== ==============================
method     params                           sample                 apply
========== ================================ ====================== ==============================
CarveMix   :class:`CarveMixParams`          :func:`sample_carvemix` :func:`carvemix`
Soft-CP    :class:`SoftCPParams`            :func:`sample_softcp`   :func:`softcp`
LesionMix  :class:`LesionMixParams`         :func:`sample_lesionmix` :func:`lesionmix`
Mixup      :class:`~.baselines.MixupParams` ``sample_mixup``        ``mixup``
CutMix     :class:`~.baselines.CutMixParams` ``sample_cutmix``      ``cutmix``
========== ================================ ====================== ==============================
"""

from napari_lesionmix.augment.carvemix import (
    CarveField,
    CarveMixParams,
    carvemix,
    sample_carvemix,
    sample_lambda,
)
from napari_lesionmix.augment.lesion_load import LoadDistribution, dataset_loads, lesion_load_ml
from napari_lesionmix.augment.lesionmix import LesionMixParams, lesionmix, sample_lesionmix
from napari_lesionmix.augment.lesions import LesionBank, extract_lesions
from napari_lesionmix.augment.likelihood import LikelihoodMap, likelihood_map
from napari_lesionmix.augment.params import Params, Synthetic, params_from_dict, params_from_json
from napari_lesionmix.augment.softcp import SoftCPParams, sample_softcp, softcp
from napari_lesionmix.augment.softmask import soft_mask

__all__ = [
    "CarveField",
    "CarveMixParams",
    "LesionBank",
    "LesionMixParams",
    "LikelihoodMap",
    "LoadDistribution",
    "Params",
    "SoftCPParams",
    "Synthetic",
    "carvemix",
    "dataset_loads",
    "extract_lesions",
    "lesion_load_ml",
    "lesionmix",
    "likelihood_map",
    "params_from_dict",
    "params_from_json",
    "sample_carvemix",
    "sample_lambda",
    "sample_lesionmix",
    "sample_softcp",
    "soft_mask",
    "softcp",
]
