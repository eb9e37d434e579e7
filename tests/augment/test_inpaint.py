"""Telea fast-marching inpainting of removed lesions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_lesionmix.augment.inpaint import inpaint_telea
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
