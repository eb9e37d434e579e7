"""Issue 17: robust normalisation, the cross-subject criterion, HM as the paper, out-of-domain warning."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import nibabel as nib
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from factories import make_case  # noqa: E402

from napari_lesionmix.cli import main  # noqa: E402
from napari_lesionmix.errors import LesionMixError  # noqa: E402
from napari_lesionmix.harmonize import (  # noqa: E402
    ModelConfig,
    OutOfDomainWarning,
    TrainConfig,
    harmonize,
    load_harmonizer,
    train_harmonizer,
)
from napari_lesionmix.harmonize.baselines import histogram_matching, histogram_matching_lesions  # noqa: E402
from napari_lesionmix.harmonize.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from napari_lesionmix.harmonize.criterion import (  # noqa: E402
    WITHIN_15_PERCENT,
    bias_field,
    carvemix_paste,
    contrast,
    contrast_error,
    cross_subject_pastes,
    shift_case,
)
from napari_lesionmix.harmonize.data import (  # noqa: E402
    domain_stats,
    domain_warning,
    minmax_scale,
    normalise,
    robust_scale,
    sample_perturbation,
    summarise_domain,
)
from napari_lesionmix.harmonize.model import Generator  # noqa: E402

TINY = ModelConfig(base_channels=4, depth=2, disc_channels=4, disc_layers=2)


def brain_like(seed=0, shape=(24, 28, 20)):
    """A skull-stripped-like image: tissue ~100 inside an ellipsoid, 0 outside, bright lesions inside."""
    rng = np.random.default_rng(seed)
    zz = np.indices(shape).astype(float)
    c = [s / 2 for s in shape]
    inside = sum(((zz[a] - c[a]) / (0.45 * shape[a])) ** 2 for a in range(3)) <= 1
    img = np.where(inside, rng.normal(100, 5, shape), 0).astype(np.float32)[None]
    return img, inside


# -- robust normalisation (the root cause of the overshoot) ---------------------------------------

def test_robust_scale_ignores_a_hot_voxel_and_the_gain_where_minmax_does_not():
    img, inside = brain_like()
    hot = img.copy()
    hot[0, 12, 14, 10] = 100 * img.max()
    r0, _, _, _ = robust_scale(img)
    r1, _, _, _ = robust_scale(hot)
    r2, _, _, _ = robust_scale(1.7 * img)
    assert abs(float(np.median(r0[0][inside])) - 0.5) < 0.01
    keep = np.ones(img.shape[1:], bool)
    keep[12, 14, 10] = False
    np.testing.assert_allclose(r1[0][keep], r0[0][keep], atol=1e-3)
    np.testing.assert_allclose(r2, r0, atol=1e-4)
    m0, _, _ = minmax_scale(img)
    m1, _, _ = minmax_scale(hot)
    assert np.median(m1[0][inside]) < 0.05 * np.median(m0[0][inside])  # min-max: tissue crushed to ~0


def test_normalise_reads_old_and_rejects_unknown_specs():
    img, _ = brain_like()
    a, lo, hi = normalise(img, None)  # checkpoints without a record: the paper's min-max
    assert a.min() == 0 and a.max() == 1
    with pytest.raises(LesionMixError, match="normalisation 'zscore' is not known"):
        normalise(img, {"method": "zscore"})


def write_ckpt(path, normalisation=None, domain=None, patch=16):
    torch.manual_seed(0)
    gen = Generator(TINY)
    state = {"model_config": TINY.to_dict(), "train_config": TrainConfig(patch_size=patch, model=TINY).to_dict(),
             "generator": gen.state_dict(), "epoch": 0}
    if normalisation is not None:
        state["normalisation"] = normalisation
    if domain is not None:
        state["domain"] = domain
    save_checkpoint(state, path)
    return path


def test_a_checkpoint_with_an_unknown_normalisation_fails_in_one_sentence(tmp_path):
    p = write_ckpt(tmp_path / "odd.pt", normalisation={"method": "zscore"})
    with pytest.raises(LesionMixError, match=r"odd\.pt.*'zscore' is not known"):
        load_harmonizer(p, device="cpu")
    old = load_harmonizer(write_ckpt(tmp_path / "old.pt"), device="cpu")  # no record: min-max, still loads
    assert old.params()["normalisation"] == "minmax"


def test_gain_range_draws_log_uniform_factors():
    rng = np.random.default_rng(0)
    f = np.array([1 + sample_perturbation(rng, gain_range=4.0)[0] for _ in range(2000)])
    assert f.min() >= 0.25 - 1e-9 and f.max() <= 4.0 + 1e-9
    assert abs(float(np.median(np.log(f)))) < 0.1 and f.max() > 3 and f.min() < 0.35


# -- the criterion ----------------------------------------------------------------------------------

def test_contrast_and_its_error():
    img = np.ones((1, 4, 4, 4), np.float32)
    region = np.zeros((4, 4, 4), bool)
    region[0, 0, :2] = True
    img[0][region] = 1.5
    assert contrast(img, region, ~region) == 1.5
    assert contrast_error(1.5 * 1.15, 1.5) == pytest.approx(math.log(1.15))
    assert contrast_error(-1, 1) == math.inf
    f = bias_field((10, 12, 8))
    assert 0.65 < f.min() < 0.8 and 1.25 < f.max() < 1.45


def test_carvemix_paste_measures_the_donor_gain():
    host, donor = make_case(seed=1, case_id="h"), make_case(seed=2, case_id="d")
    p = carvemix_paste(host, donor)
    assert np.array_equal(p.mask, donor.label > 0)  # lambda = 0: the ROI is the donor's lesion mask
    assert p.region.any() and p.host_lesions.any() and p.normal.any()
    base = p.error(p.image)
    hot = carvemix_paste(host, shift_case(donor, "x1.7"))
    c0 = contrast(p.image, p.region, p.normal)
    c1 = contrast(hot.image, hot.region, hot.normal)
    assert c1 / c0 == pytest.approx(1.7, rel=1e-4)
    assert hot.error(hot.image) != base
    pastes = cross_subject_pastes([host, donor], shifts=("as is", "donor x0.6"), methods=("carvemix",))
    assert [q.name for q in pastes] == ["CarveMix d->h as is", "CarveMix d->h donor x0.6",
                                        "CarveMix h->d as is", "CarveMix h->d donor x0.6"]


def test_criterion_of_a_z_scored_scan_is_the_scan_s_own():
    """BraTS-style z-scores: normal brain near 0, background a negative constant; contrast from the background."""
    def skull_stripped(seed, cid):
        case = make_case(seed=seed, case_id=cid, shape=(32, 32, 24))
        _, inside = brain_like(shape=(32, 32, 24))
        return dataclasses.replace(case, image=np.where(inside, case.image, 0).astype(np.float32),
                                   label=(case.label * inside).astype(case.label.dtype))

    host, donor = skull_stripped(1, "h"), skull_stripped(2, "d")
    z_score = lambda c: dataclasses.replace(c, image=((c.image - 110.0) / 20.0).astype(np.float32))  # noqa: E731
    raw = carvemix_paste(host, shift_case(donor, "x1.7"))
    z = carvemix_paste(z_score(host), z_score(shift_case(donor, "x1.7")))
    assert np.median(z.image[0][z.normal]) < 0 and z.zero == pytest.approx(-5.5)  # a plain ratio is undefined
    assert raw.zero == 0.0
    assert z.host_contrast == pytest.approx(raw.host_contrast, rel=1e-4)
    assert z.error(z.image) == pytest.approx(raw.error(raw.image), rel=1e-3) and raw.error(raw.image) > 0.3


# -- HM as the paper describes it -----------------------------------------------------------------

def test_hm_matches_pasted_lesions_to_the_host_lesions():
    host, donor = make_case(seed=1, case_id="h"), make_case(seed=2, case_id="d")
    p = carvemix_paste(host, shift_case(donor, "x1.7"))
    out = histogram_matching_lesions(p.image, p.mask, p.label)
    np.testing.assert_array_equal(out[:, ~p.mask], p.image[:, ~p.mask])
    assert p.error(out) < 0.05 < p.error(p.image)
    ring = histogram_matching(p.image, p.mask)  # the old variant matches lesions to normal tissue
    assert p.error(ring) > p.error(out)
    # No label, or no host lesion: the ring fall-back.
    np.testing.assert_array_equal(histogram_matching_lesions(p.image, p.mask, None), ring)
    np.testing.assert_array_equal(harmonize(p.image, p.mask, method="hm-ring", label=p.label), ring)
    np.testing.assert_array_equal(harmonize(p.image, p.mask, method="hm", label=p.label), out)
    assert load_harmonizer("hm").params()["method"] == "hm"
    assert load_harmonizer("hm-ring").params()["method"] == "hm-ring"


# -- out-of-domain warning ------------------------------------------------------------------------

def domain_of(*images, spacing=(2.0, 2.0, 2.0)):
    return summarise_domain([domain_stats(im, spacing) for im in images])


def test_domain_warning_on_spacing_and_intensity():
    img, _ = brain_like(0)
    dom = domain_of(img, brain_like(1)[0])
    assert dom["spacing_min"] == [2.0, 2.0, 2.0] and len(dom["q_min"][0]) == 5
    assert domain_warning(dom, img, (2.0, 2.0, 2.0)) is None
    assert domain_warning(dom, 1.7 * img, (2.0, 2.0, 2.0)) is None  # the gain is normalised away
    msg = domain_warning(dom, img, (1.0, 1.0, 1.0))
    assert msg and msg.count(". ") == 0 and msg.endswith(".") and "train-harmonizer" in msg and "spacing" in msg
    wide = img.copy()
    rng = np.random.default_rng(3)
    shell = (img[0] > 0) & (rng.random(img.shape[1:]) < 0.2)
    wide[0][shell] = 400.0  # bright fat of a scan that was not skull-stripped: a heavy upper tail
    assert "95th intensity percentile" in domain_warning(dom, wide, (2.0, 2.0, 2.0))
    # A bright paste is what harmonization is for: the pasted voxels (the mask) are left out.
    assert domain_warning(dom, wide, (2.0, 2.0, 2.0), exclude=shell) is None
    assert domain_warning(None, img, (1.0, 1.0, 1.0)) is None  # older checkpoints record no domain


def test_harmonize_warns_out_of_domain_in_library_and_cli(tmp_path, capsys):
    img, inside = brain_like(0)
    mask = np.zeros(inside.shape, bool)
    mask[10:14, 12:16, 8:12] = True
    ck = write_ckpt(tmp_path / "m.pt", normalisation={"method": "robust"}, domain=domain_of(img))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        harmonize(img, mask, method=ck, device="cpu", spacing=(2.0, 2.0, 2.0))  # inside: silent
        # 1 mm against a 2 mm model: it runs on its own 2 mm grid (harmonize/resample.py), so no spacing warning.
        harmonize(img, mask, method=ck, device="cpu", spacing=(1.0, 1.0, 1.0))
    wide = img.copy()
    shell = (img[0] > 0) & ~mask & (np.random.default_rng(3).random(img.shape[1:]) < 0.2)
    wide[0][shell] = 400.0  # bright fat of a scan that was not skull-stripped, outside the paste
    with pytest.warns(OutOfDomainWarning, match="trained on data unlike this image"):
        harmonize(wide, mask, method=ck, device="cpu", spacing=(1.0, 1.0, 1.0))
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(wide[0], aff), tmp_path / "syn.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff), tmp_path / "roi.nii.gz")
    assert main(["harmonize", "--image", str(tmp_path / "syn.nii.gz"), "--mask", str(tmp_path / "roi.nii.gz"),
                 "--model", str(ck), "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.count("harmonize: warning: This ARHNet checkpoint was trained on data unlike this image") == 1
    params = json.loads((tmp_path / "o" / "params.json").read_text())["params"]
    assert params["ran_at_spacing"] == [2.0, 2.0, 2.0] and params["trained_spacing"] == [2.0, 2.0, 2.0]


# -- training records what inference needs --------------------------------------------------------

def test_training_records_normalisation_domain_and_keeps_the_best(tmp_path):
    cases = [make_case(seed=20 + i, n_lesions=2, case_id=f"c{i}") for i in range(4)]
    cfg = TrainConfig(epochs=2, batch_size=2, patch_size=16, patches_per_case=1, val_cases=("c2", "c3"),
                      val_patches_per_case=1, lr_g=1e-3, lr_d=5e-4, device="cpu", seed=1, model=TINY,
                      gain_range=4.0)
    events = []
    res = train_harmonizer(cases, tmp_path / "m.pt", cfg, callback=events.append)
    vals = [e["val"] for e in events if "val" in e]
    assert len(vals) == 2 and {"contrast_error_mean", "contrast_error_max", "composite_contrast_error_mean"} <= set(vals[0])
    state = load_checkpoint(tmp_path / "m.pt")
    assert state["normalisation"]["method"] == "robust"
    assert state["domain"]["cases"] == 2 and state["domain"]["spacing_min"] == [1.2, 1.0, 1.5]
    best = load_checkpoint(res["best_path"]) if res["best_path"] else {"best": res["best"]}
    assert res["best_path"] is None or (res["best_path"].name == "m.best.pt" and "opt_g" not in best)
    # Anchored (the default): the lowest fMAE among validations keeping every paste within 15 %.
    assert best["best"]["metric"] == "fmae"
    ok = [v["fmae"] for v in vals if v["contrast_error_max"] <= WITHIN_15_PERCENT]
    assert best["best"]["score"] == min(ok) if ok else res["best"]["epoch"] == 0
    # Unanchored models are ranked by the contrast error itself.
    res2 = train_harmonizer(cases, tmp_path / "n.pt", cfg.replace(anchor="none", epochs=1))
    assert res2["best"]["metric"] == "contrast_error_mean" and res2["config"].model.anchor_channel is False
    h = load_harmonizer(res["best_path"] or tmp_path / "m.pt", device="cpu")
    assert h.domain_warning(cases[0].image, cases[0].spacing) is None


def test_shifted_copies_do_not_touch_the_original():
    c = make_case(seed=3)
    before = c.image.copy()
    for kind in ("x0.6", "x1.7", "bias", "outlier"):
        s = shift_case(c, kind)
        assert s.image.shape == c.image.shape and not np.array_equal(s.image, c.image)
    np.testing.assert_array_equal(c.image, before)
    assert dataclasses.replace(c).label is c.label
    with pytest.raises(LesionMixError, match="Unknown intensity shift"):
        shift_case(c, "x")
