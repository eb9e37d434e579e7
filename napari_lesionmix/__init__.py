"""napari-lesionmix: lesion-aware augmentation for 3D medical image segmentation.

The core (everything but :mod:`napari_lesionmix.widgets`) never imports Qt or
napari, and only :mod:`napari_lesionmix.harmonize` imports torch (lazily).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
