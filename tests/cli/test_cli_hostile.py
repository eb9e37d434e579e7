"""A hostile user at the method commands: nothing lost, whole or nothing, one sentence, no silent wrong answer."""

from __future__ import annotations

import errno
import json
import os
import re

import pytest

from napari_lesionmix.cli import main


def _pair(pair, *extra):
    return ["carvemix", "--host-image", str(pair["host"]["images"][0]), "--host-label", str(pair["host"]["label"]),
            "--donor-image", str(pair["donor"]["images"][0]), "--donor-label", str(pair["donor"]["label"]), *extra]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    return err.splitlines()[-1] if err else ""


def test_an_existing_output_is_never_replaced_without_overwrite(pair_on_disk, tmp_path, capsys):
    user = tmp_path / "u"
    user.mkdir()
    (user / "label.nii.gz").write_text("mine")
    assert main(_pair(pair_on_disk, "--seed", "3", "--out", str(user))) == 2
    assert "already exists; pass --overwrite" in _err(capsys)
    assert (user / "label.nii.gz").read_text() == "mine"
    out = tmp_path / "cm"
    assert main(_pair(pair_on_disk, "--seed", "3", "--out", str(out))) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(_pair(pair_on_disk, "--seed", "4", "--out", str(out))) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    capsys.readouterr()
    assert main(_pair(pair_on_disk, "--seed", "4", "--out", str(out), "--overwrite")) == 0
    assert json.loads((out / "params.json").read_text())["params"]["seed"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_overwrite_never_deletes_files_the_command_did_not_make(pair_on_disk, tmp_path, capsys):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(_pair(pair_on_disk, "--seed", "1", "--out", str(out), "--overwrite")) == 2
    assert "holds files this command did not make (notes.txt)" in _err(capsys)
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_output_may_not_be_an_input(pair_on_disk, tmp_path, capsys):
    out = tmp_path / "cm"
    assert main(_pair(pair_on_disk, "--seed", "1", "--out", str(out))) == 0
    capsys.readouterr()
    assert main(_pair(pair_on_disk, "--params", str(out / "params.json"), "--out", str(out), "--overwrite")) == 2
    assert re.search(r"would replace the input '.*params.json'", _err(capsys))
    assert json.loads((out / "params.json").read_text())["params"]["seed"] == 1


def test_a_sample_folder_is_written_whole_or_not_at_all(pair_on_disk, tmp_path, capsys, monkeypatch):
    from napari_lesionmix.io import synthetic

    out = tmp_path / "cm"
    assert main(_pair(pair_on_disk, "--seed", "3", "--out", str(out))) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = synthetic.save_label

    def full_disk(data, path, *args, **kwargs):
        if str(path).endswith("mask.nii.gz"):  # image and label are written by then
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(data, path, *args, **kwargs)

    monkeypatch.setattr(synthetic, "save_label", full_disk)
    capsys.readouterr()
    assert main(_pair(pair_on_disk, "--seed", "4", "--out", str(out), "--overwrite")) == 2
    assert "the disk is full" in _err(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the seed-3 sample, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm", "in"]


BAD = [
    (["--seed", "-1"], r"argument --seed: must be >= 0, got -1"),
    (["--index", "x"], r"argument --index: expected a whole number, got 'x'"),
    (["--lam", "nan"], r"Option carvemix.lam must be a finite number, got nan\."),
    (["--lam", "inf"], r"Option carvemix.lam must be a finite number, got inf\."),
    (["--connectivity", "7"], r"argument --connectivity: invalid choice: 7"),
    (["--params", "{tmp}"], r"Params file '.*' is a folder, not a params.json file\."),
    (["--params", "{tmp}/bad.json"], r"Params file '.*bad.json': Params are not valid JSON"),
    (["--params", "{tmp}/str.json"], r"Params file '.*str.json': Invalid carvemix parameter lam='2.5' "
                                     r"\(expected a number\)\."),
    (["--params", "{tmp}/edited.json"], r"were drawn for other cases than the given host 'host' "
                                        r"\(recorded: 'sub-99'\)"),
    (["--seed", "1", "--params", "{tmp}/str.json"], r"cannot be combined with --seed"),
    (["--out", "/proc/no/such/place"], r"Could not write '/proc/no/such/place'"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_sentence_and_writes_nothing(pair_on_disk, tmp_path, capsys, extra, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "str.json").write_text(json.dumps({"params": {"method": "carvemix", "host_id": "host",
                                                              "donor_id": "donor", "lam": "2.5"}}))
    (tmp_path / "edited.json").write_text(json.dumps({"params": {"method": "carvemix", "host_id": "sub-99",
                                                                 "donor_id": "donor", "lam": 1.0}}))
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    assert _code(_pair(pair_on_disk, *args, *out)) == 2
    assert re.search(message, _err(capsys))
    assert not (tmp_path / "out").exists()


def _code(argv) -> int:
    """The exit status, also for argparse's own errors (it exits)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_host_equal_to_donor_is_refused(pair_on_disk, tmp_path, capsys):
    h = pair_on_disk["host"]
    args = ["carvemix", "--host-image", str(h["images"][0]), "--host-label", str(h["label"]),
            "--donor-image", str(h["images"][0]), "--donor-label", str(h["label"]), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "Host and donor are the same case 'host'; CarveMix mixes two different scans." in _err(capsys)


def test_a_sample_that_pastes_nothing_says_so(pair_on_disk, tmp_path, capsys):
    assert main(_pair(pair_on_disk, "--lam=-1e9", "--out", str(tmp_path / "o"))) == 0
    assert ("warning: CarveMix sample is host 'host' unchanged: its mixing mask is empty; it is a copy of a real "
            "case, not a synthetic one.") in _err(capsys)


# ----------------------------------------------------------------------------- export, likelihood, gallery


@pytest.fixture
def three_cases(tmp_path):
    from factories import make_case, write_case

    root = tmp_path / "src"
    for k in range(3):
        write_case(make_case(seed=50 + k, n_lesions=2, case_id=f"c{k}"), root)
    return root


def _export(src, out, *extra):
    return ["export", "--dataset", str(src), "--out", str(out), "--n", "2", "--no-progress", "--folds", "0", *extra]


def test_export_refuses_before_creating_anything(three_cases, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    out = tmp_path / "Dataset501_X"
    assert main(_export(three_cases, out, "--option", "carvemix.connectivity=7")) == 2
    assert "carvemix.connectivity must be one of 6, 18, 26" in _err(capsys)
    assert main(_export(three_cases, out, "--option", "softcp.n_lesions=2")) == 2
    assert "not in the method list" in _err(capsys)
    # Two label files for one case: which is the lesion label?
    (three_cases / "c1_mask.nii.gz").write_bytes((three_cases / "c1_seg.nii.gz").read_bytes())
    assert main(_export(three_cases, out)) == 2
    assert "has two label files, 'c1_mask.nii.gz' and 'c1_seg.nii.gz'" in _err(capsys)
    (three_cases / "c1_mask.nii.gz").unlink()
    # A case on another grid, then a broken link.
    img = nib.load(three_cases / "c2.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), img.affine), three_cases / "c2.nii.gz")
    assert main(_export(three_cases, out)) == 2
    assert "are not on one grid" in _err(capsys)
    (three_cases / "c2.nii.gz").unlink()
    (three_cases / "c2.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    assert main(_export(three_cases, out)) == 2
    assert "does not exist (a broken link?)" in _err(capsys)
    (three_cases / "c2.nii.gz").unlink()
    image = nib.load(three_cases / "c1.nii.gz")
    data = np.asarray(image.dataobj, np.float32)
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), three_cases / "c2.nii.gz")
    assert main(_export(three_cases, out)) == 2
    assert re.search(r"Source image '.*c2.nii.gz' of case 'c2' holds NaN or infinite voxels", _err(capsys))
    assert not out.exists()


def test_export_needs_two_cases_to_mix_and_refuses_a_resume_over_edited_sources(three_cases, tmp_path, capsys):
    out = tmp_path / "Dataset502_Y"
    assert main(_export(three_cases, out, "--holdout-fraction", "0.6")) == 2
    assert "has only one training case" in _err(capsys)
    assert not out.exists()
    assert main(_export(three_cases, out)) == 0
    src = three_cases / "c0.nii.gz"
    src.write_bytes(src.read_bytes())  # the same bytes, written again: the scan may have changed
    os.utime(src, ns=(1, 1))
    assert main(_export(three_cases, out, "--n", "3")) == 2
    assert "differs in: sources" in _err(capsys)
    assert main(_export(three_cases, out, "--n", "3", "--overwrite")) == 0


def test_likelihood_and_gallery_outputs(three_cases, tmp_path, capsys):
    out = tmp_path / "map.nii.gz"
    out.write_text("mine")
    args = ["likelihood", "--dataset", str(three_cases), "--out", str(out)]
    assert main(args) == 2 and "already exists; pass --overwrite" in _err(capsys)
    assert out.read_text() == "mine"
    assert main([*args, "--overwrite", "--sigma-mm", "1e9"]) == 2
    assert "sigma 1e+09 mm exceeds the volume's extent" in _err(capsys)
    assert main([*args, "--overwrite"]) == 0
    inside = ["likelihood", "--dataset", str(three_cases), "--out", str(three_cases / "c0_seg.nii.gz"), "--overwrite"]
    assert main(inside) == 2 and "would replace the input" in _err(capsys)
    ds = tmp_path / "Dataset503_Z"
    assert main(_export(three_cases, ds)) == 0
    capsys.readouterr()
    assert main(["gallery", str(ds), "--out", str(tmp_path / "qa.jpg")]) == 2
    assert "The gallery is a PNG image; name the output" in _err(capsys)
    assert main(["gallery", str(ds), "--out", str(tmp_path / "qa.png")]) == 0
    assert main(["gallery", str(ds), "--out", str(tmp_path / "qa.png")]) == 2
    assert "already exists" in _err(capsys)


def test_a_header_larger_than_memory_is_one_sentence(pair_on_disk, tmp_path, capsys):
    import gzip
    import io

    import nibabel as nib
    import numpy as np

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((10000, 10000, 10000))
    hdr.set_data_dtype(np.float32)
    buf = io.BytesIO()
    hdr.write_to(buf)
    (tmp_path / "huge_seg.nii.gz").write_bytes(gzip.compress(buf.getvalue() + b"\0" * 1004))
    args = _pair(pair_on_disk, "--out", str(tmp_path / "o"))
    args[args.index("--host-label") + 1] = str(tmp_path / "huge_seg.nii.gz")
    assert main(args) == 2
    assert re.search(r"Label file '.*huge_seg.nii.gz' declares a 10000x10000x10000 volume, more than this "
                     r"machine's memory holds", _err(capsys))
