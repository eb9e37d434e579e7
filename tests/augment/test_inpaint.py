"""Telea fast-marching inpainting of removed lesions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_lesionmix.augment.inpaint import dilate_cross, inpaint_telea
from napari_lesionmix.errors import LesionMixError

SHAPE = (30, 32, 28)


def ball(center, radius, shape=SHAPE):
    g = np.indices(shape, dtype=float)
    return sum((g[a] - center[a]) ** 2 for a in range(3)) <= radius**2


def tissue(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    return (ndi.gaussian_filter(rng.normal(0, 1, shape), 2) * 40 + 300).astype(np.float32)


def ring(region, width=3):
    return ndi.binary_dilation(region, ndi.generate_binary_structure(3, 1), iterations=width) & ~region


def test_fills_only_the_region_within_the_surrounding_range():
    img = tissue()
    region = ball((15, 16, 14), 5)
    lesioned = img.copy()
    lesioned[region] += 250  # a bright lesion to erase
    out = inpaint_telea(lesioned, region, radius=3)
    np.testing.assert_array_equal(out[~region], lesioned[~region])
    surround = lesioned[ring(region)]
    assert out[region].min() >= surround.min() and out[region].max() <= surround.max()
    # The bright lesion is gone: the fill looks like the tissue around it.
    assert abs(out[region].mean() - surround.mean()) < 0.5 * surround.std() + 5


def test_continues_a_smooth_gradient_in_3d():
    g = np.indices(SHAPE, dtype=np.float32)
    img = 100 + 3 * g[0] + 2 * g[1] - g[2]
    region = ball((15, 16, 14), 4)
    out = inpaint_telea(img, region)
    err = np.abs(out[region] - img[region])
    assert err.mean() < 3.0  # a ramp of 3.7 per voxel is continued, not flattened


def test_float_range_equivariance_and_channels():
    img = tissue(1)
    region = ball((10, 12, 9), 3) | ball((20, 20, 18), 4)
    base = inpaint_telea(img, region)
    # cv2's float Telea adds a gradient term in absolute units; we rescale, so the fill
    # of a*I + b is a*fill(I) + b for any range.
    for a, b in [(1e-3, 0.0), (1.0 / 400, -0.5), (1e3, 7.0)]:
        out = inpaint_telea(a * img + b, region)
        np.testing.assert_allclose(out[region], a * base[region] + b, rtol=1e-4, atol=1e-4 * abs(a) * 400)
    two = np.stack([img, 2 * img + 5])
    out2 = inpaint_telea(two, region)
    assert out2.shape == two.shape and out2.dtype == np.float32
    np.testing.assert_allclose(out2[1][region], 2 * out2[0][region] + 5, rtol=1e-4)


def test_axes_option_and_empty_region():
    img = tissue(2)
    region = ball((15, 16, 14), 4)
    axial = inpaint_telea(img, region, axes=(2,))
    three = inpaint_telea(img, region)
    assert not np.array_equal(axial[region], three[region])
    np.testing.assert_array_equal(inpaint_telea(img, np.zeros(SHAPE, bool)), img)


def test_bad_input_errors():
    img = tissue(3)
    region = ball((15, 16, 14), 4)
    with pytest.raises(LesionMixError, match="radius must be > 0"):
        inpaint_telea(img, region, radius=0)
    with pytest.raises(LesionMixError, match="axes must be distinct"):
        inpaint_telea(img, region, axes=(0, 3))
    with pytest.raises(LesionMixError, match="needs an image of shape"):
        inpaint_telea(img[:-1], region)
    with pytest.raises(LesionMixError, match="whole volume"):
        inpaint_telea(img, np.ones(SHAPE, bool))


# --------------------------------------------------------------------------- the fast paths give the same bytes


def _blobs(rng, shape, level):
    return ndi.gaussian_filter(rng.random(shape), 1.5) > level


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_dilate_cross_is_scipys_binary_dilation(iterations):
    rng = np.random.default_rng(iterations)
    for shape in ((9, 11, 7), (20, 5, 16)):
        m = rng.random(shape) < 0.02
        m[0, 0, 0] = m[-1, -1, -1] = True  # the array's edges: nothing beyond them
        want = ndi.binary_dilation(m, ndi.generate_binary_structure(3, 1), iterations=iterations) if iterations else m
        np.testing.assert_array_equal(dilate_cross(m, iterations), want)


def test_opencv_telea_reads_nothing_beyond_the_crop_margin():
    # _telea_slices inpaints each slice on its region's box plus ceil(radius) + 2: that relies on
    # OpenCV's fill being the same as on the whole slice, pixel for pixel (here with one pixel less).
    import cv2

    rng = np.random.default_rng(0)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(16, 70, 2))
        img = (ndi.gaussian_filter(rng.random((h, w)), 3) * 400).astype(np.float32)
        m = (ndi.gaussian_filter(rng.random((h, w)), 2) > rng.uniform(0.5, 0.58)).astype(np.uint8)
        if not m.any() or m.all():
            continue
        radius = float(rng.uniform(0.5, 5.5))
        full = cv2.inpaint(img, m, radius, cv2.INPAINT_TELEA)
        g = int(np.ceil(radius)) + 1
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        crop = (slice(max(rows[0] - g, 0), rows[-1] + 1 + g), slice(max(cols[0] - g, 0), cols[-1] + 1 + g))
        part = cv2.inpaint(np.ascontiguousarray(img[crop]), np.ascontiguousarray(m[crop]), radius, cv2.INPAINT_TELEA)
        np.testing.assert_array_equal(part.view(np.uint32), full[crop].view(np.uint32), err_msg=f"trial {trial}")


@pytest.mark.parametrize("axes, radius", [((0, 1, 2), 3.0), ((2,), 2.0), ((1, 0), 4.5)])
def test_inpainting_a_region_given_on_its_box_is_inpainting_it_whole(axes, radius):
    rng = np.random.default_rng(int(radius))
    img = np.stack([tissue(1), tissue(2) * 3 - 50])
    region = _blobs(rng, SHAPE, 0.56)
    region[:4] = False
    region[:, :2] = region[:, 30:] = False  # the region lies in the box below
    full = inpaint_telea(img, region, radius, axes)
    box = (slice(2, 30), slice(1, 31), slice(0, 28))
    part = inpaint_telea(img, region[box], radius, axes, box=box)
    np.testing.assert_array_equal(part.view(np.uint32), full.view(np.uint32))
    with pytest.raises(LesionMixError, match="box"):
        inpaint_telea(img, region, radius, axes, box=box)


def test_inpaint_region_box_matches_the_full_volume_reference():
    # The reference: the full-volume computation the box version replaced.
    from napari_lesionmix.augment.lesions import label_components
    from napari_lesionmix.augment.load_target import inpaint_region, inpaint_region_box

    rng = np.random.default_rng(5)
    label = (_blobs(rng, SHAPE, 0.55) * rng.integers(1, 3, SHAPE)).astype(np.uint8)
    label[:, :, 0] |= label[:, :, 1]  # lesions on the volume's edge: the dilation is clipped there
    comps, n = label_components(label, 26)
    assert n >= 4
    for removals, dilate in (((0, 2), 1), (tuple(range(n)), 2), ((n - 1,), 0), ((), 1)):
        keep = np.isin(comps, np.asarray(removals, int) + 1) & (comps > 0)
        want_region = keep
        if dilate and keep.any():
            rim = ndi.binary_dilation(keep, ndi.generate_binary_structure(3, 1), iterations=dilate)
            want_region = rim & ((label == 0) | keep)
        removed, region = inpaint_region(label, removals, 26, dilate)
        np.testing.assert_array_equal(removed, keep)
        np.testing.assert_array_equal(region, want_region)
        box, removed_box, region_box = inpaint_region_box(label, removals, 26, dilate)
        if not removals:
            assert box is None
            continue
        outside = np.ones(SHAPE, bool)
        outside[box] = False
        assert not region[outside].any()
        np.testing.assert_array_equal(region_box, region[box])
        np.testing.assert_array_equal(removed_box, removed[box])


def test_slicewise_fill_on_crops_is_the_fill_on_whole_slices():
    from napari_lesionmix.augment.inpaint import _telea_slices

    rng = np.random.default_rng(2)
    sub = (tissue(3) - 200).astype(np.float32)
    m = _blobs(rng, SHAPE, 0.56).view(np.uint8)
    for axis in (0, 1, 2):
        for radius in (1.0, 3.0, 4.5):
            crop, n1 = np.zeros(SHAPE), np.zeros(SHAPE, np.int32)
            whole, n2 = np.zeros(SHAPE), np.zeros(SHAPE, np.int32)
            _telea_slices(sub, m, axis, radius, int(np.ceil(radius)) + 2, crop, n1)
            _telea_slices(sub, m, axis, radius, 10**6, whole, n2)
            np.testing.assert_array_equal(n1, n2)
            assert set(np.unique(n1)) == {0, 1} and not n1[m == 0].any()  # one pass: region voxels only
            assert n1.sum() > 100
            np.testing.assert_array_equal(crop.view(np.uint64), whole.view(np.uint64))
