"""Pair methods by case id: ``lesionmix carvemix --dataset DIR --host A --donor B`` reads the dataset's files and masks."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment.intensity import brain_stats
from napari_lesionmix.cli import main


@pytest.fixture
def masked(tmp_path):
    """Three cases with ``*_brainmask`` files; outside its mask each image is 80 brighter (so the mask matters)."""
    root = tmp_path / "src"
    masks = {}
    for k in range(3):
        case = make_case(seed=150 + k, n_lesions=3, case_id=f"m{k}")
        mask = np.zeros(case.shape, bool)
        mask[3:-3, 3:-3, 3:-3] = True
        mask |= case.label != 0
        case.image[:, ~mask] += 80.0
        write_case(case, root)
        nib.save(nib.Nifti1Image(mask * 0.99999997, case.affine), root / f"m{k}_brainmask.nii.gz")
        masks[case.case_id] = (case, mask)
    return root, masks


def test_a_pair_by_case_id_uses_both_cases_brain_masks(masked, tmp_path):
    root, masks = masked
    out = tmp_path / "by-id"
    assert main(["softcp", "--dataset", str(root), "--host", "m0", "--donor", "m1", "--seed", "2",
                 "--intensity-match", "brain-linear", "--out", str(out)]) == 0
    record = json.loads((out / "params.json").read_text())
    params = record["params"]
    assert params["brain"]["source"] == "mask" and params["brain"]["voxels"] == int(masks["m0"][1].sum())
    assert record["inputs"]["donor_label"].endswith("m1_seg.nii.gz") and record["inputs"]["dataset"] == str(root)
    donor, donor_mask = masks["m1"]
    fitted = next(m for m in params["intensity"] if m["case_id"] == "m1")
    with_mask = brain_stats(donor.image, donor.label, donor_mask).median
    estimated = brain_stats(donor.image, donor.label, None).median
    assert tuple(fitted["source_median"]) == pytest.approx(with_mask) and with_mask != pytest.approx(estimated)


def test_an_export_record_replays_by_case_id_byte_for_byte(masked, tmp_path):
    from napari_lesionmix.export import ExportConfig, export_dataset

    root, _ = masked
    out = tmp_path / "Dataset503_M"
    export_dataset(ExportConfig(str(root), str(out), n=4, methods=(("carvemix", 1.0), ("softcp", 1.0)), seed=5,
                                n_folds=0))
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert {json.loads(x)["method"] for x in lines} == {"carvemix", "softcp"}
    for line in lines:
        rec = json.loads(line)
        rec_file = tmp_path / f"{rec['id']}.json"
        rec_file.write_text(line)
        replay = tmp_path / f"replay-{rec['id']}"
        assert main([rec["method"], "--dataset", str(root), "--host", rec["host"], "--donor", rec["sources"][1],
                     "--params", str(rec_file), "--out", str(replay)]) == 0
        for exported, replayed in ((out / "imagesTr" / f"{rec['id']}_0000.nii.gz", replay / "image_0000.nii.gz"),
                                   (out / "labelsTr" / f"{rec['id']}.nii.gz", replay / "label.nii.gz")):
            assert np.array_equal(np.asanyarray(nib.load(exported).dataobj),
                                  np.asanyarray(nib.load(replayed).dataobj)), (rec["id"], replayed.name)


@pytest.mark.parametrize("args, message", [
    (["--host", "m0", "--donor", "m1"], "--host names a case of --dataset; give --dataset DIR too"),
    (["--dataset", "{root}", "--host", "m0", "--donor", "zz"], "has no case 'zz'; its cases are m0, m1, m2."),
    (["--dataset", "{root}", "--host", "m0", "--host-label", "x.nii.gz", "--donor", "m1"],
     "--host-label goes with --host-image, not --host."),
    (["--dataset", "{root}", "--host", "m0", "--donor-image", "{root}/m1.nii.gz"],
     "--donor-image needs --donor-label"),
])
def test_case_id_mistakes_are_one_line_errors(masked, tmp_path, capsys, args, message):
    root, _ = masked
    args = [a.format(root=root) for a in args]
    assert main(["carvemix", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_donor_given_as_files_beside_a_dataset_host(masked, tmp_path):
    """Each side is a case id or files; a side given as files has no brain mask but ``--brain-mask``'s."""
    root, _ = masked
    out = tmp_path / "mixed"
    assert main(["carvemix", "--dataset", str(root), "--host", "m2", "--donor-image", str(root / "m0.nii.gz"),
                 "--donor-label", str(root / "m0_seg.nii.gz"), "--seed", "1", "--out", str(out)]) == 0
    record = json.loads((out / "params.json").read_text())
    assert record["params"]["host_id"] == "m2" and record["inputs"]["donor_image"] == [str(root / "m0.nii.gz")]
