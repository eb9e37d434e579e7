"""Augmentation methods, each a ``sample_*`` (draws frozen params from a Generator) and an
apply function (uses only the params, deterministic).

The apply functions share their module's name (``carvemix.carvemix``...), so they are not
re-exported here: that would shadow the submodules. Import them from their modules::

    from napari_lesionmix.augment.carvemix import CarveField, sample_carvemix, carvemix

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
    sample_carvemix,
    sample_lambda,
)
from napari_lesionmix.augment.lesion_load import LoadDistribution, dataset_loads, lesion_load_ml
from napari_lesionmix.augment.lesionmix import LesionMixParams, sample_lesionmix
from napari_lesionmix.augment.lesions import LesionBank, extract_lesions
from napari_lesionmix.augment.likelihood import LikelihoodMap, likelihood_map
from napari_lesionmix.augment.params import Params, Synthetic, params_from_dict, params_from_json
from napari_lesionmix.augment.softcp import SoftCPParams, sample_softcp
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
    "dataset_loads",
    "extract_lesions",
    "lesion_load_ml",
    "likelihood_map",
    "params_from_dict",
    "params_from_json",
    "sample_carvemix",
    "sample_lambda",
    "sample_lesionmix",
    "sample_softcp",
    "soft_mask",
]
