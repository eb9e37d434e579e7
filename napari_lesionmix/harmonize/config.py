"""Configuration of ARHNet models and training runs (no torch import here).

Where the paper (Huo et al., "ARHNet", MICCAI 2023) is silent, the choice is
made here, documented and exposed as a field with a default:

- Generator: a 3D U-Net of ``depth`` down-sampling levels, ``base_channels``
  features at full resolution, doubled at each level. Encoder and bottleneck
  blocks are (Conv3d 3^3, InstanceNorm, LeakyReLU) x 2. Each decoder block is
  (trilinear up-sampling, concat skip, Conv3d, **ARH**, LeakyReLU, Conv3d,
  **ARH**, LeakyReLU): the ARH module replaces the normalisation of the decoder
  blocks, where RainNet puts its RAIN modules. The input is ``concat(I~, M)``
  (C + 1 channels); the output is the C-channel intensity-difference map.
- Discriminator: a 3D PatchGAN (Conv 4^3 stride 2 + LeakyReLU, then
  ``disc_layers - 1`` of Conv 4^3 stride 2 + InstanceNorm + LeakyReLU, then a
  Conv 3^3 to one channel of patch scores) on ``concat(I^ or I, I~, M)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from napari_lesionmix.errors import LesionMixError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the ARHNet generator and discriminator.

    Attributes
    ----------
    in_channels : int
        Image channels C (the generator sees C + 1 channels with the mask).
    base_channels : int
        Generator features at full resolution (doubled per level). The paper
        gives no widths; 8 keeps the shipped checkpoint near 1 MB.
    depth : int
        Down-sampling levels; patch sides must be divisible by ``2**depth``.
    disc_channels : int
        Discriminator features of its first layer (doubled per layer).
    disc_layers : int
        Strided discriminator layers.
    arh_per_block : {1, 2}
        ARH modules per decoder block (after the first, or after both convolutions).
    boundary_width : int
        Half-width in voxels of the boundary band M~ of Eq. 5 (dilation minus
        erosion of M with a cube of side ``2 * boundary_width + 1``).
    anchor_channel : bool
        One more input channel, ``M`` where the paste's level was anchored to the
        host's lesions and 0 elsewhere (:mod:`napari_lesionmix.harmonize.anchor`),
        so the generator knows when the level is given and when it must infer it.
        Set by training with ``anchor="host-lesions"``; older files have none.
    """

    in_channels: int = 1
    base_channels: int = 8
    depth: int = 3
    disc_channels: int = 16
    disc_layers: int = 3
    arh_per_block: int = 1
    boundary_width: int = 1
    anchor_channel: bool = False

    def __post_init__(self):
        if self.in_channels < 1 or self.base_channels < 1 or self.depth < 1 or self.disc_layers < 1:
            raise LesionMixError("Model config: channels, depth and discriminator layers must be >= 1.")
        if self.arh_per_block not in (1, 2):
            raise LesionMixError(f"Model config: arh_per_block must be 1 or 2, got {self.arh_per_block}.")
        if self.boundary_width < 1:
            raise LesionMixError(f"Model config: boundary_width must be >= 1, got {self.boundary_width}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data, "model config")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one ARHNet training run (paper values as defaults where it gives them).

    Attributes
    ----------
    epochs : int
        Passes over the training patches (paper: 200).
    batch_size : int
        Patches per step (paper: 16).
    patch_size : int
        Side of the cubic patches around lesions (paper: 64 at 1 mm; 32 at
        2 mm covers the same 64 mm).
    patches_per_case : int
        Random patches drawn per training case and epoch (the paper does not
        say; each patch gets its own alpha and lambda of Eq. 1).
    lr_g, lr_d : float
        AdamW learning rates of G and D (paper: 1e-4 and 5e-5).
    lr_decay : {"none", "cosine"}
        Learning-rate schedule over the whole run: constant (the paper says
        nothing), or cosine decay to 0 by the last step (a function of the step
        alone, so a resumed run follows it exactly). Short runs at high rates
        end noisy without it.
    weight_decay : float
        AdamW weight decay (PyTorch's default, the paper does not say).
    betas : tuple of float
        AdamW betas (not given in the paper; (0.5, 0.999) is the usual GAN choice).
    lambda_rec, lambda_btv, lambda_adv : float
        Loss weights of Eq. 6 (paper: 100, 10, 1).
    alpha_range, lam_range : float
        Half-widths of the uniform laws of alpha and lambda in Eq. 1 (paper: 0.3).
    gain_range : float
        0 (default) draws alpha as the paper does. A value g > 1 draws the Eq. 1
        factor ``1 + alpha`` log-uniformly in ``[1/g, g]`` instead: a lesion pasted
        from a scan of another gain differs by such factors (x0.45-x2.2 between
        the sample subjects), far beyond the paper's +/- 30 %, and the
        self-supervised task can only teach to undo the perturbations it draws.
    anchor : {"host-lesions", "none"}
        "host-lesions" (default): half of the training pairs get the level of
        their lesion given, as inference gives a paste the level of the host's
        own lesions (:mod:`napari_lesionmix.harmonize.anchor`, issue 17), and the
        generator an extra input channel saying so (``ModelConfig.anchor_channel``);
        the other half are the paper's pairs. "none" is the paper's input only.
        Recorded in the checkpoint; files without it ran "none".
    normalisation : {"robust", "minmax"}
        Per-scan intensity scaling before Eq. 1 and at inference (recorded in the
        checkpoint); see :mod:`napari_lesionmix.harmonize.data`. The paper's
        min-max scaling is undone by one hot voxel; "robust" is the default.
    cross_val_every : int
        Every this many validations, also score the cross-subject criterion
        (CarveMix at lambda = 0 between held-out cases, donor as is and at gain
        x0.6 and x1.7; :mod:`napari_lesionmix.harmonize.criterion`); 0 never.
        Needs two held-out cases.
    amp : bool
        Mixed precision (bfloat16, or float16 with a gradient scaler) on CUDA; ignored elsewhere.
    val_cases : tuple of str or None
        Case ids held out for validation; ``None`` draws ``n_val`` cases with ``seed``.
    n_val : int
        Held-out cases when ``val_cases`` is ``None``.
    val_patches_per_case : int
        Fixed validation patches per held-out case (same seed every epoch).
    val_every : int
        Validate every this many epochs (and after the last).
    seed : int
        Root seed: model initialisation, split, patches and perturbations.
    device : str
        ``auto``, ``cuda``, ``mps`` or ``cpu``.
    model : ModelConfig
    """

    epochs: int = 200
    batch_size: int = 16
    patch_size: int = 64
    patches_per_case: int = 16
    lr_g: float = 1e-4
    lr_d: float = 5e-5
    lr_decay: str = "none"
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_rec: float = 100.0
    lambda_btv: float = 10.0
    lambda_adv: float = 1.0
    alpha_range: float = 0.3
    lam_range: float = 0.3
    gain_range: float = 0.0
    anchor: str = "host-lesions"
    normalisation: str = "robust"
    cross_val_every: int = 1
    amp: bool = True
    val_cases: tuple[str, ...] | None = None
    n_val: int = 2
    val_patches_per_case: int = 8
    val_every: int = 1
    seed: int = 0
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.patches_per_case >= 1, f"patches per case must be >= 1, got {self.patches_per_case}"),
            (self.patch_size >= 2 ** self.model.depth and self.patch_size % 2 ** self.model.depth == 0,
             f"patch size {self.patch_size} must be a positive multiple of 2**depth = {2 ** self.model.depth}"),
            (math.isfinite(self.lr_g) and math.isfinite(self.lr_d) and self.lr_g > 0 and self.lr_d > 0,
             f"learning rates must be finite and positive, got lr_g {self.lr_g} and lr_d {self.lr_d}"),
            (self.n_val >= 0, f"n_val must be >= 0, got {self.n_val}"),
            (0 <= self.alpha_range < 1 and self.lam_range >= 0, "alpha range must be in [0, 1) and lambda range >= 0"),
            (self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}"),
            (self.gain_range == 0 or self.gain_range > 1, f"gain range must be 0 (the paper's law) or > 1, got {self.gain_range}"),
            (self.lr_decay in ("none", "cosine"), f"lr_decay must be 'none' or 'cosine', got {self.lr_decay!r}"),
            (self.anchor in ("host-lesions", "none"), f"anchor must be 'host-lesions' or 'none', got {self.anchor!r}"),
            (self.normalisation in ("robust", "minmax"), f"normalisation must be 'robust' or 'minmax', got {self.normalisation!r}"),
            (self.cross_val_every >= 0, f"cross_val_every must be >= 0, got {self.cross_val_every}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise LesionMixError(f"Invalid training config: {msg}.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["val_cases"] = None if self.val_cases is None else list(self.val_cases)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig.from_dict(data["model"])
        if data.get("betas") is not None:
            data["betas"] = tuple(data["betas"])
        if data.get("val_cases") is not None:
            data["val_cases"] = tuple(data["val_cases"])
        return _from_dict(cls, data, "training config")

    @classmethod
    def cpu_recipe(cls, **changes) -> TrainConfig:
        """The recipe the shipped checkpoint was trained with: a useful model in minutes on a CPU.

        The paper's losses and batch, with learning rates 1e-3 / 5e-4 (the paper's
        1e-4 / 5e-5 scaled by 10: a CPU affords a few hundred steps, not 200
        epochs) decayed to 0 on a cosine, the Eq. 1 factor drawn in [1/4, 4] (``gain_range=4``) and
        host-lesion anchoring; validation every 8 epochs. ``changes`` override any field.
        """
        base = dict(epochs=32, batch_size=16, patch_size=24, patches_per_case=16, lr_g=1e-3, lr_d=5e-4, lr_decay="cosine",
                    gain_range=4.0, anchor="host-lesions", normalisation="robust", val_every=8, cross_val_every=1)
        return cls(**{**base, **changes})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _from_dict(cls, data: dict[str, Any], what: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise LesionMixError(f"Unknown {what} field(s): {', '.join(unknown)}.")
    return cls(**data)
