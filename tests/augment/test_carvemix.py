"""CarveMix: exactness of the box signed distance, Eqs. (1)-(7), variants, replay, baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import make_case
from scipy import ndimage as ndi

from napari_lesionmix.augment.baselines import cutmix, mixup, sample_cutmix, sample_mixup
from napari_lesionmix.augment.carvemix import (
    CarveField,
    CarveMixParams,
    carvemix,
    lambda_density,
    sample_carvemix,
    sample_lambda,
)
from napari_lesionmix.augment.distance import signed_distance_box, signed_distance_full
from napari_lesionmix.augment.params import params_from_json
from napari_lesionmix.errors import LesionMixError


def random_mask(rng, shape):
    """Irregular lesions: dilated random seeds, some touching the volume border."""
    seeds = rng.random(shape) < rng.uniform(0.0005, 0.004)
    seeds[0, rng.integers(shape[1]), rng.integers(shape[2])] = True  # a lesion on the border
    return ndi.binary_dilation(seeds, iterations=int(rng.integers(1, 4)))


@pytest.mark.parametrize("trial", range(12))
def test_box_distance_equals_full_volume_scipy(trial):
    rng = np.random.default_rng(trial)
    shape = tuple(int(s) for s in rng.integers(12, 36, 3))
    spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, 3))  # anisotropic
    mask = random_mask(rng, shape)
    reference = signed_distance_full(mask, spacing)
    d_min_ref = float(reference.min())
    for backend in ("scipy", "edt"):
        field = signed_distance_box(mask, spacing, backend=backend)
        full = field.full(shape)
        inside_box = np.isfinite(full)
        if backend == "scipy":
            np.testing.assert_array_equal(full[inside_box], reference[inside_box])  # bit-identical
            assert field.d_min == d_min_ref
        else:
            np.testing.assert_allclose(full[inside_box], reference[inside_box], atol=1e-4)
            assert field.d_min == pytest.approx(d_min_ref, abs=1e-4)
        # Outside the box no voxel can ever be carved.
        assert (reference[~inside_box] > field.max_lambda).all()
        for lam in [0.0, *rng.uniform(-abs(d_min_ref) / 2, abs(d_min_ref), 15)]:
            np.testing.assert_array_equal(full <= lam, reference <= lam)


def test_box_is_a_fraction_of_the_volume():
    mask = np.zeros((80, 80, 80), bool)
    mask[30:38, 40:46, 20:30] = True
    field = signed_distance_box(mask, (1.0, 1.0, 1.0))
    box_voxels = np.prod([s.stop - s.start for s in field.box])
    assert box_voxels < 0.05 * mask.size


def test_lambda_zero_carves_exactly_the_lesion(host_case, donor_case):
    params = CarveMixParams("host", "donor", 0.0)
    syn = carvemix(host_case, donor_case, params)
    np.testing.assert_array_equal(syn.mask, donor_case.label != 0)


def test_equations_1_and_2(host_case, donor_case):
    field = CarveField.from_case(donor_case)
    lam = 0.6 * field.lambda_range[1]
    syn = carvemix(host_case, donor_case, CarveMixParams("host", "donor", lam), field=field)
    m = signed_distance_full(donor_case.label != 0, donor_case.spacing) <= lam
    np.testing.assert_array_equal(syn.mask, m)
    expected_image = donor_case.image * m + host_case.image * (1 - m)
    np.testing.assert_array_equal(syn.image, expected_image.astype(np.float32))
    np.testing.assert_array_equal(syn.label, np.where(m, donor_case.label, host_case.label))
    assert m.sum() > (donor_case.label != 0).sum()  # positive lambda grows the ROI


@pytest.mark.parametrize("t", [-1.2, -0.7, -0.2, 0.0, 0.3, 1.0, 2.5])
def test_without_a_field_one_lambda_costs_only_its_distances(host_case, donor_case, t):
    """carvemix() with no cached field (roi_at) carves the definition's ROI, and the field's."""
    field = CarveField.from_case(donor_case, max_lambda=3 * abs(donor_case.spacing[0]) + 10)
    lam = t * abs(field.d_min)
    params = CarveMixParams("host", "donor", lam)
    syn = carvemix(host_case, donor_case, params)
    reference = signed_distance_full(donor_case.label != 0, donor_case.spacing) <= lam
    np.testing.assert_array_equal(syn.mask, reference)
    with_field = carvemix(host_case, donor_case, params, field=field)
    np.testing.assert_array_equal(syn.image, with_field.image)
    np.testing.assert_array_equal(syn.label, with_field.label)


def test_equation_7_distribution():
    rng = np.random.default_rng(0)
    d_min = -6.0
    lams = np.array([sample_lambda(rng, d_min) for _ in range(20000)])
    assert lams.min() >= -3.0 and lams.max() <= 6.0
    assert abs((lams < 0).mean() - 0.5) < 0.02  # half the mass on each side
    neg, pos = lams[lams < 0], lams[lams >= 0]
    assert abs(neg.mean() + 1.5) < 0.05 and abs(pos.mean() - 3.0) < 0.1  # uniform on each side
    grid = np.linspace(-4, 7, 2201)
    dens = lambda_density(d_min, grid)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=0.01)
    assert dens[(grid > -3) & (grid < 0)] == pytest.approx(0.5 / 3)


def test_multiclass_labels_keep_values_and_count_as_lesion_for_d(host_case):
    donor = make_case(seed=5, n_lesions=2, case_id="donor")
    comps, n = ndi.label(donor.label)
    assert n >= 2
    donor.label = np.where(comps == 2, 2, donor.label).astype(np.uint8)  # a second class
    field = CarveField.from_case(donor)
    syn = carvemix(host_case, donor, CarveMixParams("host", "donor", 1.0), field=field)
    reference = signed_distance_full(donor.label != 0, donor.spacing) <= 1.0
    np.testing.assert_array_equal(syn.mask, reference)
    assert 2 in np.unique(syn.label)
    np.testing.assert_array_equal(syn.label[donor.label == 2], 2)


def test_several_channels_share_the_roi(host_case):
    host = make_case(seed=1, n_channels=3, case_id="host")
    donor = make_case(seed=2, n_channels=3, case_id="donor")
    syn = carvemix(host, donor, CarveMixParams("host", "donor", 0.5))
    for c in range(3):
        np.testing.assert_array_equal(syn.image[c][syn.mask], donor.image[c][syn.mask])
        np.testing.assert_array_equal(syn.image[c][~syn.mask], host.image[c][~syn.mask])
    with pytest.raises(LesionMixError, match="has 1 image channel"):
        carvemix(host, make_case(seed=2, case_id="donor"), CarveMixParams("host", "donor", 0.5))


def test_per_lesion_variant_uses_each_components_own_dmin(host_case):
    donor = make_case(seed=7, n_lesions=4, case_id="donor")
    donor.label[1:4, 1:4, 1:3] = 1  # a tiny lesion that a global negative lambda would erase
    field = CarveField.from_case(donor, per_lesion=True)
    comps, n = ndi.label(donor.label != 0, structure=np.ones((3, 3, 3)))
    assert field.n_lesions == n
    d_mins = [float(signed_distance_full(comps == k, donor.spacing).min()) for k in range(1, n + 1)]
    np.testing.assert_allclose([f.d_min for f in field.fields], d_mins, atol=1e-4)
    params = sample_carvemix(np.random.default_rng(3), field, "host", "donor")
    assert params.per_lesion and len(params.lesion_lams) == n
    for lam, d in zip(params.lesion_lams, d_mins, strict=True):
        assert -abs(d) / 2 - 1e-9 <= lam <= abs(d) + 1e-9
    syn = carvemix(host_case, donor, params, field=field)
    expected = np.zeros(donor.shape, bool)
    for k, lam in enumerate(params.lesion_lams, start=1):
        expected |= signed_distance_full(comps == k, donor.spacing) <= lam
    np.testing.assert_array_equal(syn.mask, expected)
    # Every lesion keeps some voxels, even with each lambda at its most negative.
    shrunk = field.roi([-abs(d) / 2 for d in d_mins])
    assert all(shrunk[comps == k].any() for k in range(1, n + 1))


def test_global_negative_lambda_erases_small_lesions():
    donor = make_case(seed=7, n_lesions=4, case_id="donor")
    donor.label[1:4, 1:4, 1:3] = 1
    field = CarveField.from_case(donor)
    roi = field.roi(field.lambda_range[0])
    assert not roi[1:4, 1:4, 1:3].any()


def test_params_json_replay_is_bit_identical(host_case, donor_case):
    field = CarveField.from_case(donor_case)
    params = sample_carvemix(np.random.default_rng(11), field, "host", "donor", seed=11, sample_index=0)
    first = carvemix(host_case, donor_case, params, field=field)
    replayed_params = params_from_json(params.to_json())
    assert replayed_params == params
    second = carvemix(host_case, donor_case, replayed_params)  # no cached field: recomputed
    assert first.image.tobytes() == second.image.tobytes()
    assert first.label.tobytes() == second.label.tobytes()
    # Same seed, same draw.
    again = sample_carvemix(np.random.default_rng(11), field, "host", "donor", seed=11, sample_index=0)
    assert again == params


def test_explicit_lambda_beyond_the_sampled_range(host_case, donor_case):
    field = CarveField.from_case(donor_case)
    big = field.lambda_range[1] * 2 + 1
    syn = carvemix(host_case, donor_case, CarveMixParams("host", "donor", big), field=field)
    np.testing.assert_array_equal(syn.mask, signed_distance_full(donor_case.label != 0, donor_case.spacing) <= big)


def test_bad_params_and_inputs(host_case, donor_case):
    with pytest.raises(LesionMixError, match="finite lambda"):
        CarveMixParams("h", "d", float("nan"))
    with pytest.raises(LesionMixError, match="one lambda per lesion"):
        CarveMixParams("h", "d", None, (), True)
    with pytest.raises(LesionMixError, match="Unknown carvemix parameter"):
        CarveMixParams.from_dict({"method": "carvemix", "host_id": "h", "donor_id": "d", "lam": 1, "oops": 2})
    with pytest.raises(LesionMixError, match="Unknown augmentation method 'warp'"):
        params_from_json(json.dumps({"method": "warp"}))
    donor_case.label[:] = 0
    with pytest.raises(LesionMixError, match="has no lesion voxels"):
        carvemix(host_case, donor_case, CarveMixParams("host", "donor", 0.0))


def test_mixup_and_cutmix_follow_table_1(host_case, donor_case):
    rng = np.random.default_rng(0)
    mp = sample_mixup(rng, "host", "donor", alpha=0.4)
    syn = mixup(host_case, donor_case, mp)
    np.testing.assert_allclose(syn.image, mp.lam * donor_case.image + (1 - mp.lam) * host_case.image, rtol=1e-6)
    np.testing.assert_allclose(syn.label, mp.lam * donor_case.label + (1 - mp.lam) * host_case.label, rtol=1e-6)
    cp = sample_cutmix(rng, "host", "donor", host_case.shape)
    syn = cutmix(host_case, donor_case, cp)
    box = tuple(slice(a, b) for a, b in zip(cp.start, cp.stop, strict=True))
    np.testing.assert_array_equal(syn.image[(slice(None), *box)], donor_case.image[(slice(None), *box)])
    lam = syn.mask.mean()
    assert cp.lam(host_case.shape) == pytest.approx(lam)
    np.testing.assert_allclose(syn.label, lam * donor_case.label + (1 - lam) * host_case.label, rtol=1e-6)
    assert params_from_json(cp.to_json()) == cp
    donor_case.label[donor_case.label == 1] = 3
    with pytest.raises(LesionMixError, match="binary lesion labels only"):
        mixup(host_case, donor_case, mp)
