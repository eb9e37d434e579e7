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


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5)])
def test_band_reach_by_min_plus_passes_matches_the_distance_threshold(spacing):
    from napari_lesionmix.io.morphology import within_ball

    rng = np.random.default_rng(int(spacing[0] * 4))
    for i in range(150):
        shape = tuple(rng.integers(1, 26, 3))
        m = rng.random(shape) < rng.uniform(0.001, 0.3)
        if i % 2:
            m = ndi.gaussian_filter(m.astype(float), 1.0) > 0.2
        r = int(rng.integers(0, 12))
        ref = (_edt(~m, spacing) / spacing[0] <= r) | m
        assert np.array_equal(within_ball(m, r) | m, ref), (shape, r)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5)])
def test_scipy_distances_on_small_boxes_are_the_bytes_of_edt(spacing):
    # _edt uses scipy below _EDT_SMALL voxels on exact grids: it must give the bytes edt gives.
    import edt

    rng = np.random.default_rng(int(spacing[0] * 8))
    for i in range(120):
        shape = tuple(rng.integers(1, 30, 3))
        m = rng.random(shape) < rng.uniform(0.3, 0.999)
        if i % 2:
            m = ndi.gaussian_filter(m.astype(float), 1.5) > rng.uniform(0.2, 0.6)
        want = edt.edt(m.view(np.uint8), anisotropy=spacing, black_border=False, parallel=1)
        got = _edt(m, spacing)
        assert got.dtype == want.dtype == np.float32
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (shape, i)


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


def _random_warps(rng, n, aug, max_side, keep):
    """``n`` random ``(mask, warp)`` pairs of ``aug``'s draws that ``keep(warp)`` accepts, on three spacings."""
    while n:
        shape = tuple(rng.integers(3, max_side, 3))
        m = rng.random(shape) < 0.3
        if not m.any():
            continue
        sp = [(1.0, 1.0, 1.0), (1.0, 1.0, 2.5), (0.8, 1.2, 2.0)][n % 3]
        warp = lesion_warp(_L(m, sp), draw_transform(rng, aug), pad=int(rng.integers(0, 6)))
        if keep(warp):
            n -= 1
            yield m, warp


def _random_affine_warps(rng, n):
    return _random_warps(rng, n, LesionAugment(p_elastic=0.0, p_rotate=0.9, p_scale=0.8), 18,
                         lambda w: w.inverse is not None)


def test_affine_reaches_is_the_coordinate_test_without_coordinates():
    """Row intervals hold every voxel the coordinate test keeps, and only voxels within 1e-6 of it."""
    rng = np.random.default_rng(11)
    for m, warp in _random_affine_warps(rng, 80):
        idx = np.nonzero(m)
        lo, hi = np.array([i.min() for i in idx]), np.array([i.max() for i in idx])
        fast = warp.reaches(lo, hi)  # affine: no coordinate array
        assert warp._coords is None
        c = warp.coords()
        exact = np.ones(warp.shape, bool)
        loose = np.ones(warp.shape, bool)
        for a in range(3):
            exact &= (c[a] > lo[a] - 1.001) & (c[a] < hi[a] + 1.001)
            loose &= (c[a] > lo[a] - 1.001 - 1e-5) & (c[a] < hi[a] + 1.001 + 1e-5)
        assert not (exact & ~fast).any()  # a superset ...
        assert not (fast & ~loose).any()  # ... by no more than the tolerance


def test_coordinates_of_some_voxels_are_those_of_the_whole_crop():
    rng = np.random.default_rng(12)
    for _, warp in _random_affine_warps(rng, 40):
        where = rng.random(warp.shape) < 0.3
        fresh = Warp(warp.shape, warp.center, warp.pad, warp.inverse, warp.source_center)
        assert fresh.coords_at(where).tobytes() == warp.coords()[:, where].tobytes()


def _random_elastic_warps(rng, n):
    aug = LesionAugment(p_elastic=1.0, p_rotate=0.7, p_scale=0.6, elastic_alpha_range=(0.5, 3.0))
    return _random_warps(rng, n, aug, 24, lambda w: w.disp is not None)


def _fresh(warp):
    return Warp(warp.shape, warp.center, warp.pad, warp.inverse, warp.source_center, warp.disp)


def test_elastic_coordinates_of_some_voxels_are_those_of_the_whole_crop():
    """Pad ring and core alike: the subset's points and 3x3 products give the whole crop's bytes."""
    rng = np.random.default_rng(14)
    for k, (_, warp) in enumerate(_random_elastic_warps(rng, 60)):
        where = rng.random(warp.shape) < (rng.uniform(0.02, 0.45) if k % 4 else rng.uniform(0.55, 0.9))
        fresh = _fresh(warp)
        subset = fresh.coords_at(where)
        assert subset.tobytes() == _fresh(warp).coords()[:, where].tobytes()
        # Under half the crop: no whole-crop coordinates (their memory); above, they are the cheaper way.
        assert (fresh._coords is None) == (2 * np.count_nonzero(where) <= where.size)


def test_elastic_reaches_is_a_superset_of_the_coordinate_test_without_coordinates():
    """The field's bound grows the affine reach: every voxel the coordinates keep, and none far off."""
    rng = np.random.default_rng(15)
    for m, warp in _random_elastic_warps(rng, 60):
        idx = np.nonzero(m)
        lo, hi = np.array([i.min() for i in idx]), np.array([i.max() for i in idx])
        fresh = _fresh(warp)
        fast = fresh.reaches(lo, hi)
        assert fresh._coords is None  # found without the crop's coordinates
        c = _fresh(warp).coords()
        exact = np.ones(warp.shape, bool)
        for a in range(3):
            exact &= (c[a] > lo[a] - 1.001) & (c[a] < hi[a] + 1.001)
        assert not (exact & ~fast).any()
        # Nothing beyond the affine reach grown by the field's bound along each axis.
        grow = np.abs(warp.inverse).sum(axis=1) * float(np.abs(warp.disp).max()) + 1e-5
        affine = Warp(warp.shape, warp.center, warp.pad, warp.inverse, warp.source_center).coords()
        loose = np.ones(warp.shape, bool)
        for a in range(3):
            loose &= (affine[a] > lo[a] - 1.001 - grow[a]) & (affine[a] < hi[a] + 1.001 + grow[a])
        assert not (fast & ~loose).any()


def test_elastic_mask_warps_without_whole_crop_coordinates_match_them():
    """warp_mask and warp_label on the bound's voxels give the bytes of resampling the whole crop."""
    from napari_lesionmix.augment.paste.warp import warp_label, warp_mask

    rng = np.random.default_rng(16)
    for mode in ("threshold", "nearest"):
        aug = LesionAugment(mask_mode=mode)
        for m, warp in _random_elastic_warps(rng, 25):
            lesion = _L(m, (1.0, 1.0, 1.0))
            lesion.label = m.astype(np.uint8) * rng.integers(1, 4, m.shape).astype(np.uint8)
            ref = _fresh(warp)
            if mode == "threshold":
                whole = ref.resample(m.astype(np.float32), 1) >= 0.5
            else:
                whole = ref.resample(m.view(np.uint8), 0) > 0
            fast = _fresh(warp)
            hard = warp_mask(lesion, fast, aug)
            assert hard.tobytes() == whole.tobytes()
            lab = warp_label(lesion, fast, hard)
            ref_lab = ref.resample(lesion.label, 0)
            assert np.array_equal(lab[hard] != 0, np.ones(int(hard.sum()), bool))
            keep = hard & (ref_lab != 0)
            assert lab[keep].tobytes() == ref_lab[keep].tobytes()


def test_warp_geometry_is_remembered_and_read_only():
    from napari_lesionmix.augment.paste import warp as warp_module

    rng = np.random.default_rng(13)
    lesion = _L(rng.random((9, 11, 7)) < 0.4, (1.0, 1.0, 2.0))
    tf = draw_transform(rng, LesionAugment(p_rotate=1.0, p_elastic=0.0))
    warp_module._GEOMETRY.clear()
    first = lesion_warp(lesion, tf, pad=3)
    again = lesion_warp(lesion, tf, pad=3)  # from the cache
    warp_module._GEOMETRY.clear()
    fresh = lesion_warp(lesion, tf, pad=3)
    for w in (again, fresh):
        assert w.shape == first.shape
        assert w.center.tobytes() == first.center.tobytes()
        assert w.inverse.tobytes() == first.inverse.tobytes()
    assert not again.inverse.flags.writeable
    padded = lesion_warp(lesion, tf, pad=5)  # the same geometry, framed two voxels wider
    assert padded.shape == tuple(n + 4 for n in first.shape)
    assert (padded.center - first.center).tolist() == [2.0, 2.0, 2.0]


def _reference_populate(host, params, bank, brain):
    """The pre-box-blend populate apply: every lesion's whole crop soft-masked and blended."""
    from napari_lesionmix.augment.paste.warp import (
        placement_boxes,
        warp_image,
        warp_label,
        warp_mask,
    )
    from napari_lesionmix.augment.populate import blend_weights, soft_pad
    from napari_lesionmix.augment.softmask import soft_paste
    from napari_lesionmix.augment.transforms import apply_intensity

    image, label = host.image.astype(np.float32, copy=True), host.label.copy()
    mask = np.zeros(host.shape, np.float32)
    for ins in params.insertions:
        lesion, tf = bank.lesion(ins.case_id, ins.lesion_index), ins.transform
        warp = lesion_warp(lesion, tf, pad=soft_pad(params))
        hard = warp_mask(lesion, warp, params.augment)
        lab = warp_label(lesion, warp, hard)
        host_box, crop_box = placement_boxes(ins.position, warp, host.shape)
        s = blend_weights(hard, params, host.spacing)[crop_box].astype(np.float32)
        if brain is not None:
            s = s * brain[host_box]
        where = None
        if not any(op.kind == "noise" for op in tf.intensity) and np.isfinite(lesion.image).all():
            need = s > 0
            hreg = image[(slice(None), *host_box)]
            need |= ((hreg == 0) & np.signbit(hreg)).any(axis=0)
            where = np.zeros(warp.shape, bool)
            where[crop_box] = need
        img = warp_image(lesion, warp, params.augment, where)
        if tf.intensity:
            img = apply_intensity(img, tf.intensity)
        hard, lab, img = hard[crop_box], lab[crop_box], img[(slice(None), *crop_box)]
        if brain is not None:
            hard = hard & brain[host_box]
        soft_paste(image, mask, host_box, s, img)
        lbox = label[host_box]
        np.copyto(lbox, lab.astype(label.dtype), where=hard & (lbox == 0))
    return image, label, mask


@pytest.mark.parametrize("seed", range(3))
def test_populate_blend_on_soft_boxes_matches_whole_crops(seed):
    """Blending on the soft mask's box gives the whole-crop bytes, with -0.0 host voxels, NaN donors, noise."""
    from factories import make_case

    from napari_lesionmix.augment.lesionmix import lesionmix, sample_lesionmix
    from napari_lesionmix.augment.lesions import LesionBank
    from napari_lesionmix.augment.likelihood import likelihood_map
    from napari_lesionmix.random import sample_rng

    shape = (30, 34, 26)
    cases = [make_case(seed=10 * seed + k, n_lesions=3 + k, case_id=f"c{k}", shape=shape) for k in range(3)]
    for c in cases:
        c.image -= 100.0  # zero-centred: negative voxels and exact zeros
    host = cases[0]
    rng = np.random.default_rng(seed)
    host.image[0][rng.random(shape) < 0.05] = 0.0
    if seed == 0:  # a few -0.0 host voxels: the crops that hold one are blended whole
        host.image[0][tuple(rng.integers(0, shape, (20, 3)).T)] = -0.0
    if seed == 1:
        les = host.label != 0
        host.image[0][les] = np.where(rng.random(int(les.sum())) < 0.5, -0.0, host.image[0][les])
    if seed == 2:
        for donor in cases[1:]:  # non-finite donor crops, away from their lesions
            donor.image[0][ndi.distance_transform_edt(donor.label == 0) > 3] = np.nan
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    bank = LesionBank(cases=cases)
    lmap = likelihood_map(cases, brain_mask=brain)
    for i in range(3):
        p = sample_lesionmix(sample_rng(seed, i), host, bank, lmap, target_load_ml=2.0, mode="populate",
                             brain_mask=brain, on_unreachable="ignore")
        assert p.insertions
        if seed == 2:
            assert any(ins.case_id != "c0" for ins in p.insertions)
        out = lesionmix(host, p, bank, brain_mask=brain)
        ref = _reference_populate(host, p, bank, brain if p.brain_clip else None)
        assert out.image.tobytes() == ref[0].tobytes()
        assert out.label.tobytes() == ref[1].tobytes()
        assert out.mask.tobytes() == ref[2].tobytes()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5)])
def test_core_by_ball_erosion_matches_the_distance_threshold(spacing):
    """On power-of-two isotropic grids the erosion by a ball is the EDT threshold ``d > k``, bit for bit."""
    from napari_lesionmix.augment.softmask import _ball
    from napari_lesionmix.io.morphology import exact_grid

    assert exact_grid(spacing) and not exact_grid((1.0, 1.0, 3.0)) and not exact_grid((0.9375,) * 3)
    rng = np.random.default_rng(1)
    for i in range(40):
        shape = tuple(rng.integers(3, 22, 3))
        m = ndi.gaussian_filter((rng.random(shape) < 0.3).astype(float), 1.0 + i % 3) > 0.25
        for k in range(4):
            ref = _edt(m, spacing) / spacing[0] > k
            got = ndi.binary_erosion(m, _ball(k, 3), border_value=1)
            assert (got == ref).all()


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_components_on_the_lesion_box_number_as_the_whole_volume(connectivity):
    from napari_lesionmix.augment.lesions import connectivity_structure, label_components

    rng = np.random.default_rng(connectivity)
    for i in range(20):
        shape = tuple(rng.integers(2, 30, 3))
        label = (rng.random(shape) < [0.0, 0.002, 0.05, 0.3][i % 4]).astype(np.uint8) * 2
        ref, n_ref = ndi.label(label != 0, structure=connectivity_structure(connectivity))
        comps, n = label_components(label, connectivity)
        assert n == n_ref and comps.dtype == ref.dtype and comps.tobytes() == ref.tobytes()
