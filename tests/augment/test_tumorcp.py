"""TumorCP (Yang et al., MICCAI 2021): one module over the shared paste machinery, in every face by the registry."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_case

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.params import params_from_json
from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError


@pytest.fixture
def pair():
    return make_case(seed=1, n_lesions=2, case_id="host"), make_case(seed=2, n_lesions=4, case_id="donor")


def test_a_hard_untransformed_paste_copies_the_donor_tumour_voxel_for_voxel(pair):
    host, donor = pair
    syn = registry.generate("tumorcp", host, donor, seed=0,
                            options={"p_spatial": 0.0, "p_gamma": 0.0, "blur_sigma": 0.0, "delta1": 0.0})
    (t,) = syn.params.tumours
    assert t.rigid == () and t.intensity == ()
    new = (syn.label != 0) & (host.label == 0)
    assert new.any()
    # Every pasted voxel is a donor tumour voxel: the same values, shifted.
    assert set(np.unique(syn.image[0][new])) <= set(np.unique(donor.image[0][donor.label != 0]))
    assert np.array_equal(syn.mask > 0, syn.mask == 1)  # a hard paste has no soft edge
    outside = syn.mask == 0
    np.testing.assert_array_equal(syn.image[:, outside], host.image[:, outside])


def test_the_blurred_edge_blends_and_the_label_is_the_tumour(pair):
    host, donor = pair
    syn = registry.generate("tumorcp", host, donor, seed=3, options={"blur_sigma": 1.5, "delta1": 0.0})
    edge = (syn.mask > 0) & (syn.mask < 1)
    assert edge.any() and not (syn.label[edge & (host.label == 0)] != 0).all()


def test_tumours_are_pasted_inside_the_organ_and_replay_exactly(pair):
    host, donor = pair
    organ = np.zeros(host.shape, bool)
    organ[4:20, 4:24, 3:17] = True
    for seed in range(3):
        syn = registry.generate("tumorcp", host, donor, seed=seed, brain_mask=organ, options={"n_tumours": 2})
        new = (syn.label != 0) & (host.label == 0)
        assert np.count_nonzero(new & ~organ) <= 0.10 * np.count_nonzero(new)
        params = params_from_json(syn.params.to_json())
        assert params == syn.params
        np.testing.assert_array_equal(registry.replay(params, host, donor, brain_mask=organ).image, syn.image)


def test_the_command_is_made_from_the_registry(pair, tmp_path, pair_on_disk, capsys):
    h, d = pair_on_disk["host"], pair_on_disk["donor"]
    args = ["tumorcp", "--host-image", str(h["images"][0]), "--host-label", str(h["label"]),
            "--donor-image", str(d["images"][0]), "--donor-label", str(d["label"]), "--seed", "2"]
    assert main([*args, "--delta1", "0", "--out", str(tmp_path / "o")]) == 0
    assert "tumour(s) pasted" in capsys.readouterr().out
    assert main([*args, "--scale-min", "2", "--scale-max", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "scale_min (2.0) must not exceed scale_max (1.0)" in capsys.readouterr().err


def test_bad_options_are_one_sentence():
    with pytest.raises(LesionMixError, match="Unknown reference 'liver'"):
        registry.get_method("tumorcp").Options(reference="liver")
