"""Train the small 3D segmenter of one run and predict the test cases (MONAI, imported lazily).

MONAI supplies what the field already trusts: ``monai.networks.nets.UNet``,
``monai.losses.DiceLoss`` and ``monai.inferers.sliding_window_inference``.
This module only adds what the protocol fixes: the per-case normalisation,
the patch sampler (a fixed real:synthetic ratio, foreground oversampling)
and the standard augmentation every condition shares (flips on each axis,
small intensity scale and shift), all drawn from generators seeded by the
run's seed, so two conditions with one seed start from the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesionmix.errors import LesionMixError

#: Sigmoid output above which a voxel is lesion.
THRESHOLD = 0.5


@dataclass
class Volume:
    """One case ready for training or testing.

    Attributes
    ----------
    image : ndarray, shape (C, I, J, K), float32
        Channels normalised to zero mean and unit variance inside the brain.
    label : ndarray, shape (I, J, K), bool
        Lesion (any non-zero label value).
    case_id : str
    voxel_ml : float
    spacing : tuple of 3 float
        Voxel size in mm (for the boundary metrics).
    """

    image: np.ndarray
    label: np.ndarray
    case_id: str
    voxel_ml: float = 0.001
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        self.foreground = np.argwhere(self.label)


def normalise(image: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """Each channel z-scored over the brain mask (else its non-zero voxels, else all voxels)."""
    out = np.empty(image.shape, np.float32)
    for c, channel in enumerate(np.asarray(image, np.float32)):
        region = brain if brain is not None and brain.any() else channel != 0
        values = channel[region] if region.any() else channel.ravel()
        out[c] = (channel - values.mean()) / max(float(values.std()), 1e-6)
        if brain is not None and brain.any():
            out[c][~brain] = 0.0  # outside the brain carries no information (and differs by scanner)
    return out


def volume_from_case(case, brain: np.ndarray | None = None) -> Volume:
    """A :class:`Volume` from a loaded :class:`~napari_lesionmix.io.nifti.Case`."""
    from napari_lesionmix.evaluate.metrics import voxel_ml

    if case.label is None:
        raise LesionMixError(f"Case '{case.case_id}' has no label map; evaluation needs one.")
    return Volume(normalise(case.image, brain), np.asarray(case.label) > 0, case.case_id, voxel_ml(case.affine),
                  tuple(float(x) for x in case.spacing))


def pick_device(spec: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is present, else ``"cpu"``; other names are checked."""
    import torch

    spec = str(spec).lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise LesionMixError(f"Device '{spec}' was asked for but no CUDA GPU is available; use --device cpu.")
    if spec not in ("cpu",) and not spec.startswith("cuda"):
        raise LesionMixError(f"Device '{spec}' is not 'auto', 'cpu' or 'cuda[:N]'.")
    return spec


def _crop(vol: Volume, rng: np.random.Generator, patch: int, foreground: bool) -> tuple[np.ndarray, np.ndarray]:
    """A patch of ``vol`` (zero-padded where the volume is smaller), centred on a lesion voxel if asked."""
    shape = np.array(vol.label.shape)
    if foreground and len(vol.foreground):
        centre = vol.foreground[int(rng.integers(len(vol.foreground)))]
        corner = centre - patch // 2 + rng.integers(-patch // 4, patch // 4 + 1, size=3)
    else:
        corner = np.array([int(rng.integers(0, max(int(s) - patch, 0) + 1)) for s in shape])
    corner = np.clip(corner, 0, np.maximum(shape - patch, 0))
    sl = tuple(slice(int(c), int(c) + patch) for c in corner)
    img, lab = vol.image[(slice(None), *sl)], vol.label[sl]
    if img.shape[1:] != (patch,) * 3:  # a volume smaller than the patch: pad to it
        pad = [(0, patch - s) for s in lab.shape]
        img = np.pad(img, [(0, 0), *pad])
        lab = np.pad(lab, pad)
    return img, lab


def _augment(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The standard augmentation of every condition: flips, intensity scale 0.9-1.1 and shift +-0.1 (z units)."""
    for axis in range(3):
        if rng.random() < 0.5:
            img, lab = np.flip(img, axis + 1), np.flip(lab, axis)
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(lab)


def build_network(in_channels: int, channels: Sequence[int]):
    """The small MONAI 3D U-Net every condition trains (one residual unit per level, instance norm)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=int(in_channels), out_channels=1, channels=tuple(channels),
                strides=(2,) * (len(channels) - 1), num_res_units=1)


def train_and_predict(real: Sequence[Volume], synthetic: Sequence[Volume], test: Sequence[Volume], *,
                      seed: int, iterations: int, batch: int, patch: int, channels: Sequence[int], lr: float,
                      synthetic_ratio: float, foreground_fraction: float, device: str = "cpu",
                      curve_every: int = 50,
                      progress: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], list[list[float]]]:
    """Train on ``real`` (+ ``synthetic``) and segment every ``test`` volume.

    Parameters
    ----------
    real, synthetic, test : sequence of Volume
        ``synthetic`` may be empty (the "none" condition); when it is not, a
        patch comes from it with probability ``synthetic_ratio``.
    seed : int
        Seeds the weights, the patch sampler and the augmentation.
    progress : callable(n), optional
        Called with the number of iterations done since its last call.

    Returns
    -------
    (predictions, curve)
        A bool mask per test volume, and ``[iteration, mean training loss]``
        every ``curve_every`` iterations (the learning curve).
    """
    import torch
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceLoss

    if not real:
        raise LesionMixError("A run needs at least one real training case.")
    torch.manual_seed(int(seed))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(2**31 - 3,))))
    dev = torch.device(device)
    net = build_network(real[0].image.shape[0], channels).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=float(lr), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(iterations))
    dice_loss = DiceLoss(sigmoid=True, batch=True)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    curve: list[list[float]] = []
    window: list[float] = []
    net.train()
    since = 0
    for it in range(1, int(iterations) + 1):
        imgs, labs = [], []
        for _ in range(int(batch)):
            pool = synthetic if synthetic and rng.random() < synthetic_ratio else real
            vol = pool[int(rng.integers(len(pool)))]
            img, lab = _augment(*_crop(vol, rng, int(patch), rng.random() < foreground_fraction), rng)
            imgs.append(img)
            labs.append(lab[None])
        x = torch.from_numpy(np.stack(imgs)).to(dev)
        y = torch.from_numpy(np.stack(labs).astype(np.float32)).to(dev)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, enabled=amp):
            logits = net(x)
        logits = logits.float()
        loss = dice_loss(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        window.append(float(loss.detach()))
        if it % int(curve_every) == 0 or it == int(iterations):
            curve.append([it, float(np.mean(window))])
            window = []
        since += 1
        if progress is not None and (since >= 10 or it == int(iterations)):
            progress(since)
            since = 0
    net.eval()
    preds = []
    with torch.no_grad(), torch.autocast(dev.type, enabled=amp):
        for vol in test:
            x = torch.from_numpy(vol.image[None]).to(dev)
            logits = sliding_window_inference(x, (int(patch),) * 3, 4, net, overlap=0.5, mode="gaussian")
            preds.append((torch.sigmoid(logits.float())[0, 0] > THRESHOLD).cpu().numpy())
    return preds, curve

