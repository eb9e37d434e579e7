"""Shared 3D transform primitives: geometry, intensity, replay."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesionmix.augment.transforms import (
    AffineParams,
    ElasticParams,
    IntensityParams,
    apply_intensity,
    displacement_field,
    sample_intensity,
    sample_rigid,
    warp_crop,
    warped_shape,
)
from napari_lesionmix.errors import LesionMixError


@pytest.fixture
def crop():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (2, 13, 15, 11)).astype(np.float32)
    mask = np.zeros((13, 15, 11), bool)
    mask[4:9, 5:11, 3:7] = True
    mask[4, 5, 3] = False  # break the symmetry
    return image, mask


def test_flip_reverses_the_axis(crop):
    image, mask = crop
    out, m = warp_crop(image, mask, AffineParams("flip", flip=(False, True, False)))
    np.testing.assert_array_equal(out, image[:, :, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])
    # Two flips of one axis cancel.
    out2, m2 = warp_crop(image, mask, [AffineParams(flip=(False, True, False))] * 2)
    np.testing.assert_allclose(out2, image, atol=1e-5)
    np.testing.assert_array_equal(m2, mask)


def test_quarter_turn_matches_rot90(crop):
    image, mask = crop
    out, m = warp_crop(image, mask, AffineParams("rotation", angles=(90.0, 0.0, 0.0)), mask_mode="nearest")
    assert out.shape[1:] == (13, 11, 15)
    ref = np.rot90(mask, k=1, axes=(1, 2))
    # Same shape and content up to the rotation's sense.
    alt = np.rot90(mask, k=-1, axes=(1, 2))
    assert np.array_equal(m, ref) or np.array_equal(m, alt)


def test_rotation_keeps_the_volume_and_anisotropic_spacing(crop):
    image, mask = crop
    out, m = warp_crop(image, mask, AffineParams("rotation", angles=(20.0, -35.0, 10.0)))
    assert abs(int(m.sum()) - int(mask.sum())) <= 0.2 * mask.sum()
    # With 2 mm along axis 2 the crop grows in mm, not voxels: a 90 deg turn about
    # axis 0 swaps extents in mm, so axis 1 (15 vox of 1 mm) needs 8 vox of 2 mm.
    shape = warped_shape((13, 15, 11), AffineParams(angles=(90.0, 0, 0)), spacing=(1.0, 1.0, 2.0))
    assert shape == (13, 21, 8)


def test_scaling_and_translation(crop):
    image, mask = crop
    _, m = warp_crop(image, mask, AffineParams("scaling", scale=(2.0, 2.0, 2.0)))
    assert 6 * mask.sum() < m.sum() < 11 * mask.sum()
    _, m = warp_crop(image, mask, AffineParams("translation", translation=(2.0, -1.0, 0.0)), expand=False)
    np.testing.assert_array_equal(np.argwhere(m).min(0), np.argwhere(mask).min(0) + [2, -1, 0])


def test_mask_modes(crop):
    image, mask = crop
    t = AffineParams(angles=(0, 0, 17.0))
    _, near = warp_crop(image, mask, t, mask_mode="nearest")
    _, thr = warp_crop(image, mask, t, mask_mode="threshold")
    _, lin = warp_crop(image, mask.astype(np.float32), t, mask_mode="linear")
    assert near.dtype == bool and thr.dtype == bool and lin.dtype == np.float32
    np.testing.assert_array_equal(thr, lin >= 0.5)
    assert 0 < lin.min() + 1 and lin.max() <= 1 + 1e-6
    with pytest.raises(LesionMixError, match="Unknown mask mode 'cubic'"):
        warp_crop(image, mask, t, mask_mode="cubic")
    with pytest.raises(LesionMixError, match=r"Expected an image crop of shape \(C, I, J, K\)"):
        warp_crop(image[0], mask, t)


def test_elastic_field_is_bounded_smooth_and_replayable(crop):
    image, mask = crop
    p = ElasticParams(sigma=3.0, magnitude=1.5, seed=7)
    field = displacement_field(mask.shape, p)
    assert np.isclose(np.abs(field).max(), 1.5)
    np.testing.assert_array_equal(field, displacement_field(mask.shape, p))
    assert np.abs(np.diff(field, axis=1)).max() < 0.6  # smooth: neighbours move together


def test_intensity_ops(crop):
    image, mask = crop
    np.testing.assert_array_equal(apply_intensity(image, IntensityParams("gamma", 1.0)), image)
    g = apply_intensity(image, IntensityParams("gamma", 2.0))
    np.testing.assert_allclose(g.min(axis=(1, 2, 3)), image.min(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(g.max(axis=(1, 2, 3)), image.max(axis=(1, 2, 3)), rtol=1e-5)
    assert g.mean() < image.mean()  # gamma > 1 darkens mid-tones
    n = apply_intensity(image, IntensityParams("noise", 0.5, seed=3))
    assert np.isclose((n - image).std(), 0.5 * image.std(), rtol=0.1)
    assert apply_intensity(image, IntensityParams("noise", 0.5, seed=3)).tobytes() == n.tobytes()
    assert apply_intensity(image, IntensityParams("blur", 1.0)).std() < 0.5 * image.std()
    np.testing.assert_allclose(apply_intensity(image, IntensityParams("brightness", 1.1)), image * 1.1, rtol=1e-6)
    with pytest.raises(LesionMixError, match="Unknown intensity transform 'contrast'"):
        IntensityParams("contrast", 1.0)
    with pytest.raises(LesionMixError, match="The gamma value must be positive"):
        IntensityParams("gamma", 0.0)


def test_sampling_is_seeded_and_in_range():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return (
            [sample_rigid(rng, k) for k in ("none", "flip", "rotation", "scaling", "translation")],
            [sample_intensity(rng, k) for k in ("none", "gamma", "noise", "blur", "brightness")],
        )

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    rigid, inten = draw(5)
    assert rigid[0].is_identity and sum(rigid[1].flip) == 1
    assert all(abs(a) <= 30 for a in rigid[2].angles) and 0.75 <= rigid[3].scale[0] <= 1.25
    assert all(abs(t) <= 3 for t in rigid[4].translation)
    assert 0.7 <= inten[1].value <= 1.5 and inten[2].seed is not None
    with pytest.raises(LesionMixError, match="Unknown rigid transform 'shear'"):
        sample_rigid(np.random.default_rng(0), "shear")


@pytest.mark.parametrize("gamma", [0.7, 1.6, 3.0])
def test_gamma_skipping_zeros_gives_the_plain_bytes(gamma):
    # apply_intensity leaves the voxels at the channel minimum (0 after rescaling) out of the power.
    rng = np.random.default_rng(int(gamma * 10))
    image = rng.gamma(2.0, 50.0, (2, 12, 10, 9)).astype(np.float32)
    image[:, :6] = 0.0  # a background at the minimum
    image[0, 0, 0, :3] = -0.0
    image[1] -= 40.0  # a channel whose minimum is not 0
    out = apply_intensity(image, IntensityParams("gamma", gamma))
    want = np.empty_like(image)
    for c, ch in enumerate(image):
        lo, hi = float(ch.min()), float(ch.max())
        x = np.maximum((ch - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0)
        want[c] = np.power(x, np.float32(gamma)) * np.float32(hi - lo) + np.float32(lo)
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
