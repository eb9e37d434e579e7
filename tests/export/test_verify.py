"""``verify_dataset`` / ``lesionmix verify`` catch what nnU-Net's integrity check catches."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export import ExportConfig, export_dataset, verify_dataset


@pytest.fixture
def exported(tmp_path):
    src = tmp_path / "src"
    for k in range(3):
        write_case(make_case(seed=40 + k, n_lesions=2, case_id=f"v{k}", shape=(16, 18, 14)), src)
    out = tmp_path / "out"
    export_dataset(ExportConfig(os.fspath(src), os.fspath(out), n=3, seed=1, include_real=True))
    assert verify_dataset(out) == []
    return out


def _rewrite(path, fn):
    img = nib.load(path)
    data, affine = fn(np.asanyarray(img.dataobj).copy(), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine, img.header), path)


def test_missing_channel_and_orphan_image(exported):
    (exported / "imagesTr" / "lmx_000001_0000.nii.gz").rename(exported / "imagesTr" / "zz_0000.nii.gz")
    problems = verify_dataset(exported)
    assert any("lmx_000001" in p and "lacks channel" in p for p in problems)
    assert any("'zz' have no label" in p for p in problems)


def test_undeclared_label_value_nan_and_affine(exported):
    def add_label_3(d, a):
        d[0, 0, 0] = 3
        return d, a

    def nan(d, a):
        d = d.astype(np.float32)
        d[1, 1, 1] = np.nan
        return d, a

    def shift(d, a):
        a[0, 3] += 0.5
        return d, a

    _rewrite(exported / "labelsTr" / "lmx_000000.nii.gz", add_label_3)
    _rewrite(exported / "imagesTr" / "lmx_000001_0000.nii.gz", nan)
    _rewrite(exported / "imagesTr" / "lmx_000002_0000.nii.gz", shift)
    problems = verify_dataset(exported, check_checksums=False)
    assert any("value(s) [3] not declared" in p for p in problems)
    assert any("lmx_000001_0000" in p and "NaN" in p for p in problems)
    assert any("lmx_000002_0000" in p and "affines" in p for p in problems)
    assert len(problems) == 3
    # The checksums of manifest.jsonl catch all three edits as well.
    assert sum("checksum" in p for p in verify_dataset(exported)) == 3


def test_shape_mismatch_num_training_and_missing_keys(exported):
    img = nib.load(exported / "imagesTr" / "v0_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), img.affine),
             exported / "imagesTr" / "v0_0000.nii.gz")
    meta = json.loads((exported / "dataset.json").read_text())
    meta["numTraining"] = 99
    del meta["file_ending"]
    (exported / "dataset.json").write_text(json.dumps(meta))
    problems = verify_dataset(exported, check_checksums=False)
    assert any("v0_0000" in p and "shape" in p for p in problems)
    assert any("numTraining = 99" in p for p in problems)
    assert any("'file_ending'" in p for p in problems)
    with pytest.raises(LesionMixError, match="Integrity check failed"):
        verify_dataset(exported, raise_on_error=True)


def test_cli_verify_exit_codes(exported, capsys):
    assert main(["verify", os.fspath(exported)]) == 0
    assert "consistent" in capsys.readouterr().out
    (exported / "labelsTr" / "lmx_000002.nii.gz").unlink()
    assert main(["verify", os.fspath(exported)]) == 1
    err = capsys.readouterr().err
    assert "numTraining" in err and "problem(s)" in err
    (exported / "dataset.json").unlink()
    assert main(["verify", os.fspath(exported)]) == 1
    assert "dataset.json" in capsys.readouterr().err


def test_header_only_check_catches_shape_and_affine(exported):
    """The exporter's final check (deep=False) reads headers only, but still sees what is on disk."""
    def shift(d, a):
        a[1, 3] -= 2.0
        return d, a

    _rewrite(exported / "imagesTr" / "lmx_000002_0000.nii.gz", shift)
    img = nib.load(exported / "imagesTr" / "v1_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.int16), img.affine), exported / "imagesTr" / "v1_0000.nii.gz")
    problems = verify_dataset(exported, deep=False, check_checksums=False)
    assert any("lmx_000002_0000" in p and "affines" in p for p in problems)
    assert any("v1_0000" in p and "shape (5, 5, 5)" in p for p in problems)
    assert len(problems) == 2


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii", "big.nii.gz", "two.nii.gz"])
def test_read_geometry_matches_nibabel(tmp_path, name):
    from factories import make_affine

    from napari_lesionmix.io.nifti import read_geometry

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    aff = make_affine(oblique=True)
    if name.startswith("big"):
        img = nib.Nifti1Image(data.astype(">i2"), aff, nib.Nifti1Header().as_byteswapped(">"))
    elif name.startswith("two"):
        img = nib.Nifti2Image(data, aff)
    else:
        img = nib.Nifti1Image(data, aff)
    nib.save(img, tmp_path / name)
    shape, affine = read_geometry(tmp_path / name)
    ref = nib.load(tmp_path / name)
    assert shape == ref.shape
    np.testing.assert_array_equal(affine, ref.affine)


def test_verify_runs_nnunets_own_check_when_installed(exported, capsys):
    pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed")
    from napari_lesionmix.export.verify import nnunet_check

    assert nnunet_check(exported) == (True, "")
    assert main(["verify", os.fspath(exported)]) == 0
    assert "nnU-Net's own verify_dataset_integrity passed" in capsys.readouterr().out
    # A label value nnU-Net does not know: its own check refuses it, in one line.
    meta = json.loads((exported / "dataset.json").read_text())
    meta["labels"] = {"background": 0}
    (exported / "dataset.json").write_text(json.dumps(meta))
    ran, problem = nnunet_check(exported)
    assert ran and problem.startswith("nnU-Net's verify_dataset_integrity refuses the dataset") and "\n" not in problem
