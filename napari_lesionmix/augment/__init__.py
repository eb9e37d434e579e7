"""Augmentation methods. Each is a ``sample_*`` (draws params) and an apply function (uses them)."""

from napari_lesionmix.augment.carvemix import (
    CarveField,
    CarveMixParams,
    carvemix,
    sample_carvemix,
    sample_lambda,
)
from napari_lesionmix.augment.params import Params, Synthetic, params_from_dict, params_from_json

__all__ = [
    "CarveField",
    "CarveMixParams",
    "Params",
    "Synthetic",
    "carvemix",
    "params_from_dict",
    "params_from_json",
    "sample_carvemix",
    "sample_lambda",
]
