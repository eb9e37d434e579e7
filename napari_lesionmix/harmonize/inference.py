"""Harmonize lesions of whole volumes with a trained ARHNet generator.

The generator sees patches of the training patch size, cut around each
connected component of the mask. A component that fits in a patch (with
``margin`` voxels of context) gets one patch centred on it; a larger one is
tiled with overlapping patches (stride ``patch - overlap``) whose outputs are
blended with a tent-shaped weight. Only voxels with ``mask > 0`` change, and
they change by ``(hi - lo) * G(I~, M) * M``, which is ``I^ = I~ + G * M``
(Fig. 1) taken back from the normalised scale (the checkpoint's recorded
normalisation, :func:`~napari_lesionmix.harmonize.data.normalise`) to the image's own scale.

A checkpoint that records its training domain (normalised intensity
percentiles and voxel spacing) warns, in one sentence, through
:class:`OutOfDomainWarning` when an input lies far outside it. Given the
input's spacing, the generator runs at the checkpoint's training spacing
(:mod:`~napari_lesionmix.harmonize.resample`: crop, resample, harmonize,
resample back inside the mask): the spacing then no longer warns, the
intensities still may.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_lesionmix.errors import Cancelled, LesionMixError
from napari_lesionmix.harmonize import resample
from napari_lesionmix.harmonize.anchor import anchor_to_host_lesions, check_anchor
from napari_lesionmix.harmonize.baselines import check_image_mask, output_array
from napari_lesionmix.harmonize.checkpoint import build_generator, load_checkpoint
from napari_lesionmix.harmonize.data import OutOfDomainWarning, crop, domain_warning, normalise
from napari_lesionmix.harmonize.device import resolve_device
from napari_lesionmix.io.morphology import connected_components


def _axis_origins(start: int, stop: int, n: int, patch: int, margin: int, overlap: int) -> list[int]:
    """Patch corners along one axis covering ``[start, stop)`` with context, inside ``[0, n)`` when possible."""
    lo, hi = start - margin, stop + margin
    if hi - lo <= patch:
        origins = [(start + stop) // 2 - patch // 2]
    else:
        stride = max(patch - overlap, 1)
        origins = list(range(lo, hi - patch, stride)) + [hi - patch]
    if n >= patch:
        origins = [min(max(o, 0), n - patch) for o in origins]
    else:
        origins = [(n - patch) // 2 for _ in origins[:1]]  # the whole axis fits: pad it evenly
    return sorted(set(origins))


def _tent(patch: int) -> np.ndarray:
    """3D blending weight, highest at the centre, > 0 everywhere."""
    r = np.arange(patch, dtype=np.float32)
    w1 = np.minimum(r + 1, patch - r) / (patch / 2.0)
    return w1[:, None, None] * w1[None, :, None] * w1[None, None, :]


def plan_patches(mask: np.ndarray, patch: int, margin: int = 4, overlap: int | None = None,
                 connectivity: int = 26) -> tuple[np.ndarray, list[tuple[int, tuple[int, int, int]]]]:
    """Component labels of ``mask > 0`` and the ``(component, origin)`` of every patch."""
    overlap = patch // 2 if overlap is None else overlap
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    comps, _ = connected_components(np.asarray(mask) > 0, rank)
    plan = []
    for idx, sl in enumerate(ndi.find_objects(comps), start=1):
        if sl is None:
            continue
        per_axis = [_axis_origins(s.start, s.stop, n, patch, margin, overlap)
                    for s, n in zip(sl, mask.shape, strict=True)]
        for oi in per_axis[0]:
            for oj in per_axis[1]:
                for ok in per_axis[2]:
                    plan.append((idx, (oi, oj, ok)))
    return comps, plan


class ARHNetHarmonizer:
    """A loaded ARHNet generator; :meth:`harmonize` works on whole volumes.

    Parameters
    ----------
    path : path to a checkpoint (full or slim)
    device : {"auto", "cuda", "mps", "cpu"}
    batch_size : int
        Patches per forward pass.
    margin : int
        Voxels of context around a component before it needs tiling.
    overlap : int or None
        Overlap of tiles of a large component (default: half a patch).
    anchor : {"host-lesions", "none"} or None
        Host-lesion anchoring before the generator (:mod:`.anchor`); default: what
        the checkpoint was trained with ("none" for files that do not say).
        Overriding it feeds the generator inputs unlike its training data; it
        exists for ablations.
    """

    method = "arhnet"

    def __init__(self, path: str | os.PathLike, device: str = "auto", batch_size: int = 4,
                 margin: int = 4, overlap: int | None = None, anchor: str | None = None):
        self.path = Path(path)
        where = os.fspath(path)
        state = load_checkpoint(path)
        self.generator = build_generator(state, where)
        self.device = resolve_device(device)
        self.generator.to(self.device).eval()
        self.model_config = self.generator.config
        train = state.get("train_config") or {}
        self.patch_size = int(train.get("patch_size", 64))
        self.anchor = check_anchor(str(anchor or train.get("anchor", "none")))
        if self.patch_size % 2 ** self.model_config.depth:
            raise LesionMixError(f"Checkpoint '{where}' records patch size {self.patch_size}, not a multiple of 2**depth.")
        self.batch_size, self.margin, self.overlap = int(batch_size), int(margin), overlap
        self.state_meta = {k: v for k, v in state.items() if k in ("train_config", "model_config", "normalisation", "val", "epoch", "split", "lesionmix_version", "domain")}
        self.normalisation = state.get("normalisation")
        self.domain = state.get("domain")
        #: The voxel size (mm) of the training scans, which inference resamples to (None: not recorded).
        self.trained_spacing = resample.model_spacing(self.domain)
        try:
            normalise(np.ones((self.in_channels, 2, 2, 2), np.float32), self.normalisation)
        except LesionMixError as exc:
            raise LesionMixError(f"Checkpoint '{where}': {exc}") from None
        with open(self.path, "rb") as fh:
            self.sha256 = hashlib.sha256(fh.read()).hexdigest()

    @property
    def in_channels(self) -> int:
        return self.model_config.in_channels

    def params(self, spacing=None) -> dict[str, Any]:
        """What to record beside a harmonized image (method, checkpoint, device, grid).

        ``spacing``: the input's voxel size (mm); with it, ``"ran_at_spacing"`` records the
        spacing the generator ran at (:meth:`run_spacing`).
        """
        out = {"method": self.method, "checkpoint": os.fspath(self.path), "checkpoint_sha256": self.sha256,
               "device": str(self.device), "patch_size": self.patch_size, "margin": self.margin,
               "overlap": self.patch_size // 2 if self.overlap is None else self.overlap,
               "normalisation": (self.normalisation or {}).get("method", "minmax"), "anchor": self.anchor,
               "trained_spacing": None if self.trained_spacing is None else list(self.trained_spacing)}
        ran_at = self.run_spacing(spacing)
        if ran_at is not None:
            out["ran_at_spacing"] = [round(float(v), 6) for v in ran_at]
        return out

    def domain_warning(self, image: np.ndarray, spacing=None, mask: np.ndarray | None = None) -> str | None:
        """One sentence when ``image`` (outside ``mask``; ``spacing`` in mm) lies far outside the training data.

        The spacing checked is the one the generator runs at (:meth:`run_spacing`): an input it
        resamples to its training spacing is not off its domain for that.
        """
        return domain_warning(self.domain, np.asarray(image, np.float32), self.run_spacing(spacing),
                              exclude=None if mask is None else np.asarray(mask) > 0)

    def harmonize(self, image: np.ndarray, mask: np.ndarray,
                  progress: Callable[[int, int], None] | None = None, label: np.ndarray | None = None,
                  spacing=None, *, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Harmonize ``image`` (C, I, J, K) inside ``mask`` (I, J, K); see the module docstring.

        ``label`` (the synthetic label map) lets a checkpoint trained with
        host-lesion anchoring anchor the pasted lesions to the host's own
        (:mod:`.anchor`); without it the generator works alone. ``spacing`` (mm, the
        image's) lets the generator run at its training spacing (:mod:`.resample`) and feeds the
        out-of-domain check, which warns with :class:`OutOfDomainWarning`.
        ``progress(done, total)`` counts patches; ``should_stop()`` is polled before
        every batch of patches and, once true, raises :class:`~napari_lesionmix.errors.Cancelled`
        (the input arrays are never written to).
        """
        image, m = check_image_mask(image, mask)
        if image.shape[0] != self.in_channels:
            raise LesionMixError(
                f"Checkpoint '{os.fspath(self.path)}' was trained on {self.in_channels} channel(s) "
                f"but the image has {image.shape[0]}."
            )
        if m.any():
            # Run on the model's grid, the spacing is no longer off its domain; the intensities still may be.
            msg = self.domain_warning(image, spacing, m)
            if msg:
                import warnings

                warnings.warn(msg, OutOfDomainWarning, stacklevel=2)
        return harmonize_anchored(self.generator, image, m, label, self.anchor, self.patch_size, self.normalisation,
                                  self.device, self.batch_size, self.margin, self.overlap, progress,
                                  spacing=spacing, trained_spacing=self.trained_spacing, should_stop=should_stop)

    def run_spacing(self, spacing=None) -> tuple[float, ...] | None:
        """The spacing (mm) the generator runs at for an input of ``spacing``: its training spacing when the
        input's differs (:mod:`.resample`), the input's otherwise; ``None`` when the input's is unknown."""
        return resample.run_spacing(spacing, self.trained_spacing)


def harmonize_anchored(generator, image: np.ndarray, m: np.ndarray, label: np.ndarray | None, anchor: str,
                       patch_size: int, normalisation: dict | None, device, batch_size: int = 4, margin: int = 4,
                       overlap: int | None = None, progress: Callable[[int, int], None] | None = None,
                       spacing=None, trained_spacing=None, *,
                       should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """ARHNet with host-lesion anchoring (:mod:`.anchor`): anchor, generate, keep the anchored level.

    With ``anchor="host-lesions"``, a ``label`` and host lesions to read, the
    paste's level is set from the host's own lesions, the generator is told so
    (its anchor channel) and harmonizes, and its output's pasted median is set
    back to that level (one more gain, usually within a few per cent of 1): the
    host's lesions set the level, the generator the boundary and texture.
    Otherwise this is :func:`harmonize_volume` of the input as it is. ``spacing`` and
    ``trained_spacing`` (mm) choose the grid the generator runs on (:func:`harmonize_volume`);
    ``should_stop``: there.
    """
    anchored, gains = anchor_to_host_lesions(image, m, label, anchor)
    out = harmonize_volume(generator, anchored, m, patch_size, normalisation, device, batch_size, margin, overlap,
                           progress, anchored=gains[0] is not None, spacing=spacing, trained_spacing=trained_spacing,
                           should_stop=should_stop)
    if gains[0] is not None:
        out, _ = anchor_to_host_lesions(out, m, label, anchor)
    return out


@torch.no_grad()
def difference_field(generator, scaled: np.ndarray, m: np.ndarray, patch_size: int, device, batch_size: int = 4,
                     margin: int = 4, overlap: int | None = None,
                     progress: Callable[[int, int], None] | None = None, anchored: bool = False, *,
                     should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """The generator's difference map ``G(I~, M)`` (C, I, J, K) of a normalised volume, 0 where ``m == 0``.

    Patches around each component of ``m > 0`` (:func:`plan_patches`) go
    through the generator ``batch_size`` at a time; a voxel covered by several
    patches of its component gets their tent-weighted mean. ``should_stop()``,
    polled before every batch of patches, raises :class:`~napari_lesionmix.errors.Cancelled`
    when true (the generator's train/eval mode restored, nothing returned).
    """
    fg = m > 0
    was_training = generator.training
    generator.eval()
    p = patch_size
    comps, plan = plan_patches(fg, p, margin, overlap)
    acc = np.zeros((scaled.shape[0], *fg.shape), np.float32)
    wsum = np.zeros(fg.shape, np.float32)
    tent = _tent(p)
    total = len(plan)
    for b0 in range(0, total, batch_size):
        if should_stop is not None and should_stop():
            generator.train(was_training)
            raise Cancelled(f"Harmonization cancelled after {b0} of {total} patch(es); nothing was changed.")
        chunk = plan[b0:b0 + batch_size]
        x = np.stack([crop(scaled, o, p) for _, o in chunk])
        mm = np.stack([crop(m, o, p)[None] for _, o in chunk])
        xt = torch.from_numpy(x).to(device)
        mt = torch.from_numpy(mm).to(device)
        flag = torch.full((len(chunk),), float(anchored), device=device)
        diff = generator.difference(xt, mt, flag).float().cpu().numpy()
        for (idx, origin), d in zip(chunk, diff, strict=True):
            # Paste back only this component's voxels that lie inside the volume.
            sl = tuple(slice(max(o, 0), min(o + p, n)) for o, n in zip(origin, fg.shape, strict=True))
            inner = tuple(slice(s.start - o, s.stop - o) for s, o in zip(sl, origin, strict=True))
            own = comps[sl] == idx
            w = tent[inner] * own
            acc[(slice(None), *sl)] += d[(slice(None), *inner)] * w
            wsum[sl] += w
        if progress is not None:
            progress(min(b0 + len(chunk), total), total)
    generator.train(was_training)
    acc[:, fg] /= wsum[fg]
    return acc


def harmonize_volume(generator, image: np.ndarray, m: np.ndarray, patch_size: int, normalisation: dict | None,
                     device, batch_size: int = 4, margin: int = 4, overlap: int | None = None,
                     progress: Callable[[int, int], None] | None = None, anchored: bool = False,
                     spacing=None, trained_spacing=None, *,
                     should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Whole-volume ARHNet on a checked ``image`` (C, I, J, K) and float mask ``m`` (the module docstring).

    ``anchored``: the paste's level was set from the host's lesions (:mod:`.anchor`);
    fed to a generator with an anchor channel, ignored by one without.
    ``spacing`` (the image's, mm) and ``trained_spacing`` (the checkpoint's):
    when both are known and differ, the generator runs on its own grid
    (:mod:`~napari_lesionmix.harmonize.resample`); otherwise on the native one.
    ``should_stop``: :func:`difference_field`.
    """
    out = output_array(image)
    fg = m > 0
    if not fg.any():
        if progress is not None:
            progress(1, 1)
        return out
    scaled, lo, hi = normalise(image, normalisation)
    g = None
    if resample.resamples(spacing, trained_spacing):
        g = _difference_on_model_grid(generator, scaled, m, fg, spacing, trained_spacing, patch_size, device,
                                      batch_size, margin, overlap, progress, anchored, should_stop)
    if g is None:
        g = difference_field(generator, scaled, m, patch_size, device, batch_size, margin, overlap, progress,
                             anchored, should_stop=should_stop)[:, fg]
    scale = (hi - lo)[:, None]
    # I^ = I~ + G(I~, M) * M (Fig. 1), G taken back from the normalised scale to the image's own.
    out[:, fg] = (image[:, fg].astype(np.float64) + scale * g * m[fg][None]).astype(out.dtype)
    return out


def _difference_on_model_grid(generator, scaled, m, fg, spacing, trained, patch_size, device, batch_size, margin,
                              overlap, progress, anchored, should_stop=None) -> np.ndarray | None:
    """``G`` at the voxels of ``fg``, computed on the model's grid (:mod:`.resample`); ``None`` if the mask vanishes."""
    factors = [float(t) / float(s) for t, s in zip(trained, spacing, strict=True)]
    # The context a patch centred on the mask's edge needs, in native voxels.
    context = [math.ceil((patch_size // 2 + margin) * f) for f in factors]
    box = resample.context_box(fg, context)
    shape = resample.model_shape([b.stop - b.start for b in box], factors)
    m_model = np.clip(resample.to_model_grid(m[box], factors, shape), 0.0, 1.0)
    fg_model = m_model > 0
    if not fg_model.any():
        return None
    scaled_model = resample.to_model_grid(scaled[(slice(None), *box)], factors, shape)
    g_model = difference_field(generator, scaled_model, m_model, patch_size, device, batch_size, margin, overlap,
                               progress, anchored, should_stop=should_stop)
    g_model = resample.extend_nearest(g_model, fg_model)
    return resample.at_native_voxels(g_model, factors, fg[box])
