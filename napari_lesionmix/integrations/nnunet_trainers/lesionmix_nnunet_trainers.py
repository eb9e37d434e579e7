"""The folder nnU-Net searches when ``nnUNet_extTrainer`` points here (``lesionmix nnunet-train --trainer-dir``).

nnU-Net imports this file as a top-level module; the trainers themselves live in
:mod:`napari_lesionmix.integrations.nnunet`, so a checkpoint's trainer name resolves to the same class.
"""

from napari_lesionmix.integrations.nnunet import TRAINERS

globals().update(TRAINERS)
__all__ = list(TRAINERS)
