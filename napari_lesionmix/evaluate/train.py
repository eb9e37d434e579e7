"""Train the small 3D segmenter of one run and predict the test cases (MONAI, imported lazily).

MONAI supplies what the field already trusts: ``monai.networks.nets.UNet``,
``monai.losses.DiceLoss`` and ``monai.inferers.sliding_window_inference``.
This module only adds what the protocol fixes: the per-case normalisation,
the patch sampler (a fixed real:synthetic ratio, or nnU-Net's pooled sampling
with its foreground oversampling; synthetic patches swapped in or added)
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


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``-voxel blocks of the last three axes (the edge that does not fill a block is cut)."""
    f = int(factor)
    if f == 1:
        return np.asarray(a)
    a = np.asarray(a, np.float32)
    lead, spatial = a.shape[:-3], [s // f for s in a.shape[-3:]]
    a = a[(..., *(slice(0, n * f) for n in spatial))]
    shape = (*lead, *(x for n in spatial for x in (n, f)))
    return a.reshape(shape).mean(axis=tuple(len(lead) + 2 * i + 1 for i in range(3)))


def volume_from_case(case, brain: np.ndarray | None = None, downsample: int = 1) -> Volume:
    """A :class:`Volume` from a loaded :class:`~napari_lesionmix.io.nifti.Case`.

    ``downsample`` > 1 averages blocks of that many voxels per axis (a 1 mm
    scan at 2 is a 2 mm one); label and brain keep the blocks at least half
    inside. The files are read as they are: nothing is written.
    """
    from napari_lesionmix.evaluate.metrics import voxel_ml

    if case.label is None:
        raise LesionMixError(f"Case '{case.case_id}' has no label map; evaluation needs one.")
    f = int(downsample)
    image, label = case.image, np.asarray(case.label) > 0
    if f > 1:
        image, label = block_mean(image, f), block_mean(label, f) >= 0.5
        brain = block_mean(brain, f) >= 0.5 if brain is not None else None
    return Volume(normalise(image, brain), label, case.case_id, voxel_ml(case.affine) * f**3,
                  tuple(float(x) * f for x in case.spacing))


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


#: Patch samplers: how synthetic cases enter training (see :func:`sample_plan`).
SAMPLINGS = ("ratio", "pooled")
#: nnU-Net's foreground oversampling (``oversample_foreground_percent = 0.33``).
NNUNET_FOREGROUND = 0.33
#: Spawn keys of the three sampling streams: real patches, synthetic patches, and which slot is which.
_REAL_KEY, _SYN_KEY, _MIX_KEY = (2**31 - 3,), (2**31 - 3, 1), (2**31 - 3, 2)


def _stream(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=key)))


def synthetic_share(sampling: str, n_real: int, n_synthetic: int, synthetic_ratio: float) -> float:
    """Expected fraction of training patches drawn from synthetic cases.

    ``ratio``: the fixed ``synthetic_ratio``. ``pooled`` (nnU-Net): the
    synthetic cases join the training set and every patch comes from a case
    drawn uniformly, so the share is N / (K + N). No synthetic case: 0.
    """
    if not n_synthetic:
        return 0.0
    if sampling == "pooled":
        return n_synthetic / (n_real + n_synthetic)
    return float(synthetic_ratio)


def sample_plan(seed: int, iterations: int, batch: int, share: float, extra_iterations: bool) -> np.ndarray:
    """Which patch slot of training is synthetic: a bool array of shape (steps, batch).

    Without ``extra_iterations`` the run has ``iterations`` steps and each slot
    is synthetic with probability ``share`` (real patches are swapped out).
    With it, the run keeps exactly ``iterations * batch`` real slots, the
    real patches of the condition without synthetic data, and adds
    ``share / (1 - share)`` as many synthetic ones, placed at random (so the
    run has about ``iterations / (1 - share)`` steps): synthetic data is
    added, not swapped in.
    """
    rng = _stream(seed, _MIX_KEY)
    iterations, batch = int(iterations), int(batch)
    if share <= 0:
        return np.zeros((iterations, batch), bool)
    if not extra_iterations:
        return rng.random((iterations, batch)) < share
    n_real = iterations * batch
    steps = int(np.ceil(n_real / (1.0 - share) / batch))
    flags = np.ones(steps * batch, bool)
    flags[rng.permutation(steps * batch)[:n_real]] = False
    return flags.reshape(steps, batch)


def patch_batches(real: Sequence[Volume], synthetic: Sequence[Volume], plan: np.ndarray, seed: int, patch: int,
                  foreground_fraction: float):
    """Yield the training batches ``(images, labels)`` of ``plan`` (:func:`sample_plan`), one per step.

    A real slot takes the next patch of the real stream (which case, the
    foreground coin, the position and the augmentation all come from the
    generator of ``seed`` for real patches), a synthetic slot the next of the
    synthetic stream: the real patches do not depend on the synthetic data.
    """
    real_rng, syn_rng = _stream(seed, _REAL_KEY), _stream(seed, _SYN_KEY)
    for row in plan:
        imgs, labs = [], []
        for is_syn in row:
            rng, pool = (syn_rng, synthetic) if is_syn else (real_rng, real)
            vol = pool[int(rng.integers(len(pool)))]
            img, lab = _augment(*_crop(vol, rng, int(patch), rng.random() < foreground_fraction), rng)
            imgs.append(img)
            labs.append(lab[None])
        yield imgs, labs


def train_and_predict(real: Sequence[Volume], synthetic: Sequence[Volume], test: Sequence[Volume], *,
                      seed: int, iterations: int, batch: int, patch: int, channels: Sequence[int], lr: float,
                      synthetic_ratio: float, foreground_fraction: float, device: str = "cpu",
                      curve_every: int = 50, sampling: str = "ratio", extra_iterations: bool = False,
                      validation: Sequence[Volume] = (),
                      progress: Callable[[int], None] | None = None):
    """Train on ``real`` (+ ``synthetic``) and return sigmoid probability maps of ``test`` and ``validation``.

    Parameters
    ----------
    real, synthetic, test : sequence of Volume
        ``synthetic`` may be empty (the "none" condition).
    sampling : {"ratio", "pooled"}
        ``ratio``: a patch is synthetic with probability ``synthetic_ratio``;
        ``pooled``: as nnU-Net, every patch comes from a case drawn uniformly
        from the K + N cases (see :func:`synthetic_share`).
    extra_iterations : bool
        Keep every real patch of the condition without synthetic data and add
        the synthetic ones in extra steps (:func:`sample_plan`).
    foreground_fraction : float
        Chance that a patch is centred near a lesion voxel (nnU-Net: 0.33).
    seed : int
        Seeds the weights and the three sampling streams. The real patches
        (case, position, augmentation) come from their own stream, so every
        condition of one seed sees the same real patches, in the same order
        (all of them with ``extra_iterations``, a prefix of them without).
    validation : sequence of Volume
        Cases scored for the threshold calibration (never trained on here).
    progress : callable(n), optional
        Called with the number of iterations done since its last call.

    Returns
    -------
    (test_probs, validation_probs, curve, steps)
        float32 maps, ``[iteration, mean training loss]`` every
        ``curve_every`` steps, and the number of steps run.
    """
    import torch
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceLoss

    if not real:
        raise LesionMixError("A run needs at least one real training case.")
    if sampling not in SAMPLINGS:
        raise LesionMixError(f"Sampling '{sampling}' is not one of {', '.join(SAMPLINGS)}.")
    torch.manual_seed(int(seed))
    share = synthetic_share(sampling, len(real), len(synthetic), synthetic_ratio)
    plan = sample_plan(seed, iterations, batch, share, extra_iterations)
    steps = len(plan)
    dev = torch.device(device)
    net = build_network(real[0].image.shape[0], channels).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=float(lr), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    dice_loss = DiceLoss(sigmoid=True, batch=True)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    curve: list[list[float]] = []
    window: list[float] = []
    net.train()
    since = 0
    batches = patch_batches(real, synthetic, plan, seed, int(patch), foreground_fraction)
    for it in range(1, steps + 1):
        imgs, labs = next(batches)
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
        if it % int(curve_every) == 0 or it == steps:
            curve.append([it, float(np.mean(window))])
            window = []
        since += 1
        if progress is not None and (since >= 10 or it == steps):
            progress(since)
            since = 0
    net.eval()

    def predict(vols):
        out = []
        with torch.no_grad(), torch.autocast(dev.type, enabled=amp):
            for vol in vols:
                x = torch.from_numpy(vol.image[None]).to(dev)
                logits = sliding_window_inference(x, (int(patch),) * 3, 4, net, overlap=0.5, mode="gaussian")
                out.append(torch.sigmoid(logits.float())[0, 0].cpu().numpy().astype(np.float32))
        return out

    return predict(test), predict(validation), curve, steps


#: Thresholds the calibration tries.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


def best_threshold(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[float, float]:
    """The threshold of :data:`THRESHOLDS` with the best Dice pooled over ``probs`` (ties: nearest 0.5).

    Returns
    -------
    (threshold, dice)
    """
    best = (THRESHOLD, -1.0)
    for t in sorted(THRESHOLDS, key=lambda t: abs(t - THRESHOLD)):
        inter = sum(int(np.count_nonzero((p > t) & lab)) for p, lab in zip(probs, labels, strict=True))
        total = sum(int(np.count_nonzero(p > t)) + int(np.count_nonzero(lab)) for p, lab in zip(probs, labels,
                                                                                              strict=True))
        d = 2.0 * inter / total if total else 1.0
        if d > best[1] + 1e-12:
            best = (float(t), d)
    return best
