"""LesionMix: lesion extraction, likelihood map, populate/inpaint to a target load, replay, CLI."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case
from scipy import ndimage as ndi

from napari_lesionmix.augment.lesion_load import LoadDistribution, lesion_load_ml
from napari_lesionmix.augment.lesionmix import (
    LesionAugment,
    LesionMixParams,
    LesionTransform,
    LoadNotReachedWarning,
    inpaint_region,
    inpaint_shortfall,
    lesionmix,
    sample_lesionmix,
    transform_lesion,
)
from napari_lesionmix.augment.lesions import LesionBank, extract_lesions
from napari_lesionmix.augment.likelihood import (
    LikelihoodMap,
    likelihood_map,
    load_likelihood,
    sample_positions,
    save_likelihood,
)
from napari_lesionmix.augment.params import params_from_json
from napari_lesionmix.augment.transforms import AffineParams, ElasticParams, IntensityParams
from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.random import sample_rng

SHAPE = (32, 36, 28)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Four synthetic cases on one grid, written as plain pairs."""
    root = tmp_path_factory.mktemp("ds")
    cases = [make_case(seed=s, n_lesions=2 + s, case_id=f"c{s}", shape=SHAPE) for s in range(4)]
    for c in cases:
        write_case(c, root)
    return root, cases


@pytest.fixture(scope="module")
def bank_and_map(small_dataset):
    root, cases = small_dataset
    bank = LesionBank.from_dataset(root)
    lmap = likelihood_map(root, sigma_mm=2.0)
    return bank, lmap


# ---------------------------------------------------------------- lesions and the bank


def test_extract_lesions_components_crops_volumes():
    case = make_case(seed=3, n_lesions=4, shape=SHAPE)
    comps, n = ndi.label(case.label != 0, structure=np.ones((3, 3, 3)))
    lesions = extract_lesions(case, margin=3)
    assert len(lesions) == n and [les.index for les in lesions] == list(range(n))
    vox_ml = np.prod(case.spacing) / 1000
    assert sum(les.volume_ml for les in lesions) == pytest.approx(lesion_load_ml(case.label, case.spacing))
    for les in lesions:
        np.testing.assert_array_equal(les.image, case.image[(slice(None), *les.box)])
        np.testing.assert_array_equal(les.mask, comps[les.box] == les.index + 1)
        assert les.volume_ml == pytest.approx(les.mask.sum() * vox_ml)
        com = np.array(ndi.center_of_mass(comps == les.index + 1))
        np.testing.assert_allclose(les.centroid_voxel, com)
        np.testing.assert_allclose(les.centroid_mm, (case.affine @ np.append(com, 1))[:3])
        assert (les.label[les.mask] != 0).all() and (les.label[~les.mask] == 0).all()


def test_connectivity_is_configurable():
    case = make_case(seed=0, shape=SHAPE)
    case.label[:] = 0
    case.label[5, 5, 5] = case.label[6, 6, 6] = 1  # corner neighbours only
    assert len(extract_lesions(case, connectivity=26)) == 1
    assert len(extract_lesions(case, connectivity=18)) == 2
    assert len(extract_lesions(case, connectivity=6)) == 2


def test_component_labelling_is_remembered_only_for_the_same_label_values():
    from napari_lesionmix.augment.lesions import components_box

    case = make_case(seed=3, n_lesions=4, shape=SHAPE)
    label = case.label.copy()
    box, comps, n = components_box(label)
    again = components_box(label.copy())  # equal values, another array: the remembered result
    assert again[1] is comps and again[2] == n and not comps.flags.writeable
    # The same box, one lesion voxel changed in place: labelled afresh, never the stale result.
    inner = tuple(slice(b.start + 1, b.stop - 1) for b in box)
    hole = np.argwhere(label[inner] != 0)[0] + [b.start for b in inner]
    label[tuple(hole)] = 0
    want, n_want = ndi.label(label[box] != 0, structure=np.ones((3, 3, 3)))
    box2, comps2, n2 = components_box(label)
    assert box2 == box and comps2 is not comps
    np.testing.assert_array_equal(comps2, want)
    assert n2 == n_want
    # Another connectivity is another result.
    assert components_box(label, 6)[1] is not comps2


def test_bank_is_lazy_and_cached(small_dataset):
    root, cases = small_dataset
    bank = LesionBank.from_dataset(root)
    assert bank.case_ids == [c.case_id for c in cases]
    assert not bank._lesions  # nothing read yet
    first = bank.lesions("c1")
    assert bank.lesions("c1") is first and set(bank._lesions) == {"c1"}
    assert bank.lesion("c1", first[-1].index) is first[-1]
    assert bank.load_ml("c2") == pytest.approx(lesion_load_ml(cases[2].label, cases[2].spacing))
    with pytest.raises(LesionMixError, match="no case 'nope'"):
        bank.lesions("nope")
    with pytest.raises(LesionMixError, match="no lesion with index 99"):
        bank.lesion("c1", 99)


# ---------------------------------------------------------------- likelihood map


def test_likelihood_is_normalised_sum_restricted_to_brain(small_dataset, tmp_path):
    root, cases = small_dataset
    total = sum((c.label != 0).astype(float) for c in cases)
    lmap = likelihood_map(root)
    np.testing.assert_allclose(lmap.values, total / total.sum(), rtol=1e-6)
    brain = np.zeros(SHAPE, bool)
    brain[:, :18] = True
    restricted = likelihood_map([c.label for c in cases], brain_mask=brain)
    assert restricted.values[~brain].sum() == 0 and restricted.values.sum() == pytest.approx(1.0)
    smooth = likelihood_map(cases, sigma_mm=3.0)
    assert smooth.values.sum() == pytest.approx(1.0) and np.count_nonzero(smooth.values) > np.count_nonzero(total)
    path = save_likelihood(lmap, tmp_path / "map.nii.gz")
    back = load_likelihood(path)
    np.testing.assert_allclose(back.values, lmap.values, rtol=1e-6)
    np.testing.assert_allclose(back.affine, cases[0].affine, atol=1e-5)


def test_sample_positions_follow_the_map():
    values = np.zeros((4, 5, 6), np.float32)
    values[1, 2, 3], values[3, 4, 5] = 1.0, 3.0
    pos = sample_positions(np.random.default_rng(0), LikelihoodMap(values / 4), 4000)
    assert pos.shape == (4000, 3)
    hit = (pos == (3, 4, 5)).all(axis=1)
    assert ((pos == (1, 2, 3)).all(axis=1) | hit).all()
    assert hit.mean() == pytest.approx(0.75, abs=0.03)


def test_likelihood_errors(small_dataset):
    _, cases = small_dataset
    with pytest.raises(LesionMixError, match="one grid"):
        likelihood_map([cases[0].label, cases[1].label[:-1]])
    with pytest.raises(LesionMixError, match="zero everywhere"):
        likelihood_map([np.zeros(SHAPE, np.uint8)])
    with pytest.raises(LesionMixError, match="sigma must be >= 0"):
        likelihood_map(cases, sigma_mm=-1)


def _labels_read(monkeypatch):
    """Count label files read by the bank, the likelihood map and the loads (one list of paths)."""
    import napari_lesionmix.augment.lesions as lesions_module
    import napari_lesionmix.io.nifti as nifti

    read, real = [], nifti.load_label

    def counting(path, *a, **k):
        read.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(nifti, "load_label", counting)
    monkeypatch.setattr(lesions_module, "load_label", counting)
    return read


def test_likelihood_and_loads_from_a_bank_are_those_of_the_files(small_dataset, tmp_path, monkeypatch):
    """Summed from the bank's lesion masks: the same bytes as reading every label again, brain masks too."""
    from napari_lesionmix.augment.lesion_load import dataset_loads
    from napari_lesionmix.io.dataset import discover_dataset

    root, cases = small_dataset
    for with_brain in (False, True):
        folder = tmp_path / f"brain{with_brain}"
        for c in cases:
            write_case(c, folder)
            if with_brain:
                brain = np.zeros(SHAPE, np.uint8)
                brain[2:-2, 1:-3, 2:] = 1
                nib.save(nib.Nifti1Image(brain, c.affine), folder / f"{c.case_id}_brainmask.nii.gz")
        ds = discover_dataset(folder)
        for sigma in (0.0, 2.0):
            ref = likelihood_map(ds, sigma_mm=sigma)
            got = likelihood_map(ds, sigma_mm=sigma, bank=LesionBank.from_dataset(ds))
            assert got.values.tobytes() == ref.values.tobytes()
            assert np.array_equal(got.affine, ref.affine)
        assert dataset_loads(ds, bank=LesionBank.from_dataset(ds)) == dataset_loads(ds)
    # A bank that drops small components does not hold every voxel: the files are read.
    read = _labels_read(monkeypatch)
    small = LesionBank.from_dataset(ds, min_voxels=50)
    small.all_lesions()
    n = len(read)
    assert likelihood_map(ds, bank=small).values.tobytes() == likelihood_map(ds).values.tobytes()
    assert len(read) == n + 2 * len(cases)


def test_lesionmix_prepare_reads_each_training_label_once(small_dataset, monkeypatch):
    """Bank, likelihood map and load distribution from one read of each label (three reads before)."""
    from napari_lesionmix.augment.lesion_load import dataset_loads
    from napari_lesionmix.augment.lesionmix import LesionMixMethod, LesionMixOptions
    from napari_lesionmix.augment.registry import LocalSources
    from napari_lesionmix.io.dataset import discover_dataset

    root, cases = small_dataset
    ds = discover_dataset(root)
    ref_map, ref_loads = likelihood_map(ds), dataset_loads(ds)
    read = _labels_read(monkeypatch)
    res = LesionMixMethod().prepare(LocalSources(training_set=ds), LesionMixOptions())
    assert sorted(read) == sorted(str(rec.label_path) for rec in ds.cases)
    assert res.likelihood.values.tobytes() == ref_map.values.tobytes()
    assert res.bank.loads() == ref_loads and len(read) == len(cases)


def test_likelihood_from_a_bank_still_refuses_mixed_grids(small_dataset, tmp_path):
    from napari_lesionmix.io.dataset import discover_dataset

    _, cases = small_dataset
    other = make_case(seed=9, n_lesions=2, case_id="z9", shape=(SHAPE[0], SHAPE[1], SHAPE[2] - 2))
    for c in (*cases[:2], other):
        write_case(c, tmp_path)
    ds = discover_dataset(tmp_path)
    with pytest.raises(LesionMixError, match="has shape .* the likelihood map needs every case on one grid"):
        likelihood_map(ds, bank=LesionBank.from_dataset(ds))


# ---------------------------------------------------------------- per-lesion transforms


def test_transforms_flip_rotate_resize():
    case = make_case(seed=5, n_lesions=1, shape=SHAPE, spacing=(1.0, 1.0, 1.0))
    g = np.indices(SHAPE, dtype=float)
    case.label[:] = ((g[0] - 15.3) ** 2 / 36 + (g[1] - 17) ** 2 / 16 + (g[2] - 13.6) ** 2 / 25) <= 1  # ellipsoid
    les = extract_lesions(case)[0]
    aug = LesionAugment()
    img, mask, lab, _ = transform_lesion(les, LesionTransform(), aug)
    np.testing.assert_array_equal(mask, les.mask)
    np.testing.assert_array_equal(img, les.image)
    _, mflip, _, _ = transform_lesion(les, LesionTransform(AffineParams(flip=(True, False, False))), aug)
    assert mflip.sum() == les.mask.sum()
    _, mrot, _, _ = transform_lesion(les, LesionTransform(AffineParams(angles=(0.0, 40.0, 0.0))), aug)
    assert mrot.sum() == pytest.approx(les.mask.sum(), rel=0.1)
    _, mbig, lbig, _ = transform_lesion(les, LesionTransform(AffineParams(scale=(1.6, 1.6, 1.6))), aug)
    assert mbig.sum() == pytest.approx(les.mask.sum() * 1.6**3, rel=0.15)
    assert ((lbig != 0) == mbig).all()
    tf = LesionTransform(AffineParams(), ElasticParams(4.0, 1.5, 3),
                         (IntensityParams("brightness", 1.1), IntensityParams("noise", 0.05, 9)))
    a = transform_lesion(les, tf, aug)
    b = transform_lesion(les, tf, aug)
    np.testing.assert_array_equal(a[0], b[0])  # seeded: deterministic
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1].sum() == pytest.approx(les.mask.sum(), rel=0.2)
    padded = transform_lesion(les, LesionTransform(), aug, pad=3)[1]
    np.testing.assert_array_equal(padded[3:-3, 3:-3, 3:-3], les.mask)
    rot = LesionTransform(AffineParams(angles=(25.0, 0.0, -50.0)))
    cubic = transform_lesion(les, rot, LesionAugment(image_order=3, mask_mode="nearest"))
    linear = transform_lesion(les, rot, aug)
    assert cubic[0].shape == linear[0].shape and not np.array_equal(cubic[0], linear[0])
    assert cubic[1].sum() == pytest.approx(linear[1].sum(), rel=0.15)
    # The sampler warps masks without the soft-mask pad: the lesion must be the same.
    for t in (tf, LesionTransform(AffineParams(angles=(20.0, -35.0, 60.0), scale=(1.3,) * 3), ElasticParams(3.0, 2.0, 1))):
        bare = transform_lesion(les, t, aug, pad=0)[1]
        framed = transform_lesion(les, t, aug, pad=4)[1]
        np.testing.assert_array_equal(framed[4:-4, 4:-4, 4:-4], bare)
        assert framed.sum() == bare.sum()


# ---------------------------------------------------------------- populate


def test_populate_contains_host_label_and_reaches_target(bank_and_map, small_dataset):
    bank, lmap = bank_and_map
    host = bank.case("c0")
    host_load = lesion_load_ml(host.label, host.spacing)
    target = host_load + 1.2
    params = sample_lesionmix(sample_rng(4, 0), host, bank, lmap, target_load_ml=target, seed=4, sample_index=0)
    assert params.mode == "populate" and params.insertions and params.target_reached
    syn = lesionmix(host, params, bank)
    assert ((host.label != 0) <= (syn.label != 0)).all()  # the host label is contained
    np.testing.assert_array_equal(syn.label[host.label != 0], host.label[host.label != 0])
    load = lesion_load_ml(syn.label, host.spacing)
    assert load == pytest.approx(params.reached_load_ml) and abs(load - target) <= params.tolerance_ml
    assert syn.mask.dtype == np.float32 and 0 <= syn.mask.min() and syn.mask.max() == 1.0
    untouched = syn.mask == 0
    np.testing.assert_array_equal(syn.image[:, untouched], host.image[:, untouched])
    # New lesion voxels lie under the soft paste mask.
    assert (syn.mask[(syn.label != 0) & (host.label == 0)] > 0).all()


def test_replay_from_json_is_bit_identical(bank_and_map, small_dataset):
    bank, lmap = bank_and_map
    host = bank.case("c1")
    dist = LoadDistribution.from_dataset(bank.loads(), "high")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoadNotReachedWarning)
        params = sample_lesionmix(sample_rng(7, 2), host, bank, lmap, distribution=dist, mode="populate")
        again = sample_lesionmix(sample_rng(7, 2), host, bank, lmap, distribution=dist, mode="populate")
    assert again == params
    replayed = params_from_json(params.to_json())
    assert replayed == params and isinstance(replayed.insertions[0].transform, LesionTransform)
    assert any(ins.transform.elastic is not None for ins in replayed.insertions)
    # A fresh bank (another process) gives the same volumes.
    a, b = lesionmix(host, params, bank), lesionmix(host, replayed, LesionBank.from_dataset(small_dataset[0]))
    for x, y in ((a.image, b.image), (a.label, b.label), (a.mask, b.mask)):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    with pytest.raises(LesionMixError, match="build the bank with those"):
        lesionmix(host, params, LesionBank.from_dataset(small_dataset[0], margin=2))


def test_populate_respects_brain_mask(bank_and_map):
    bank, lmap = bank_and_map
    host = bank.case("c2")
    brain = np.zeros(SHAPE, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    target = lesion_load_ml(host.label, host.spacing) + 0.8
    params = sample_lesionmix(sample_rng(1, 1), host, bank, lmap, target_load_ml=target, brain_mask=brain)
    syn = lesionmix(host, params, bank, brain_mask=brain)
    assert not (syn.label[~brain] != host.label[~brain]).any() and syn.mask[~brain].max() == 0
    with pytest.raises(LesionMixError, match="brain mask"):
        lesionmix(host, params, bank)


def test_unreachable_target_is_reported(bank_and_map):
    bank, lmap = bank_and_map
    host = bank.case("c3")
    load = lesion_load_ml(host.label, host.spacing)
    with pytest.warns(LoadNotReachedWarning, match="cap of 1 insertions"):
        p = sample_lesionmix(sample_rng(0, 0), host, bank, lmap, target_load_ml=load + 20, max_insertions=1)
    assert not p.target_reached and len(p.insertions) == 1
    # The report says the one pasted lesion is the cap, when told the cap; not without it.
    assert "NOT reached (1 lesion(s) pasted, the cap: max_insertions = 1" in p.report(max_insertions=1)
    assert "the cap" not in p.report() and "the cap" not in p.report(max_insertions=5)
    with pytest.raises(LesionMixError, match="populating only adds lesions"):
        sample_lesionmix(sample_rng(0, 0), host, bank, lmap, target_load_ml=0.0, mode="populate",
                         on_unreachable="raise")


def test_populate_reaches_targets_on_sample_data_over_20_seeds(sample_dataset):
    bank = LesionBank.from_dataset(sample_dataset)
    lmap = likelihood_map(sample_dataset)
    dist = LoadDistribution.from_dataset(bank.loads(), "uniform")  # min to max load of the dataset
    host_id = min(bank.case_ids, key=bank.load_ml)
    host, brain = bank.case(host_id), sample_dataset[host_id].load_brain_mask()
    reached = []
    for i in range(20):
        p = sample_lesionmix(sample_rng(11, i), host, bank, lmap, distribution=dist, mode="populate",
                             brain_mask=brain, on_unreachable="raise")
        reached.append(abs(p.reached_load_ml - p.target_load_ml) <= p.tolerance_ml)
        if i < 2:  # apply a couple: the replayed load matches the recorded one (checked inside)
            syn = lesionmix(host, p, bank, brain_mask=brain)
            assert ((host.label != 0) <= (syn.label != 0)).all()
    assert all(reached)


# ---------------------------------------------------------------- inpaint


def test_inpaint_removes_exactly_the_chosen_lesions(bank_and_map):
    bank, _ = bank_and_map
    host = bank.case("c3")
    comps, n = ndi.label(host.label != 0, structure=np.ones((3, 3, 3)))
    assert n >= 3
    params = sample_lesionmix(sample_rng(2, 0), host, bank, None, target_load_ml=0.5 * bank.load_ml("c3"),
                              on_unreachable="ignore")
    assert params.mode == "inpaint" and params.removals
    syn = lesionmix(host, params, bank)
    removed = np.isin(comps, np.array(params.removals) + 1)
    expected = np.where(removed, 0, host.label)
    np.testing.assert_array_equal(syn.label, expected)  # exactly the chosen lesions, nothing else
    _, region = inpaint_region(host.label, params.removals, 26, params.inpaint_dilate)
    assert (syn.mask == region).all() and not syn.label[region].any()
    np.testing.assert_array_equal(syn.image[:, ~region], host.image[:, ~region])
    ring = ndi.binary_dilation(region, iterations=int(np.ceil(params.inpaint_radius))) & ~region & (host.label == 0)
    for c in range(host.n_channels):
        fill = syn.image[c][region]
        assert fill.min() >= host.image[c][ring].min() - 1e-4 and fill.max() <= host.image[c][ring].max() + 1e-4
    assert lesion_load_ml(syn.label, host.spacing) == pytest.approx(params.reached_load_ml)
    assert params_from_json(params.to_json()) == params


# ---------------------------------------------------------------- errors


def test_bad_input_gives_one_sentence_errors(bank_and_map):
    bank, lmap = bank_and_map
    host = bank.case("c0")
    cases = [
        (dict(target_load_ml=-1.0), "Target lesion load must be a finite value >= 0 mL"),
        (dict(), "Give a target lesion load"),
        (dict(target_load_ml=5.0, mode="grow"), "mode must be 'auto', 'populate' or 'inpaint'"),
        (dict(target_load_ml=5.0, brain_mask=np.ones((3, 3, 3), bool)), "brain mask has shape"),
        (dict(target_load_ml=5.0, augment=None, soft_a=1.5), "coefficient a must lie in"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(LesionMixError, match=msg) as info:
            sample_lesionmix(np.random.default_rng(0), host, bank, lmap, **kwargs)
        text = str(info.value)
        assert text.count(". ") == 0 and text.endswith(".")
    with pytest.raises(LesionMixError, match="likelihood map has shape"):
        sample_lesionmix(np.random.default_rng(0), host, bank, np.ones((4, 4, 4)), target_load_ml=9.0)
    with pytest.raises(LesionMixError, match="resize factors must be > 0|Resize factors must be > 0"):
        LesionAugment(scale_range=(0.0, 1.0))
    with pytest.raises(LesionMixError, match="mode must be 'populate' or 'inpaint'"):
        LesionMixParams("h", "both", 1.0, 1.0, 1.0, 0.1, True)
    p = LesionMixParams("c0", "inpaint", 0.0, 1.0, 0.0, 0.1, True, removals=(99,))
    with pytest.raises(LesionMixError, match="removal index 99 does not exist"):
        lesionmix(host, p, bank, check_load=False)


# ---------------------------------------------------------------- CLI


def test_cli_likelihood_and_lesionmix_replay(small_dataset, tmp_path, capsys):
    root, _ = small_dataset
    assert main(["likelihood", "--dataset", str(root), "--out", str(tmp_path / "map.nii.gz"), "--sigma-mm", "2"]) == 0
    lmap = load_likelihood(tmp_path / "map.nii.gz")
    assert lmap.values.sum() == pytest.approx(1.0, rel=1e-5)
    out1, out2 = tmp_path / "s1", tmp_path / "s2"
    args = ["lesionmix", "--dataset", str(root), "--host", "c0", "--load-dist", "uniform",
            "--likelihood", str(tmp_path / "map.nii.gz"), "--seed", "3"]
    assert main([*args, "--out", str(out1)]) == 0
    record = json.loads((out1 / "params.json").read_text())
    assert record["params"]["method"] == "lesionmix" and record["params"]["distribution"]["name"] == "uniform"
    assert main(["lesionmix", "--dataset", str(root), "--host", "c0", "--params", str(out1 / "params.json"),
                 "--out", str(out2)]) == 0
    for name in ("image_0000.nii.gz", "label.nii.gz", "mask.nii.gz"):
        a = np.asanyarray(nib.load(out1 / name).dataobj)
        b = np.asanyarray(nib.load(out2 / name).dataobj)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    capsys.readouterr()
    # With neither --target-load nor --load-dist, the target is drawn from the dataset's own loads.
    assert main(["lesionmix", "--dataset", str(root), "--host", "c0", "--out", str(tmp_path / "x")]) == 0
    record = json.loads((tmp_path / "x" / "params.json").read_text())
    assert record["params"]["distribution"]["name"] == "real"
    assert main(["lesionmix", "--dataset", str(root), "--host", "c0", "--params", str(out1 / "params.json"),
                 "--seed", "2", "--out", str(tmp_path / "z")]) == 2
    assert "cannot be combined with --seed" in capsys.readouterr().err
    assert main(["lesionmix", "--dataset", str(root), "--host", "zz", "--target-load", "1",
                 "--out", str(tmp_path / "y")]) == 2
    assert "has no case 'zz'" in capsys.readouterr().err


def test_inpaint_reports_lesions_too_large_to_remove(bank_and_map):
    bank, _ = bank_and_map
    host = make_case(seed=9, n_lesions=1, shape=SHAPE, case_id="big")
    host.label[:] = 0
    host.label[10:18, 10:18, 8:14] = 1  # one lesion
    load = lesion_load_ml(host.label, host.spacing)
    # The message names what is left (issue 12): "the remaining load is one 0.4 mL lesion".
    with pytest.warns(LoadNotReachedWarning, match=f"the remaining load is one {load:.1f} mL lesion"):
        p = sample_lesionmix(sample_rng(0, 0), host, bank, None, target_load_ml=load / 2)
    assert p.mode == "inpaint" and p.removals == () and p.reached_load_ml == pytest.approx(load)
    assert inpaint_shortfall(host, p).startswith(f"the remaining load is one {load:.1f} mL lesion")
    p0 = sample_lesionmix(sample_rng(0, 0), host, bank, None, target_load_ml=0.0)
    syn = lesionmix(host, p0, bank)
    assert p0.target_reached and p0.removals == (0,) and not syn.label.any()


def test_cli_says_why_the_target_was_missed(small_dataset, tmp_path, capsys):
    """The CLI's line names the reason (the studio's status line shows the same words)."""
    root, cases = small_dataset
    load = lesion_load_ml(cases[3].label, cases[3].spacing)
    capsys.readouterr()
    assert main(["lesionmix", "--dataset", str(root), "--host", "c3", "--target-load", f"{load / 2}",
                 "--mode", "populate", "--out", str(tmp_path / "p")]) == 0
    assert "not reached" in (out := capsys.readouterr().out)
    assert "populating only adds lesions and the host load is above the target" in out
    big = make_case(seed=9, n_lesions=1, shape=SHAPE, case_id="big")
    big.label[:] = 0
    big.label[10:18, 10:18, 8:14] = 1  # one lesion: removing it undershoots half its load
    files = write_case(big, tmp_path / "one")
    one = lesion_load_ml(big.label, big.spacing)
    assert main(["lesionmix", "--dataset", str(root), "--host-image", str(files["images"][0]), "--host-label",
                 str(files["label"]), "--target-load", f"{one / 2}", "--out", str(tmp_path / "i")]) == 0
    assert f"the remaining load is one {one:.1f} mL lesion, which cannot go" in capsys.readouterr().out
    assert main(["lesionmix", "--dataset", str(root), "--host", "c3", "--target-load", f"{load}",
                 "--out", str(tmp_path / "r")]) == 0
    assert "the remaining load" not in (out := capsys.readouterr().out) and "populating only" not in out


def test_cli_host_files_inpaint(small_dataset, tmp_path, capsys):
    root, cases = small_dataset
    host = make_case(seed=21, n_lesions=4, shape=SHAPE, case_id="h")
    files = write_case(host, tmp_path / "host")
    brain = np.ones(SHAPE, np.uint8)
    nib.save(nib.Nifti1Image(brain, host.affine), tmp_path / "brain.nii.gz")
    out = tmp_path / "inp"
    code = main(["lesionmix", "--dataset", str(root), "--host-image", str(files["images"][0]),
                 "--host-label", str(files["label"]), "--brain-mask", str(tmp_path / "brain.nii.gz"),
                 "--target-load", "0", "--mode", "inpaint", "--out", str(out)])
    assert code == 0
    label = np.asarray(nib.load(out / "label.nii.gz").dataobj)
    mask = nib.load(out / "mask.nii.gz")
    assert not label.any() and mask.get_data_dtype() == np.uint8
    assert (np.asarray(mask.dataobj)[host.label != 0] == 1).all()
    assert "inpaint:" in capsys.readouterr().out
    assert main(["lesionmix", "--dataset", str(root), "--host-image", str(files["images"][0]),
                 "--target-load", "1", "--out", str(out)]) == 2
    assert "--host-image needs --host-label" in capsys.readouterr().err


def test_multichannel_populate_and_inpaint():
    cases = [make_case(seed=s, n_lesions=3, n_channels=2, case_id=f"m{s}", shape=SHAPE) for s in range(3)]
    bank = LesionBank(cases=cases)
    lmap = likelihood_map(cases)
    host = cases[0]
    load = lesion_load_ml(host.label, host.spacing)
    up = sample_lesionmix(sample_rng(5, 0), host, bank, lmap, target_load_ml=load + 0.6)
    syn = lesionmix(host, up, bank)
    assert syn.image.shape == host.image.shape and up.target_reached
    changed = syn.mask > 0
    assert not np.array_equal(syn.image[0][changed], host.image[0][changed])
    assert not np.array_equal(syn.image[1][changed], host.image[1][changed])
    down = sample_lesionmix(sample_rng(5, 1), host, bank, lmap, target_load_ml=0.0)
    out = lesionmix(host, down, bank)
    assert not out.label.any() and out.image.shape == host.image.shape


def test_a_bank_reads_a_cases_tissue_reference_only_when_asked(small_dataset, monkeypatch):
    """The reference (a brain estimate per case) is for intensity_match="median" only: computed on first read."""
    import pickle

    import napari_lesionmix.augment.lesions as lesions_module
    from napari_lesionmix.augment.lesions import tissue_reference

    root, cases = small_dataset
    calls = []
    real = lesions_module.tissue_reference
    monkeypatch.setattr(lesions_module, "tissue_reference", lambda *a: calls.append(1) or real(*a))
    bank = LesionBank.from_dataset(root)
    first = bank.lesions("c2")
    assert len(bank.all_lesions()) > 4 and calls == []  # every case extracted, no reference computed
    expected = tissue_reference(cases[2].image, cases[2].label)
    assert first[0].reference == pytest.approx(expected) and calls == [1]
    assert all(les.reference == first[0].reference for les in first) and calls == [1]  # one per case
    again = pickle.loads(pickle.dumps(bank.lesions("c1")[0]))  # Dask ships lesions: the value travels
    assert again.reference == pytest.approx(tissue_reference(cases[1].image, cases[1].label))


def test_intensity_match_scales_pasted_lesions_to_the_host():
    import dataclasses

    from napari_lesionmix.augment.lesions import tissue_reference

    host = make_case(seed=0, n_lesions=2, shape=SHAPE, case_id="h")
    src = make_case(seed=1, n_lesions=4, shape=SHAPE, case_id="s")
    src.image *= 2.5  # a brighter scanner
    bank = LesionBank(cases=[src])
    lmap = likelihood_map([host.label, src.label])
    target = lesion_load_ml(host.label, host.spacing) + 0.5
    p_m = sample_lesionmix(sample_rng(3, 0), host, bank, lmap, target_load_ml=target, intensity_match="median")
    p_n = dataclasses.replace(p_m, intensity_match="none", host_reference=())
    ratio = p_m.host_reference[0] / bank.lesions("s")[0].reference[0]
    assert ratio == pytest.approx(tissue_reference(host.image, host.label)[0] / tissue_reference(src.image, src.label)[0])
    assert 0.3 < ratio < 0.5
    a, b = lesionmix(host, p_m, bank), lesionmix(host, p_n, bank)
    core = a.mask == 1
    assert core.any()
    np.testing.assert_allclose(a.image[:, core], b.image[:, core] * ratio, rtol=1e-5)
    np.testing.assert_array_equal(a.label, b.label)
    assert params_from_json(p_m.to_json()) == p_m


def test_a_bank_reads_a_cases_image_only_when_one_of_its_lesions_is_pasted(small_dataset, monkeypatch):
    """Drawing needs masks and volumes (from the labels); the pixels are read once per case, on first use."""
    import pickle

    import napari_lesionmix.augment.lesions as lesions_module

    root, cases = small_dataset
    reads = []
    real = lesions_module.load_image
    monkeypatch.setattr(lesions_module, "load_image", lambda paths: reads.append(paths) or real(paths))
    bank = LesionBank.from_dataset(root)
    assert len(bank.all_lesions()) > 4 and reads == []
    assert bank.loads() == pytest.approx({c.case_id: lesion_load_ml(c.label, c.spacing) for c in cases})
    shipped = pickle.loads(pickle.dumps(bank.lesions("c3")))  # Dask ships lesions before any is read
    for case in cases:  # the same lesions, crops and all, as extracting the whole case read from its files
        want = extract_lesions(bank.case(case.case_id))
        got = bank.lesions(case.case_id)
        assert [les.box for les in got] == [les.box for les in want]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_array_equal(a.label, b.label)
            assert a.label.dtype == b.label.dtype and a.spacing == b.spacing
            assert (a.volume_ml, a.centroid_voxel, a.centroid_mm) == (b.volume_ml, b.centroid_voxel, b.centroid_mm)
        np.testing.assert_array_equal(got[-1].image, want[-1].image)
        assert got[0].image.dtype == np.float32 and got[0].image.flags.c_contiguous
        np.testing.assert_array_equal(got[0].image, want[0].image)
    assert len(reads) == len(cases)  # one read per case, every crop cut from it
    np.testing.assert_array_equal(shipped[0].image, bank.lesions("c3")[0].image)
    assert len(reads) == len(cases) + 1  # the copy read its own image


def test_a_bank_case_with_a_bad_image_fails_when_built_or_when_its_image_is_read(tmp_path):
    """Geometry errors come from the headers, when the bank is built; pixel errors when a crop is first read."""
    good = make_case(seed=1, n_lesions=2, shape=SHAPE, case_id="good")
    write_case(good, tmp_path / "shape")
    small = make_case(seed=2, n_lesions=2, shape=(SHAPE[0] - 2, *SHAPE[1:]), case_id="bad")
    files = write_case(small, tmp_path / "shape")
    nib.save(nib.Nifti1Image(make_case(seed=2, n_lesions=2, shape=SHAPE).label, good.affine), files["label"])
    with pytest.raises(LesionMixError, match=r"bad_seg.nii.gz' has shape \(32, 36, 28\) but image '.*bad.nii.gz' has \(30, 36, 28\)"):
        LesionBank.from_dataset(tmp_path / "shape").lesions("bad")

    nan = make_case(seed=3, n_lesions=2, shape=SHAPE, case_id="nan")
    nan.image[0, 0, 0, 0] = np.nan
    write_case(nan, tmp_path / "nan")
    bank = LesionBank.from_dataset(tmp_path / "nan")
    lesion = bank.lesions("nan")[0]  # the label is fine: the lesions are known
    for _ in range(2):  # and stay unreadable (no half-cut crops)
        with pytest.raises(LesionMixError, match=r"nan.nii.gz' contains 1 NaN"):
            _ = lesion.image
