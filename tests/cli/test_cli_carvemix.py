"""``lesionmix carvemix``: outputs, replay, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_lesionmix.cli import main


def _args(pair, out, *extra):
    h, d = pair["host"], pair["donor"]
    return ["carvemix", "--host-image", str(h["images"][0]), "--host-label", str(h["label"]),
            "--donor-image", str(d["images"][0]), "--donor-label", str(d["label"]), "--out", str(out), *extra]


def test_writes_the_documented_layout(pair_on_disk, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(pair_on_disk, out, "--seed", "4")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image_0000.nii.gz", "label.nii.gz", "mask.nii.gz", "params.json"]
    record = json.loads((out / "params.json").read_text())
    assert record["params"]["method"] == "carvemix" and record["params"]["seed"] == 4
    assert record["inputs"]["donor_label"].endswith("donor_seg.nii.gz")
    host = nib.load(pair_on_disk["host"]["images"][0])
    out_img = nib.load(out / "image_0000.nii.gz")
    np.testing.assert_allclose(out_img.affine, host.affine)
    assert np.asarray(nib.load(out / "label.nii.gz").dataobj).dtype.kind == "u"
    assert "lambda=" in capsys.readouterr().out
    # Replaying params.json gives the same bytes of voxels.
    out2 = tmp_path / "replay"
    assert main(_args(pair_on_disk, out2, "--params", str(out / "params.json"))) == 0
    for name in ("image_0000.nii.gz", "label.nii.gz", "mask.nii.gz"):
        a = np.asarray(nib.load(out / name).dataobj)
        b = np.asarray(nib.load(out2 / name).dataobj)
        assert a.tobytes() == b.tobytes()


def test_fixed_lambda_and_per_lesion(pair_on_disk, tmp_path):
    assert main(_args(pair_on_disk, tmp_path / "a", "--lam", "0")) == 0
    mask = np.asarray(nib.load(tmp_path / "a" / "mask.nii.gz").dataobj)
    donor = np.asarray(nib.load(pair_on_disk["donor"]["label"]).dataobj)
    np.testing.assert_array_equal(mask, donor != 0)
    assert main(_args(pair_on_disk, tmp_path / "b", "--per-lesion", "--seed", "1")) == 0
    record = json.loads((tmp_path / "b" / "params.json").read_text())
    assert record["params"]["per_lesion"] and len(record["params"]["lesion_lams"]) >= 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, t: p["donor"].update(label=t / "missing.nii.gz"), "Label file '.*missing.nii.gz' does not exist."),
        (lambda p, t: nib.save(nib.Nifti1Image(np.zeros((24, 28, 20), np.uint8), np.eye(4) * [1.2, 1, 1.5, 1]),
                               p["donor"]["label"]),
         "affines that differ by up to"),
        (lambda p, t: nib.save(nib.Nifti1Image(np.zeros((24, 28, 20), np.uint8), nib.load(p["donor"]["label"]).affine),
                               p["donor"]["label"]),
         "Donor label '.*' has no lesion voxels"),
    ],
    ids=["missing", "affine", "empty"],
)
def test_bad_input_is_one_sentence(pair_on_disk, tmp_path, capsys, mutate, message):
    mutate(pair_on_disk, tmp_path)
    assert main(_args(pair_on_disk, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lesionmix carvemix: error: ")
    assert len(err.splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_console_script_has_no_traceback(pair_on_disk, tmp_path):
    args = _args(pair_on_disk, tmp_path / "o")
    args[args.index("--host-label") + 1] = str(tmp_path / "nope.nii.gz")
    proc = subprocess.run([sys.executable, "-m", "napari_lesionmix.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "nope.nii.gz' does not exist." in proc.stderr
