"""Soft-CP: the soft mask (Figs. 4-5), Eqs. (1)-(4), replay, the CLI and its errors."""

from __future__ import annotations

import dataclasses
import json
import re

import nibabel as nib
import numpy as np
import pytest
from factories import make_case
from scipy import ndimage as ndi

from napari_lesionmix.augment.params import params_from_json
from napari_lesionmix.augment.paste.objects import prepare_object
from napari_lesionmix.augment.paste.placement import constraints, host_lesions, paste_boxes
from napari_lesionmix.augment.softcp import (
    DonorLesions,
    ImageOp,
    PastedLesion,
    SoftCPParams,
    sample_softcp,
    softcp,
)
from napari_lesionmix.augment.softmask import soft_mask
from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError

NO_TRANSFORMS = {"rigid_choices": ("none",), "intensity_choices": ("none",), "image_choices": ("none",)}


def _ball(shape=(32, 32, 32), centre=(16, 16, 16), radius=6.0):
    z = np.indices(shape)
    return sum((z[a] - centre[a]) ** 2 for a in range(3)) <= radius**2


def _brain(shape):
    """An ellipsoid 'brain' filling most of the volume."""
    z = np.indices(shape).astype(float)
    c = [(s - 1) / 2 for s in shape]
    return sum(((z[a] - c[a]) / (0.45 * shape[a])) ** 2 for a in range(3)) <= 1.0


# --------------------------------------------------------------------------- soft mask


@pytest.mark.parametrize("a, k_erode, k_dilate", [(0.5, 1, 4), (0.8, 2, 3), (0.3, 0, 2)])
def test_soft_mask_core_band_and_falloff(a, k_erode, k_dilate):
    m = _ball() | _ball(centre=(16, 16, 24), radius=3.0)
    s = soft_mask(m, a=a, k_erode=k_erode, k_dilate=k_dilate)
    assert s.dtype == np.float32 and s.shape == m.shape
    assert s.min() >= 0 and s.max() <= 1
    # Core: the lesion eroded k_erode times (Euclidean ball) has weight exactly 1.
    core = ndi.distance_transform_edt(m) > k_erode
    assert (s[core] == 1).all()
    # Band: zero beyond k_dilate of the lesion, positive within it.
    d_lesion = ndi.distance_transform_edt(~m)
    assert (s[d_lesion > k_dilate] == 0).all()
    assert (s[d_lesion <= k_dilate] > 0).all()
    # Fall-off: a ** distance to the core, hence monotone in that distance.
    d_core = ndi.distance_transform_edt(~core)
    band = (d_lesion <= k_dilate) & ~core
    np.testing.assert_allclose(s[band], a ** d_core[band], rtol=1e-5)
    order = np.argsort(d_core[band], kind="stable")
    assert (np.diff(s[band][order]) <= 1e-7).all()


def test_soft_mask_one_iteration_matches_binary_morphology():
    m = _ball(radius=5.0)
    m[16:20, 16, 16:26] = True  # not just a sphere
    cross = ndi.generate_binary_structure(3, 1)
    s = soft_mask(m, a=0.5, k_erode=1, k_dilate=1)
    np.testing.assert_array_equal(s == 1, ndi.binary_erosion(m, cross))
    np.testing.assert_array_equal(s > 0, ndi.binary_dilation(m, cross))


def test_soft_mask_keeps_tiny_lesions_and_uses_spacing():
    m = np.zeros((20, 20, 20), bool)
    m[5, 5, 5] = True
    m[12:14, 12:14, 12:14] = True  # 2x2x2: erosion empties it
    s = soft_mask(m, a=0.5, k_erode=2, k_dilate=3)
    assert s[5, 5, 5] == 1
    assert (s[12:14, 12:14, 12:14] == 1).all()  # all 8 voxels are equally interior
    # Spacing: one iteration is one step of the finest axis, round in mm.
    s2 = soft_mask(m, a=0.5, k_erode=0, k_dilate=4, spacing=(1.0, 1.0, 2.0))
    assert s2[5, 5, 7] == np.float32(0.5**4) and s2[5, 5, 8] == 0
    assert s2[5, 9, 5] == np.float32(0.5**4)
    assert not soft_mask(np.zeros((5, 5, 5)), 0.5, 1, 2).any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"a": 1.0}, r"The softening coefficient a must lie in \(0, 1\), got 1.0."),
        ({"k_erode": -1}, "k_erode must be a non-negative integer number of iterations, got -1."),
        ({"k_dilate": 1.5}, "k_dilate must be a non-negative integer number of iterations, got 1.5."),
        ({"spacing": (1, 1)}, r"Spacing \(1.0, 1.0\) must hold 3 positive voxel sizes for a 3D mask."),
    ],
)
def test_soft_mask_bad_parameters(kwargs, message):
    with pytest.raises(LesionMixError, match=message):
        soft_mask(_ball(), **kwargs)


# --------------------------------------------------------------------------- Eqs. (1)-(2)


def test_identity_paste_follows_eqs_1_and_2(host_case, donor_case):
    params = sample_softcp(np.random.default_rng(3), host_case, donor_case, reference="none", **NO_TRANSFORMS)
    syn = softcp(host_case, donor_case, params)
    # Eq. (2): the synthetic label contains the host label, plus the pasted lesion.
    assert (syn.label[host_case.label != 0] == host_case.label[host_case.label != 0]).all()
    pasted = (syn.label != 0) & (host_case.label == 0)
    lesions = DonorLesions.from_case(donor_case)
    comp = lesions.components == params.lesions[0].component
    assert pasted.sum() == comp.sum()
    shift = np.argwhere(pasted).min(0) - np.argwhere(comp).min(0)
    np.testing.assert_array_equal(np.argwhere(pasted), np.argwhere(comp) + shift)
    # Eq. (1): the host is untouched where S = 0; the donor is copied where S = 1.
    s = syn.mask
    np.testing.assert_array_equal(syn.image[:, s == 0], host_case.image[:, s == 0])
    ones = np.argwhere(s == 1)
    np.testing.assert_allclose(syn.image[0][tuple(ones.T)], donor_case.image[0][tuple((ones - shift).T)], rtol=1e-6)
    # In the band the value lies between host and donor.
    band = np.argwhere((s > 0) & (s < 1))
    h = host_case.image[0][tuple(band.T)]
    d = donor_case.image[0][tuple((band - shift).T)]
    v = syn.image[0][tuple(band.T)]
    np.testing.assert_allclose(v, s[tuple(band.T)] * d + (1 - s[tuple(band.T)]) * h, rtol=1e-5)


def test_channels_share_the_soft_mask():
    host = make_case(seed=1, n_lesions=2, n_channels=2, case_id="h")
    donor = make_case(seed=2, n_lesions=3, n_channels=2, case_id="d")
    host.image[1] = 2 * host.image[0] + 5
    donor.image[1] = 2 * donor.image[0] + 5
    params = sample_softcp(np.random.default_rng(1), host, donor, reference="none",
                           rigid_choices=("rotation", "flip"), intensity_choices=("none",), image_choices=("none",))
    syn = softcp(host, donor, params)
    assert (syn.mask > 0).any()
    np.testing.assert_allclose(syn.image[1], 2 * syn.image[0] + 5, rtol=1e-5)


# --------------------------------------------------------------------------- Eqs. (3)-(4)


@pytest.mark.parametrize("delta1, delta2", [(0.9, 0.0), (1.0, 0.0), (0.6, 0.3)])
def test_every_placement_meets_delta1_and_delta2(host_case, donor_case, delta1, delta2):
    brain = _brain(host_case.shape)
    lesions = DonorLesions.from_case(donor_case)
    for seed in range(12):
        params = sample_softcp(np.random.default_rng(seed), host_case, donor_case, brain, delta1=delta1,
                               delta2=delta2, n_lesions=2, image_choices=("none",), donor_lesions=lesions)
        assert params.reference == "brain_mask"
        occupied = host_lesions(host_case.label, (), "brain_mask")
        for p in params.lesions:
            obj = prepare_object(donor_case, lesions, p.component, p.rigid, p.intensity, params.a, params.k_erode,
                           params.k_dilate, params.order)
            inside, overlap = constraints(obj, p.offset, brain, occupied)
            assert inside >= delta1 and overlap <= delta2
            box, crop = paste_boxes(p.offset, obj.shape, host_case.shape)
            occupied[box] |= obj.lesion[crop]
        if delta2 == 0.0:
            # Checked on the output too: the pasted lesions lie in the brain, off the host's lesions.
            syn = softcp(host_case, donor_case, params, donor_lesions=lesions)
            pasted = (syn.label != 0) & (host_case.label == 0)
            assert np.count_nonzero(pasted & brain) >= delta1 * np.count_nonzero(pasted) - 1e-9


def test_reference_label_is_not_a_host_lesion(donor_case):
    host = make_case(seed=1, n_lesions=2, case_id="kidney")
    organ = _brain(host.shape)
    host.label = np.where(organ, 1, 0).astype(np.uint8)
    host.label[host.label.shape[0] // 2, 10:13, 8:11] = 2  # an existing tumour
    donor_case.label = donor_case.label * 2  # tumours are label 2, as in KiTS
    for seed in range(4):
        params = sample_softcp(np.random.default_rng(seed), host, donor_case, reference="label:1", delta1=1.0,
                               lesion_labels=(2,), image_choices=("none",))
        syn = softcp(host, donor_case, params)
        pasted = syn.label != host.label
        assert pasted.any() and organ[pasted].all() and (syn.label[pasted] == 2).all()
        assert (syn.label[host.label == 2] == 2).all()
        assert (syn.label[organ] != 0).all()


def test_source_placement_puts_the_lesion_back_in_place(host_case, donor_case):
    lesions = DonorLesions.from_case(donor_case)
    params = sample_softcp(np.random.default_rng(5), host_case, donor_case, reference="none", delta2=1.0,
                           placement="source", jitter_mm=0.0, **NO_TRANSFORMS)
    assert params.placement == "source"
    syn = softcp(host_case, donor_case, params)
    comp = lesions.components == params.lesions[0].component
    assert (syn.label[comp] != 0).all()
    np.testing.assert_array_equal(syn.image[:, syn.mask == 1], donor_case.image[:, syn.mask == 1])
    with pytest.raises(LesionMixError, match="Unknown placement 'here'; choose 'random' or 'source'."):
        sample_softcp(np.random.default_rng(5), host_case, donor_case, placement="here")


def test_impossible_placement_says_why(host_case, donor_case):
    tiny = np.zeros(host_case.shape, bool)
    tiny[12, 14, 10] = True
    with pytest.raises(LesionMixError) as err:
        sample_softcp(np.random.default_rng(0), host_case, donor_case, tiny, delta1=0.9, max_tries=30)
    msg = str(err.value)
    assert re.fullmatch(
        r"No position keeps >= 90% of donor lesion \d+ \(\d+ voxels\) inside the brain mask and <= 0% on the "
        r"host's lesions after 30 tries \(most often less than 90% of the lesion lay in the brain mask\); "
        r"lower delta1, raise delta2, use a larger reference or place near the source\."
        r"( The \d+ other drawn lesion\(s\) found none either\.)?", msg), msg


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"a": 0.0}, r"The softening coefficient a must lie in \(0, 1\), got 0.0."),
        ({"delta1": 1.5}, r"delta1 must be a fraction in \[0, 1\], got 1.5."),
        ({"reference": "skull"}, "Unknown reference 'skull'; use 'brain_mask', 'label:N'"),
        ({"reference": "brain_mask"}, "The reference is 'brain_mask' but no brain mask was given."),
        ({"reference": "label:7"}, "The reference region 'label:7' of host 'host' is empty."),
        ({"n_lesions": 50}, r"Donor 'donor' has \d+ lesion\(s\) of at least 1 voxel\(s\) but 50 were asked for."),
        ({"rigid_choices": ("shear",)}, r"Unknown rigid transform\(s\) \['shear'\]"),
    ],
)
def test_bad_arguments_are_one_sentence(host_case, donor_case, kwargs, message):
    with pytest.raises(LesionMixError, match=message):
        sample_softcp(np.random.default_rng(0), host_case, donor_case, **kwargs)


def test_donor_without_lesion(host_case, donor_case):
    donor_case.label[:] = 0
    with pytest.raises(LesionMixError, match="Donor label 'donor' has no lesion voxels"):
        sample_softcp(np.random.default_rng(0), host_case, donor_case)


# --------------------------------------------------------------------------- replay


def test_replay_is_bit_identical(host_case, donor_case):
    brain = _brain(host_case.shape)
    kinds = set()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        params = sample_softcp(rng, host_case, donor_case, brain, n_lesions=2, delta1=0.7,
                               intensity_compat=seed % 2 == 1, seed=seed)
        assert params == sample_softcp(np.random.default_rng(seed), host_case, donor_case, brain, n_lesions=2,
                                       delta1=0.7, intensity_compat=seed % 2 == 1, seed=seed)
        kinds |= {op.kind for op in params.image_ops}
        kinds |= {t.kind for p in params.lesions for t in (*p.rigid, *p.intensity)}
        a = softcp(host_case, donor_case, params)
        replay = params_from_json(json.dumps({"params": params.to_dict()}))
        assert replay == params
        b = softcp(host_case, donor_case, replay)
        for x, y in ((a.image, b.image), (a.label, b.label), (a.mask, b.mask)):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert {"rotation", "scaling", "flip", "gamma", "noise"} <= kinds


def test_image_level_ops_apply_to_the_host(host_case, donor_case):
    lesion = PastedLesion(1, offset=(0, 0, 0))
    base = dict(lesions=(lesion,), reference="none")
    plain = softcp(host_case, donor_case, SoftCPParams("host", "donor", **base))
    crop = ImageOp("crop_resize", start=(2, 2, 2), size=(20, 24, 16))
    zoomed = softcp(host_case, donor_case, SoftCPParams("host", "donor", image_ops=(crop,), **base))
    untouched = (plain.mask == 0) & (zoomed.mask == 0)
    assert not np.allclose(plain.image[:, untouched], zoomed.image[:, untouched])
    assert zoomed.label.sum() != plain.label.sum()
    with pytest.raises(LesionMixError, match="crop_resize needs a 3D start"):
        ImageOp("crop_resize", start=(0, 0), size=(3, 3))


def test_crop_and_resize_is_trilinear_crop_then_resize():
    from napari_lesionmix.augment.paste.image_ops import source_coords, zoom_linear, zoom_nearest

    vol = np.random.default_rng(0).normal(size=(20, 24, 18)).astype(np.float32)
    op = ImageOp("crop_resize", start=(2, 3, 1), size=(17, 20, 16))
    coords = source_coords(op, vol.shape)
    grid = np.meshgrid(*coords, indexing="ij")
    np.testing.assert_allclose(zoom_linear(vol, op), ndi.map_coordinates(vol, grid, order=1), atol=1e-5)
    np.testing.assert_array_equal(zoom_nearest(vol, coords), ndi.map_coordinates(vol, grid, order=0))
    assert zoom_linear(vol, op).shape == vol.shape


def test_intensity_compatibility_matches_the_ring(host_case, donor_case):
    donor_case.image += 500.0  # a donor from another scanner
    common = dict(reference="none", **NO_TRANSFORMS)
    params = sample_softcp(np.random.default_rng(2), host_case, donor_case, **common)
    raw = softcp(host_case, donor_case, params)
    matched = softcp(host_case, donor_case, SoftCPParams(**{**params.__dict__, "intensity_compat": True}))
    core = raw.mask == 1
    host_level = host_case.image[0][core].mean()
    assert raw.image[0][core].mean() - host_level > 400
    assert abs(matched.image[0][core].mean() - host_level) < 100


# --------------------------------------------------------------------------- sample data


def test_sample_subject_pair_with_brain_mask(sample_dataset):
    host_rec, donor_rec = sample_dataset.cases[0], sample_dataset.cases[1]
    host, donor = host_rec.load(), donor_rec.load()
    brain = host_rec.load_brain_mask()
    params = sample_softcp(np.random.default_rng(0), host, donor, brain, n_lesions=3, delta1=0.95)
    syn = softcp(host, donor, params, brain)
    assert (syn.label[host.label != 0] != 0).all()
    lesions = DonorLesions.from_case(donor)
    occupied = host.label != 0
    for p in params.lesions:
        if params.image_ops[0].kind == "crop_resize":
            break
        obj = prepare_object(donor, lesions, p.component, p.rigid, p.intensity, params.a, params.k_erode,
                       params.k_dilate, params.order)
        inside, overlap = constraints(obj, p.offset, brain, occupied)
        assert inside >= 0.95 and overlap == 0


# --------------------------------------------------------------------------- CLI


def _args(pair, out, *extra):
    h, d = pair["host"], pair["donor"]
    return ["softcp", "--host-image", str(h["images"][0]), "--host-label", str(h["label"]),
            "--donor-image", str(d["images"][0]), "--donor-label", str(d["label"]), "--out", str(out), *extra]


def _write_mask(mask, like, path):
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), nib.load(like).affine), path)
    return path


def test_cli_writes_the_layout_and_replays(pair_on_disk, tmp_path, capsys):
    brain = _write_mask(_brain((24, 28, 20)), pair_on_disk["host"]["label"], tmp_path / "bm.nii.gz")
    out = tmp_path / "out"
    assert main(_args(pair_on_disk, out, "--brain-mask", str(brain), "--seed", "4", "--n-lesions", "2",
                      "--a", "0.6", "--k-dilate", "3")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image_0000.nii.gz", "label.nii.gz", "mask.nii.gz", "params.json"]
    record = json.loads((out / "params.json").read_text())
    p = record["params"]
    assert p["method"] == "softcp" and p["seed"] == 4 and p["a"] == 0.6 and p["k_dilate"] == 3
    assert len(p["lesions"]) == 2 and p["reference"] == "brain_mask"
    assert record["inputs"]["brain_mask"].endswith("bm.nii.gz")
    mask = np.asarray(nib.load(out / "mask.nii.gz").dataobj)
    assert mask.dtype == np.float32 and 0 < mask.max() <= 1 and ((mask > 0) & (mask < 1)).any()
    assert "2 lesion(s) pasted" in capsys.readouterr().out
    out2 = tmp_path / "replay"
    assert main(_args(pair_on_disk, out2, "--params", str(out / "params.json"))) == 0
    for name in ("image_0000.nii.gz", "label.nii.gz", "mask.nii.gz"):
        assert (np.asarray(nib.load(out / name).dataobj).tobytes()
                == np.asarray(nib.load(out2 / name).dataobj).tobytes())


@pytest.mark.parametrize(
    "extra, message",
    [
        (lambda t, p: ["--brain-mask", str(t / "nope.nii.gz")], "Brain mask file '.*nope.nii.gz' does not exist."),
        (lambda t, p: ["--brain-mask", str(_write_mask(np.ones((5, 5, 5)), p["host"]["label"], t / "s.nii.gz"))],
         r"Brain mask '.*s.nii.gz' has shape \(5, 5, 5\) but the host has \(24, 28, 20\)."),
        (lambda t, p: ["--brain-mask", str(_write_mask(np.zeros((24, 28, 20)), p["host"]["label"], t / "e.nii.gz"))],
         "Brain mask '.*e.nii.gz' is empty."),
        (lambda t, p: ["--a", "1.5"], r"Option softcp.a must be < 1.0, got 1.5."),
        (lambda t, p: ["--reference", "label:9"], "The reference region 'label:9' of host '.*' is empty."),
        (lambda t, p: ["--params", str(t / "none.json")], "Params file '.*none.json' does not exist."),
        (lambda t, p: ["--brain-mask", str(_write_mask(np.pad(np.ones((1, 1, 1)), ((3, 20), (3, 24), (3, 16))),
                                                       p["host"]["label"], t / "dot.nii.gz")),
                       "--max-tries", "20"],
         r"No position keeps >= 90% of donor lesion \d+ .* after 20 tries"),
    ],
    ids=["missing-mask", "mask-shape", "empty-mask", "bad-a", "empty-label", "missing-params", "no-position"],
)
def test_cli_bad_input_is_one_sentence(pair_on_disk, tmp_path, capsys, extra, message):
    assert main(_args(pair_on_disk, tmp_path / "out", *extra(tmp_path, pair_on_disk))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lesionmix softcp: error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_params_of_another_method(pair_on_disk, tmp_path, capsys):
    other = tmp_path / "params.json"
    other.write_text(json.dumps({"params": {"method": "carvemix", "host_id": "h", "donor_id": "d", "lam": 0.0}}))
    assert main(_args(pair_on_disk, tmp_path / "out", "--params", str(other))) == 2
    assert "holds carvemix params, not softcp" in capsys.readouterr().err


def test_tissue_reference_leaves_csf_out(host_case, donor_case):
    """reference="tissue": the brain without its darkest voxels, so no lesion lands in CSF (issue 12)."""
    from napari_lesionmix.augment.softcp import reference_region, tissue_region

    image = host_case.image[0].copy()
    csf = np.zeros(host_case.shape, bool)
    csf[8:14, 10:16, 6:12] = True
    image[csf] = 5.0  # dark, as ventricles on FLAIR
    ref = tissue_region(image)
    assert not ref[csf].any() and ref[~csf].mean() > 0.85
    host = dataclasses.replace(host_case, image=image[None])
    np.testing.assert_array_equal(reference_region(host, "tissue", None), ref)
    params = sample_softcp(np.random.default_rng(0), host, donor_case, reference="tissue", delta1=1.0)
    syn = softcp(host, donor_case, params)
    pasted = (syn.label != 0) & (host.label == 0)
    assert pasted.any() and not (pasted & csf).any()
