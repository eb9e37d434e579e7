"""One brain region (io/brain.py) that holds on real-world quirks, used by every method and face."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from quirks import QUIRKS

from napari_lesionmix.augment import intensity, registry
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import background_level, brain_region, case_brain, estimate_brain
from napari_lesionmix.io.nifti import load_case, load_label
from napari_lesionmix.sample_data import sample_data_dir


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def subjects():
    """Two MS-like sample subjects and their true brain masks."""
    out, root = {}, sample_data_dir()
    for sid in ("sub-01", "sub-07"):
        case = load_case(root / f"{sid}.nii.gz", root / f"{sid}_seg.nii.gz", case_id=sid)
        out[sid] = (case, np.asarray(load_label(root / f"{sid}_brainmask.nii.gz")[0]) != 0)
    return out


def _quirked(subjects, sid, quirk):
    case, brain = subjects[sid]
    out = QUIRKS[quirk](case, brain)
    if quirk == "anisotropic":
        brain = brain[:, :, ::4]
    return out, brain


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_the_estimate_is_the_brain_whatever_the_quirk(subjects, quirk):
    case, brain = _quirked(subjects, "sub-01", quirk)
    region = case_brain(case)
    assert region.source == "estimated" and region.warning is None
    assert _dice(region.mask, brain) >= 0.9, _dice(region.mask, brain)


@pytest.mark.parametrize("quirk", ["ringing", "zscored", "offset_background", "bright_outliers"])
def test_brain_linear_is_fitted_on_the_brain_not_the_background(subjects, quirk):
    """The bug of real FLAIR: ringing below 0 made the exact-zero background 'normal brain' (identity map)."""
    host, host_brain = _quirked(subjects, "sub-01", quirk)
    donor, donor_brain = _quirked(subjects, "sub-07", quirk)
    gained = dataclasses.replace(donor, image=(donor.image - background_level(donor.image[0])) * 1.6
                                 + background_level(donor.image[0]))
    syn = registry.generate("carvemix", host, gained, seed=0, options={"intensity_match": "brain-linear"})
    m = syn.params.intensity[0]
    assert m.source_landmarks != m.host_landmarks  # not the identity map
    for case, brain, median in ((host, host_brain, m.host_median[0]), (gained, donor_brain, m.source_median[0])):
        values = case.image[0][brain & (case.label == 0)]
        true = float(np.median(values))
        iqr = float(np.subtract(*np.percentile(values, [75, 25])))
        assert abs(median - true) <= 0.25 * iqr, (median, true, iqr)  # within 25 % of the brain's own spread
    assert syn.params.brain.source == "estimated"


@pytest.mark.parametrize("quirk", ["ringing", "zscored", "lps"])
def test_lesionmix_and_softcp_paste_inside_the_brain_without_a_brain_mask(subjects, sample_dataset, quirk):
    host, brain = _quirked(subjects, "sub-01", quirk)
    methods = [("softcp", dict(donor=_quirked(subjects, "sub-07", quirk)[0], options={"n_lesions": 3}))]
    if quirk != "lps":  # the sample dataset's likelihood map lies on the RAS grid
        methods.append(("lesionmix", dict(training_set=sample_dataset, options={"load_dist": "high"})))
    for method, kw in methods:
        for seed in range(2):
            syn = registry.generate(method, host, kw.get("donor"), seed=seed, options=kw["options"],
                                    training_set=kw.get("training_set"))
            new = (syn.label != 0) & (host.label == 0)
            assert new.any()
            assert np.count_nonzero(new & ~brain) <= 0.10 * np.count_nonzero(new), (method, seed)
            assert syn.params.brain.source == "estimated"
            # the estimate is recomputed on replay: the same bytes
            again = registry.replay(syn.params, host, kw.get("donor"), training_set=kw.get("training_set"))
            np.testing.assert_array_equal(again.image, syn.image)


def test_a_brain_mask_is_the_region_when_given_and_a_replay_checks_it(subjects, sample_dataset):
    case, brain = subjects["sub-01"]
    region = brain_region(case.image, brain.astype(np.float64) * 0.99999997)  # BraTS stores masks like this
    assert region.source == "mask" and np.array_equal(region.mask, brain)
    syn = registry.generate("lesionmix", case, seed=0, brain_mask=brain, training_set=sample_dataset,
                            options={"load_dist": "high"})
    assert syn.params.brain.source == "mask" and syn.params.brain.voxels == int(brain.sum())
    smaller = brain.copy()
    smaller[: brain.shape[0] // 2] = False
    with pytest.raises(LesionMixError, match="drawn in a brain mask of .* voxels but host 'sub-01' now has"):
        registry.replay(syn.params, case, brain_mask=smaller, training_set=sample_dataset)


def test_unreliable_estimates_say_so_in_one_sentence():
    rng = np.random.default_rng(0)
    noise = rng.normal(100, 30, (1, 30, 30, 30)).astype(np.float32)  # no brain at all: noise everywhere
    noise[:, 0] = noise[:, -1] = 0
    region = brain_region(noise)
    assert region.warning is None or region.warning.count(".") == 1
    head = np.zeros((1, 80, 80, 80), np.float32)
    zz = np.indices((80, 80, 80)) - 40
    head[0][(zz**2).sum(0) <= 38**2] = 100.0  # a 230 mL ball at 1 mm, a 6.2 L one at 3 mm
    assert brain_region(head, spacing=(1.0, 1.0, 1.0)).warning is None
    assert "size of a head" in brain_region(head, spacing=(3.0, 3.0, 3.0)).warning
    with pytest.raises(LesionMixError, match="No brain could be found"):
        brain_region(np.zeros((1, 10, 10, 10), np.float32))


def test_a_volume_without_background_is_all_brain():
    rng = np.random.default_rng(1)
    image = rng.normal(100, 5, (1, 20, 20, 20)).astype(np.float32)
    assert estimate_brain(image).all()
    assert intensity.normal_brain(image[0], None, None).all()


def _full_volume_reference(image, spacing):
    """The estimate as it was computed before the bounding-box crops: every step on the whole volume."""
    import edt
    from scipy import ndimage as ndi

    from napari_lesionmix.io.brain import OPENING_MM, foreground

    def open_(mask):
        inner = edt.edt(mask.astype(np.uint8), anisotropy=spacing, black_border=False) > OPENING_MM
        if not inner.any():
            return inner
        return edt.edt((~inner).astype(np.uint8), anisotropy=spacing, black_border=False) <= OPENING_MM

    fg = np.zeros(image.shape[1:], bool)
    for ch in image:
        fg |= foreground(ch)
    opened = open_(fg)
    lab, n = ndi.label(opened if opened.any() else fg, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros(fg.shape, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    largest = lab == int(np.argmax(sizes))
    holes, m = ndi.label(~largest)
    faces = np.concatenate([f.ravel() for f in (holes[0], holes[-1], holes[:, 0], holes[:, -1],
                                                 holes[:, :, 0], holes[:, :, -1])])
    outside = np.zeros(m + 1, bool)
    outside[np.unique(faces)] = True
    outside[0] = False
    return ~outside[holes]


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_the_cropped_estimate_is_the_full_volume_one(subjects, quirk):
    """Opening, largest component and hole filling on bounding boxes give the full-volume mask, voxel for voxel."""
    case, _ = _quirked(subjects, "sub-07", quirk)
    spacing = tuple(float(s) for s in case.spacing)
    assert np.array_equal(estimate_brain(case.image, spacing), _full_volume_reference(case.image, spacing))


def test_the_cropped_steps_are_exact_at_the_volume_edge():
    """Masks touching the border, anisotropic spacings, several components and cavities: crops change nothing."""
    from scipy import ndimage as ndi

    from napari_lesionmix.io import brain

    rng = np.random.default_rng(0)
    for k in range(12):
        mask = ndi.binary_dilation(rng.random((24, 27, 22)) > 0.985, iterations=int(rng.integers(1, 4)))
        if k % 3 == 0:
            mask[0] = True  # a brain cut by the field of view
        spacing = tuple(float(s) for s in rng.choice([0.7, 1.0, 1.3, 2.0, 3.1], 3))
        image = np.where(mask, 100.0, 0.0)[None].astype(np.float32)
        assert np.array_equal(estimate_brain(image, spacing), _full_volume_reference(image, spacing)), k
        # The complement has cavities (the blobs) and touches every face.
        assert np.array_equal(brain.fill_holes(~mask), ndi.binary_fill_holes(~mask)), k
        assert np.array_equal(brain.fill_holes(mask), ndi.binary_fill_holes(mask)), k


@pytest.mark.parametrize("voxel", [0.5, 1.0, 2.0, 4.0, 1.25])
def test_the_opening_by_uint8_passes_is_the_distance_threshold(voxel):
    """On 0.5/1/2 mm isotropic voxels (balls of 4/2/1 voxels) the passes replace edt with the same voxels;
    4 mm (half a voxel) and 1.25 mm (not a power of two) keep the transforms, and agree by construction."""
    import edt
    from scipy import ndimage as ndi

    from napari_lesionmix.io import brain

    spacing = (voxel,) * 3
    rng = np.random.default_rng(int(voxel * 8))
    for k in range(10):
        mask = ndi.binary_dilation(rng.random((26, 23, 29)) > 0.98, iterations=int(rng.integers(1, 5)))
        if k % 2 == 0:
            mask[:, -1] = True  # cut by the field of view: the edge is not background
        if k == 9:
            mask[:] = True  # no background anywhere
        inner = edt.edt(mask.astype(np.uint8), anisotropy=spacing, black_border=False) > brain.OPENING_MM
        ref = edt.edt((~inner).astype(np.uint8), anisotropy=spacing, black_border=False) <= brain.OPENING_MM \
            if inner.any() else inner
        assert np.array_equal(brain._open(mask, brain.OPENING_MM, spacing), ref), (voxel, k)


def test_a_brain_mask_saved_as_floats_a_rounding_from_one_is_read_as_binary(tmp_path):
    import nibabel as nib

    from napari_lesionmix.io.brain import load_brain_mask

    truth = np.zeros((8, 9, 7), bool)
    truth[2:6, 3:7, 1:5] = True

    def saved(values, name, dtype=np.float64):
        path = tmp_path / name
        nib.save(nib.Nifti1Image(np.asarray(values, dtype), np.eye(4)), path)
        return path

    for name, values in (("brats.nii.gz", truth * 0.99999997), ("u8.nii.gz", truth * 255),
                         ("near.nii.gz", truth * (1 + 5e-5))):
        mask, img = load_brain_mask(saved(values, name))
        assert mask.dtype == bool and np.array_equal(mask, truth) and img.shape == truth.shape
    mask, _ = load_brain_mask(saved(truth[..., None], "4d1.nii.gz", np.uint8))  # (x, y, z, 1)
    assert np.array_equal(mask, truth)
    probability = truth * 0.7
    with pytest.raises(LesionMixError, match=r"fractional values \(e\.g\. 0\.7\).*threshold"):
        load_brain_mask(saved(probability, "prob.nii.gz"))
    bad = truth.astype(float)
    bad[0, 0, 0] = np.nan
    with pytest.raises(LesionMixError, match="NaN"):
        load_brain_mask(saved(bad, "nan.nii.gz"))
    with pytest.raises(LesionMixError, match="negative"):
        load_brain_mask(saved(truth * -1.0, "neg.nii.gz"))
    with pytest.raises(LesionMixError, match="4D"):
        load_brain_mask(saved(np.stack([truth, truth], -1), "4d.nii.gz", np.uint8))
