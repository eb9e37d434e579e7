"""The optimised LesionMix paths give the same bytes as straightforward references (issue 27)."""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_lesionmix.augment.paste.warp import LesionAugment, Warp, draw_transform, lesion_warp
from napari_lesionmix.augment.softmask import _edt, soft_mask


def _reference_soft_mask(mask, a, k_erode, k_dilate, spacing):
    """The pre-issue-27 algorithm (every step on the box grown by the dilation reach)."""
    m = mask != 0
    out = np.zeros(m.shape, np.float32)
    objs = ndi.find_objects(m.view(np.uint8))
    if not objs or objs[0] is None:
        return out
    step = min(spacing)
    margin = [int(math.ceil(k_dilate * step / s)) + 1 for s in spacing]
    box = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(objs[0], margin, m.shape, strict=True))
    sub = m[box]
    inside = _edt(sub, spacing) / step
    core = inside > k_erode
    comps, n = ndi.label(sub, structure=ndi.generate_binary_structure(3, 3))
    has_core = np.zeros(n + 1, bool)
    has_core[np.unique(comps[core])] = True
    missing = np.flatnonzero(~has_core[1:]) + 1
    if missing.size:
        deepest = np.zeros(n + 1, np.float64)
        deepest[missing] = ndi.maximum(inside, comps, index=missing)
        core |= ~has_core[comps] & (comps > 0) & (inside >= deepest[comps])
    reach = (_edt(~sub, spacing) / step <= k_dilate) | sub
    d_core = _edt(~core, spacing) / step
    s = np.zeros(sub.shape, np.float32)
    s[reach] = np.exp(d_core[reach] * math.log(float(a))).astype(np.float32)
    s[core] = 1.0
    out[box] = s
    return out


@pytest.mark.parametrize("seed", range(6))
def test_soft_mask_matches_reference(seed):
    rng = np.random.default_rng(seed)
    for i in range(25):
        shape = tuple(rng.integers(3, 24, 3))
        m = rng.random(shape) < rng.uniform(0.02, 0.5)
        if i % 2:
            m = ndi.gaussian_filter(m.astype(float), 1.2) > 0.3
        sp = [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (1.0, 1.0, 3.0), (0.8, 1.2, 2.5)][i % 4]
        a, ke, kd = [(0.5, 1, 4), (0.3, 0, 2), (0.7, 2, 5)][i % 3]
        big = np.pad(m, int(rng.integers(0, 8)))  # lesions at the array's edge and away from it
        got = soft_mask(big, a, ke, kd, sp)
        assert got.tobytes() == _reference_soft_mask(big, a, ke, kd, sp).tobytes()


class _L:
    def __init__(self, mask, spacing):
        self.mask = mask
        self.spacing = spacing
        self.centroid_in_crop = np.array(ndi.center_of_mass(mask)) if mask.any() else np.array(mask.shape) / 2


def test_coords_match_affine_transform_bitwise():
    rng = np.random.default_rng(3)
    aug = LesionAugment(p_elastic=0.0)
    for _ in range(60):
        shape = tuple(rng.integers(4, 20, 3))
        vol = rng.standard_normal(shape).astype(np.float32)
        m = rng.random(shape) < 0.3
        lesion = _L(m, (1.0, 1.0, 1.0) if rng.random() < 0.5 else (1.0, 1.0, 2.0))
        warp = lesion_warp(lesion, draw_transform(rng, aug), pad=int(rng.integers(0, 6)))
        if warp.inverse is None:
            continue
        for order, mode in ((1, "constant"), (1, "nearest"), (0, "constant"), (3, "nearest")):
            ref = ndi.affine_transform(vol, warp.inverse, offset=warp.offset(), output_shape=warp.shape,
                                       order=order, mode=mode, prefilter=order > 1)
            fresh = Warp(warp.shape, warp.center, warp.pad, warp.inverse, warp.source_center)
            where = rng.random(warp.shape) < 0.4
            assert fresh.resample(vol, order, mode).tobytes() == ref.tobytes()
            assert fresh.resample_at(vol, where, order, mode).tobytes() == ref[where].tobytes()
