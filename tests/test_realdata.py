"""Every method, the export and the intensity matching on real scans with no brain mask (the nnU-Net layout).

The scans are read at run time from ``../shared/realdata`` (its README: six
BraTS 2013 cases, z-scored FLAIR with a constant negative background, LPS,
float labels 0-4; and real stroke masks on the Colin27 brain). They are never
copied into the project; where the folder is absent (a user's clone) these
tests are skipped with that reason.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from realdata import ABSENT, BRATS, REALDATA, brats_with_masks

from napari_lesionmix.augment import registry
from napari_lesionmix.io.brain import case_brain
from napari_lesionmix.io.dataset import discover_dataset

pytestmark = pytest.mark.skipif(len(BRATS) < 3, reason=ABSENT)


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    """Three BraTS cases as a new user has them: an nnU-Net raw dataset (links to the real files), no brain mask.

    Returns the dataset, its cases and their true brain masks (for the checks only: the code never sees them).
    """
    root = tmp_path_factory.mktemp("real") / "Dataset900_BraTS"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    masks = []
    for k, case in enumerate(BRATS[:3]):
        (root / "imagesTr" / f"b{k:03d}_0000.nii.gz").symlink_to(case / "Flair_subtrMeanDivStd.nii.gz")
        (root / "labelsTr" / f"b{k:03d}.nii.gz").symlink_to(case / "OTMultiClass.nii.gz")
        masks.append(np.asarray(nib.load(case / "brainmask.nii.gz").dataobj) > 0.5)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR"}, "labels": {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3,
                                                    "enhancing": 4}, "numTraining": 3, "file_ending": ".nii.gz"}))
    ds = discover_dataset(root)
    return ds, [r.load() for r in ds.cases], masks


def _new_lesion(syn, host):
    return (syn.label != 0) & (host.label == 0)


def test_the_estimated_brain_is_the_real_one(brats):
    _, cases, masks = brats
    for case, mask in zip(cases, masks, strict=True):
        est = case_brain(case)
        assert est.source == "estimated" and est.warning is None
        dice = 2 * np.count_nonzero(est.mask & mask) / (np.count_nonzero(est.mask) + np.count_nonzero(mask))
        assert dice >= 0.95, (case.case_id, dice)  # 0.97-0.99 measured on all six cases


def test_brain_linear_is_fitted_on_the_real_brain(brats):
    _, cases, masks = brats
    host, donor = cases[0], cases[1]
    syn = registry.generate("carvemix", host, donor, seed=0, options={"intensity_match": "brain-linear"})
    m = syn.params.intensity[0]
    assert m.source_landmarks != m.host_landmarks
    for case, mask, median in ((host, masks[0], m.host_median[0]), (donor, masks[1], m.source_median[0])):
        values = case.image[0][mask & (case.label == 0)]
        iqr = float(np.subtract(*np.percentile(values, [75, 25])))
        assert abs(median - float(np.median(values))) <= 0.25 * iqr  # z-scores: judged against the spread
    assert m.background[0] == float(np.median(donor.image[0][0]))  # the constant outside the head


@pytest.mark.parametrize("method", ["softcp", "lesionmix"])
def test_pasted_lesions_lie_inside_the_real_brain(brats, method):
    ds, cases, masks = brats
    for seed in range(2):
        h = seed % 3
        kw = dict(training_set=ds, options={"load_dist": "high"}) if method == "lesionmix" else \
            dict(donor=cases[(h + 1) % 3], options={"n_lesions": 1})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a target out of reach is recorded, not a failure here
            syn = registry.generate(method, cases[h], kw.pop("donor", None), seed=seed, **kw)
        new = _new_lesion(syn, cases[h])
        if new.any():
            assert np.count_nonzero(new & ~masks[h]) <= 0.10 * np.count_nonzero(new), (method, seed)
        assert syn.params.brain.source == "estimated"


def test_export_with_default_options_writes_no_copy_of_a_real_case(brats, tmp_path):
    from napari_lesionmix.export import ExportConfig, export_dataset
    from napari_lesionmix.io.nifti import load_case

    ds, cases, _ = brats
    out = tmp_path / "Dataset901_Syn"
    export_dataset(ExportConfig(str(ds.root), str(out), n=3, seed=0, n_folds=0,
                                methods=(("carvemix", 1.0), ("lesionmix", 1.0))))
    real = {hashlib.sha1(c.image.tobytes()).hexdigest() for c in cases}
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for rec in records:
        syn = load_case(out / "imagesTr" / f"{rec['id']}_0000.nii.gz", out / "labelsTr" / f"{rec['id']}.nii.gz")
        assert hashlib.sha1(syn.image.tobytes()).hexdigest() not in real
        assert rec["params"]["brain"]["source"] == "estimated"
        if rec["method"] == "carvemix":  # the export's default matching is fitted, not the identity map
            m = rec["params"]["intensity"][0]
            assert m["mode"] == "brain-linear" and m["source_landmarks"] != m["host_landmarks"]


def test_the_real_brain_masks_are_read_as_given(tmp_path):
    """BraTS's brainmask.nii.gz (float64, foreground 0.99999997) as a dataset's masks and as --brain-mask."""
    from napari_lesionmix.cli import main

    root = brats_with_masks(tmp_path / "brats")
    ds = discover_dataset(root)
    for rec, case in zip(ds.cases, BRATS[:3], strict=True):
        truth = np.asarray(nib.load(case / "brainmask.nii.gz").dataobj) > 0.5
        assert np.array_equal(rec.load_brain_mask(), truth)
    host = ds.cases[0]
    out = tmp_path / "syn"
    assert main(["lesionmix", "--dataset", str(root), "--host", host.case_id, "--mode", "populate",
                 "--target-load", "150", "--out", str(out)]) == 0
    params = json.loads((out / "params.json").read_text())["params"]
    assert params["brain"]["source"] == "mask" and params["insertions"]
    label = np.asarray(nib.load(out / "label.nii.gz").dataobj)
    new = (label != 0) & (np.asarray(nib.load(host.label_path).dataobj) == 0)
    assert new.any() and not (new & ~host.load_brain_mask()).any()  # every pasted voxel inside the given mask
    donor = ds.cases[1]
    assert main(["carvemix", "--host-image", host.image_paths[0], "--host-label", host.label_path,
                 "--donor-image", donor.image_paths[0], "--donor-label", donor.label_path,
                 "--brain-mask", str(BRATS[0] / "brainmask.nii.gz"), "--out", str(tmp_path / "cm")]) == 0
    assert json.loads((tmp_path / "cm" / "params.json").read_text())["params"]["brain"]["source"] == "mask"


def test_softcp_copes_with_a_confluent_stroke_lesion_on_a_real_brain():
    """A 100+ mL real stroke lesion among small ones: the big one is replaced, the others pasted."""
    lesymap = REALDATA / "lesymap"
    if not (lesymap / "ch2bet.nii.gz").exists():
        pytest.skip(f"the real stroke masks are not here ({lesymap} is absent)")
    from napari_lesionmix.io.nifti import Case

    brain_img = nib.load(lesymap / "ch2bet.nii.gz")
    t1 = np.asarray(brain_img.dataobj, np.float32)
    big = np.asarray(nib.load(lesymap / "lesions" / "Subject_001.nii.gz").dataobj) > 0
    label = big.astype(np.uint8)
    rng = np.random.default_rng(0)
    inside = np.argwhere((t1 > 0) & ~big)
    for c in inside[rng.choice(len(inside), 12, replace=False)]:  # a dozen 27-voxel lesions elsewhere
        label[tuple(slice(v - 1, v + 2) for v in c)] = 1
    donor = Case(image=(t1 * np.where(label > 0, 0.6, 1.0))[None].astype(np.float32), label=label,
                 affine=brain_img.affine, header=brain_img.header, case_id="stroke-donor")
    host_label = np.zeros_like(label)
    host_label[tuple(slice(v - 1, v + 2) for v in inside[0])] = 1
    host = Case(image=t1[None].copy(), label=host_label, affine=brain_img.affine, header=brain_img.header,
                case_id="colin-host")
    syn = registry.generate("softcp", host, donor, seed=1, options={"n_lesions": 13, "placement": "random"})
    p = syn.params
    assert len(p.lesions) >= 1 and (len(p.lesions) + len(p.skipped)) >= 13
    assert all("No position keeps" in s.reason for s in p.skipped)
