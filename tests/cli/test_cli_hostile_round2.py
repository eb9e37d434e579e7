"""The hostile-user trial, second round (issue 26): nothing lost, checks before files, divergence stops, no traceback."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re

import numpy as np
import pytest

from napari_lesionmix.cli import build_parser, main


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    return err.splitlines()[-1] if err else ""


def _code(argv) -> int:
    """The exit status, also for argparse's own exits (--help, bad flags)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _tree(root) -> dict[str, str]:
    """sha256 of every file under ``root`` (by relative path): what a refused run must leave as it was."""
    return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(root) for f in files}


# ----------------------------------------------------------------------------- --help of every command


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_prints_its_help(command, capsys):
    # From the parser's own list: a command added later is covered without touching this test.
    assert _code([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: lesionmix {command}" in out


def test_the_command_list_holds_every_method():
    from napari_lesionmix.augment.registry import method_names

    assert set(method_names()) <= set(_commands()) and "export" in _commands()


# ----------------------------------------------------------------------------- data loss


@pytest.fixture
def three_cases(tmp_path):
    from factories import make_case, write_case

    root = tmp_path / "src"
    for k in range(3):
        write_case(make_case(seed=50 + k, n_lesions=2, case_id=f"c{k}"), root)
    return root


def _export(src, out, *extra):
    return ["export", "--dataset", str(src), "--out", str(out), "--n", "2", "--no-progress", "--folds", "0", *extra]


OUT_VS_INPUT = [
    ("{src}", r"Output folder '.*src' would replace the input '.*src'"),
    ("{src}/sub", r"Output folder '.*sub' lies inside the input folder '.*src'"),
    ("{tmp}", r"Output folder '.*' would replace the input '.*src'"),
    ("{link}", r"Output folder '.*link' would replace the input '.*src'"),  # a link to the dataset
]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("out, message", OUT_VS_INPUT, ids=[o for o, _ in OUT_VS_INPUT])
def test_an_export_never_writes_into_its_dataset(three_cases, tmp_path, capsys, out, message, overwrite):
    (tmp_path / "link").symlink_to(three_cases)
    before = _tree(three_cases)
    target = out.format(src=three_cases, tmp=tmp_path, link=tmp_path / "link")
    assert main(_export(three_cases, target, *(["--overwrite"] if overwrite else []))) == 2
    err = _err(capsys)
    assert re.search(message, err) and "--overwrite" not in err
    assert _tree(three_cases) == before
    assert not (three_cases / "imagesTr").exists() and not (three_cases / "sub").exists()


def test_an_export_used_as_the_dataset_is_never_replaced(three_cases, tmp_path, capsys):
    ds = tmp_path / "Dataset501_A"
    assert main(_export(three_cases, ds, "--include-real")) == 0
    before = _tree(ds)
    for extra in ([], ["--overwrite"], ["--n", "3", "--overwrite"]):
        assert main(_export(ds, ds, *extra)) == 2
        assert "would replace the input" in _err(capsys)
    assert _tree(ds) == before


def test_a_folder_no_export_made_is_never_cleared(three_cases, tmp_path, capsys):
    # Another nnU-Net dataset of real cases, not this export's input: --overwrite must not delete it.
    other = tmp_path / "Dataset009_Real"
    (other / "imagesTr").mkdir(parents=True)
    (other / "imagesTr" / "r_000_0000.nii.gz").write_bytes(b"scan")
    (other / "dataset.json").write_text("{}")
    before = _tree(other)
    for extra in ([], ["--overwrite"]):
        assert main(_export(three_cases, other, *extra)) == 2
        err = _err(capsys)
        assert "was not made by an export" in err and "--overwrite" not in err
    assert _tree(other) == before


def _train_args(ds, out, *extra):
    return ["train-harmonizer", "--dataset", str(ds), "--out", str(out), "--epochs", "1", "--batch-size", "2",
            "--patch-size", "16", "--patches-per-case", "1", "--base-channels", "2", "--depth", "2", "--n-val", "1",
            "--device", "cpu", "--quiet", "--cross-val-every", "0", *extra]


@pytest.mark.parametrize("target", ["c0.nii.gz", "c1_seg.nii.gz", "."], ids=["image", "label", "folder"])
def test_train_harmonizer_never_replaces_its_dataset(three_cases, capsys, target):
    before = _tree(three_cases)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert main(_train_args(three_cases, three_cases / target, *extra)) == 2
        assert re.search(r"would replace the input|is a folder", _err(capsys))
    assert _tree(three_cases) == before


# ----------------------------------------------------------------------------- validate before creating


def _nan_checkpoint(path):
    import torch

    from napari_lesionmix.harmonize.api import shipped_checkpoint
    from napari_lesionmix.harmonize.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(shipped_checkpoint())
    state["generator"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                          for k, v in state["generator"].items()}
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "format_version")}, path)


REFUSED = [
    (["--harmonize", "{tmp}/truncated.pt"], r"not a readable PyTorch file", ["--harmonize", "hm"]),
    (["--harmonize", "{tmp}/pickle.pt"], r"not a readable PyTorch file", ["--harmonize", "hm"]),
    (["--harmonize", "{tmp}/nan.pt"], r"gives NaN or infinite values", ["--harmonize", "hm"]),
    (["--folds", "5"], r"Fold \d of splits_final.json would have no", ["--folds", "0"]),
    (["--method", "mixup"], r"soft \(fractional\) labels", ["--method", "mixup", "--option", "mixup.label=hard"]),
]


@pytest.mark.parametrize("bad, message, fix", REFUSED, ids=[" ".join(b) for b, _, _ in REFUSED])
def test_a_refused_export_leaves_nothing_and_its_fix_runs(three_cases, tmp_path, capsys, bad, message, fix):
    import pickle

    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04" + b"\0" * 20)
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"a": 1}))
    if "{tmp}/nan.pt" in bad:
        _nan_checkpoint(tmp_path / "nan.pt")
    out = tmp_path / "Dataset510_R"
    args = [a.replace("{tmp}", str(tmp_path)) for a in bad]
    assert main(_export(three_cases, out, *args)) == 2
    assert re.search(message, _err(capsys))
    assert not out.exists()
    assert main(_export(three_cases, out, *fix)) == 0  # the corrected rerun, no --overwrite needed


def test_a_fold_check_failing_at_the_end_does_not_block_its_fix(three_cases, tmp_path, capsys, monkeypatch):
    # LesionMix's sources are only known after the sample, so the final check remains; its fix must resume.
    import napari_lesionmix.export.run as export  # where export_dataset looks its checks up

    monkeypatch.setattr(export, "_check_folds", lambda plan: None)
    out = tmp_path / "Dataset511_F"
    assert main(_export(three_cases, out, "--folds", "5")) == 2
    assert "--folds 0" in _err(capsys)
    assert main(_export(three_cases, out, "--folds", "0")) == 0
    assert not (out / "splits_final.json").exists() and (out / "dataset.json").is_file()


def test_an_evaluation_refused_leaves_no_report_folder(three_cases, tmp_path, capsys):
    pytest.importorskip("monai")
    import nibabel as nib
    from factories import make_case, write_case

    write_case(make_case(seed=60, n_lesions=2, case_id="c3"), three_cases)
    out = tmp_path / "report"
    base = ["evaluate", "--dataset", str(three_cases), "--out", str(out), "--train-cases", "2", "--seeds", "1",
            "--synthetic", "2", "--iterations", "1", "--patch", "8", "--channels", "2", "4", "--no-progress",
            "--device", "cpu"]
    assert main([*base, "--methods", "none", "mixup"]) == 2
    assert "--option mixup.label=hard" in _err(capsys)
    img = nib.load(three_cases / "c1.nii.gz")
    data = np.asarray(img.dataobj, np.float32)
    data[2, 3, 4] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), three_cases / "c1.nii.gz")
    assert main([*base, "--methods", "none", "carvemix"]) == 2
    # The user's file, not the link inside the report folder.
    assert f"Source image '{three_cases / 'c1.nii.gz'}' of case 'c1' holds NaN" in _err(capsys)
    assert main([*base, "--out", str(three_cases / "report"), "--methods", "none"]) == 2
    assert "lies inside the input folder" in _err(capsys)
    assert not out.exists() and not (three_cases / "report").exists()


# ----------------------------------------------------------------------------- training that diverges stops


TRAIN_BAD = [
    (["--lr-d", "inf"], r"learning rates must be finite and positive, got lr_g .* and lr_d inf"),
    (["--lr-g", "nan"], r"learning rates must be finite and positive, got lr_g nan"),
    (["--lr-g", "-1"], r"learning rates must be finite and positive"),
    (["--lr-g", "0"], r"learning rates must be finite and positive"),
    (["--n-val", "-1"], r"n_val must be >= 0, got -1"),
    (["--lr-g", "1e30", "--lr-d", "1e30"], r"Training diverged in epoch 1: .*; no checkpoint of this run was written"),
]


@pytest.mark.parametrize("extra, message", TRAIN_BAD, ids=[" ".join(e) for e, _ in TRAIN_BAD])
def test_bad_or_diverging_training_is_one_sentence(three_cases, tmp_path, capsys, extra, message):
    out = tmp_path / "m.pt"
    assert main(_train_args(three_cases, out, *extra)) == 2
    assert re.search(message, _err(capsys))
    assert not out.exists() and not (tmp_path / "m.best.pt").exists()


def test_a_nan_loss_stops_training_and_keeps_the_last_finite_checkpoint(three_cases, tmp_path, capsys, monkeypatch):
    import torch

    from napari_lesionmix.harmonize import losses
    from napari_lesionmix.harmonize.checkpoint import load_checkpoint

    out = tmp_path / "m.pt"
    real = losses.reconstruction_loss
    calls = []

    def nan_in_epoch_2(fake, target):
        calls.append(1)
        loss = real(fake, target)
        return loss * float("nan") if len(calls) > 1 else loss  # one step per epoch here

    monkeypatch.setattr(losses, "reconstruction_loss", nan_in_epoch_2)
    assert main(_train_args(three_cases, out, "--epochs", "3")) == 2
    assert re.search(r"Training diverged in epoch 2: loss_g is nan at step 1; '.*m.pt' keeps epoch 1, the last finite "
                     r"one", _err(capsys))
    state = load_checkpoint(out)
    assert state["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in state["generator"].values()
                                       if v.is_floating_point())


def test_resume_names_every_setting_that_differs_and_a_finished_run_extends(three_cases, tmp_path, capsys):
    from napari_lesionmix.harmonize.checkpoint import load_checkpoint

    out = tmp_path / "m.pt"
    assert main(_train_args(three_cases, out, "--lr-g", "0.001")) == 0
    capsys.readouterr()
    for extra, message in [
        (["--lr-g", "0.002"], r"different lr_g \(0.001, now 0.002\); resume needs the same settings"),
        (["--lr-g", "0.001", "--lr-d", "0.01", "--gain-range", "2"],
         r"different lr_d \(5e-05, now 0.01\), gain_range \(0.0, now 2.0\)"),
        (["--lr-g", "0.001", "--val-every", "3"], r"different val_every \(1, now 3\)"),
    ]:
        assert main(_train_args(three_cases, out, "--resume", *extra)) == 2
        assert re.search(message, _err(capsys))
    assert load_checkpoint(out)["epoch"] == 1
    assert main(_train_args(three_cases, out, "--resume", "--lr-g", "0.001", "--epochs", "2")) == 0
    assert "extending the finished run of 1 epoch(s) to 2" in capsys.readouterr().out
    state = load_checkpoint(out)
    assert (state["epoch"], state["train_config"]["epochs"]) == (2, 2)
    assert state["extensions"] == [{"from_epochs": 1, "to_epochs": 2}]
    assert main(_train_args(three_cases, out, "--resume", "--lr-g", "0.001", "--epochs", "1")) == 2
    assert "already holds 2 epoch(s); --epochs 1 cannot shorten it" in _err(capsys)


def test_a_clamped_n_val_is_announced(three_cases, tmp_path, capsys):
    assert main(_train_args(three_cases, tmp_path / "m.pt", "--n-val", "3")) == 0
    assert "n_val 3 would hold out all 3 case(s) with lesions; 2 are held out" in capsys.readouterr().out


# ----------------------------------------------------------------------------- remaining tracebacks


def test_a_full_disk_while_saving_a_checkpoint_is_one_sentence(three_cases, tmp_path, capsys, monkeypatch):
    from napari_lesionmix.io import atomic

    out = tmp_path / "m.pt"
    assert main(_train_args(three_cases, out)) == 0
    before = out.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_all", full)
    capsys.readouterr()
    assert main(_train_args(three_cases, out, "--resume", "--epochs", "2")) == 2
    assert re.search(r"Could not write '.*m(\.best)?\.pt': the disk is full \(nothing was overwritten\)\.",
                     _err(capsys))
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.fixture
def sample(pair_on_disk, tmp_path):
    """A CarveMix sample on disk (image, mask, label) to harmonize."""
    p = pair_on_disk
    out = tmp_path / "cm"
    assert main(["carvemix", "--host-image", str(p["host"]["images"][0]), "--host-label", str(p["host"]["label"]),
                 "--donor-image", str(p["donor"]["images"][0]), "--donor-label", str(p["donor"]["label"]),
                 "--seed", "3", "--out", str(out)]) == 0
    return out


def _write_label(path, like, make):
    import nibabel as nib

    img = nib.load(like)
    nib.save(nib.Nifti1Image(make(np.asarray(img.dataobj)).astype(np.uint8), img.affine), path)
    return path


LABELS = [
    ("empty", lambda lab, m: np.zeros_like(lab), r"is empty: nothing is anchored"),
    ("three values", lambda lab, m: lab * 2 + (lab == 0) * (m > 0) * 0, r"is not binary \(values 0, 2\)"),
    ("no lesion in the mask", lambda lab, m: lab * (m == 0), r"has no lesion inside the mask"),
    ("no host lesion", lambda lab, m: lab * (m > 0), r"has no lesion outside the mask"),
]


@pytest.mark.parametrize("make, message", [(f, m) for _, f, m in LABELS], ids=[n for n, _, _ in LABELS])
def test_harmonize_warns_about_a_label_that_cannot_anchor(sample, tmp_path, capsys, make, message):
    import nibabel as nib

    mask = np.asarray(nib.load(sample / "mask.nii.gz").dataobj)
    label = _write_label(tmp_path / "lab.nii.gz", sample / "label.nii.gz", lambda lab: make(lab, mask))
    args = ["harmonize", "--image", str(sample / "image_0000.nii.gz"), "--mask", str(sample / "mask.nii.gz"),
            "--label", str(label), "--method", "hm", "--out", str(tmp_path / "h")]
    assert main(args) == 0
    assert re.search(message, capsys.readouterr().err)


def test_hm_with_an_empty_label_is_hm_ring(sample, tmp_path, capsys):
    import nibabel as nib

    label = _write_label(tmp_path / "zero.nii.gz", sample / "label.nii.gz", np.zeros_like)
    common = ["harmonize", "--image", str(sample / "image_0000.nii.gz"), "--mask", str(sample / "mask.nii.gz")]
    assert main([*common, "--label", str(label), "--method", "hm", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--method", "hm-ring", "--out", str(tmp_path / "b")]) == 0
    a, b = (np.asarray(nib.load(tmp_path / d / "image_0000.nii.gz").dataobj) for d in ("a", "b"))
    assert np.array_equal(a, b)  # as the help says: the fallback is hm-ring


def test_a_leftover_old_folder_is_named(sample, pair_on_disk, tmp_path, capsys, monkeypatch):
    import shutil

    from napari_lesionmix.io import atomic

    real = shutil.rmtree
    # An immutable file (chattr +i) in the replaced folder: rmtree removes nothing of it.
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda p, ignore_errors=False: None if ".old" in str(p)
                        else real(p, ignore_errors=ignore_errors))
    p = pair_on_disk
    args = ["carvemix", "--host-image", str(p["host"]["images"][0]), "--host-label", str(p["host"]["label"]),
            "--donor-image", str(p["donor"]["images"][0]), "--donor-label", str(p["donor"]["label"]),
            "--seed", "4", "--out", str(sample), "--overwrite"]
    assert main(args) == 0
    left = [q for q in tmp_path.iterdir() if q.name.endswith(".old")]
    assert len(left) == 1
    assert f"what is left of them is in '{left[0]}' (remove it by hand)" in capsys.readouterr().err


UNCLEAR = [
    (["harmonize", "--image", "{img}", "--mask", "{lab}", "--model", "{tmp}/adir", "--out", "{tmp}/o"],
     r"Checkpoint '.*adir' is a folder; give the checkpoint file \(.pt\) inside it\."),
    (["export", "--dataset", "{img}", "--out", "{tmp}/o", "--folds", "0"],
     r"Dataset folder '.*c0.nii.gz' is a file; give the folder that holds the cases\."),
    (["verify", "{img}"], r"Dataset folder '.*c0.nii.gz' is a file"),
    (["train-harmonizer", "--dataset", "{src}", "--out", "{tmp}/adir"], r"Checkpoint '.*adir' is a folder; name"),
]


@pytest.mark.parametrize("argv, message", UNCLEAR, ids=[a[0] for a, _ in UNCLEAR])
def test_unclear_messages_say_what_is_wrong(three_cases, tmp_path, capsys, argv, message):
    (tmp_path / "adir").mkdir()
    args = [a.format(img=three_cases / "c0.nii.gz", lab=three_cases / "c0_seg.nii.gz", src=three_cases, tmp=tmp_path)
            for a in argv]
    assert main(args) == 2
    assert re.search(message, _err(capsys))


def test_a_one_case_evaluation_says_how_many_cases_it_needs(tmp_path):
    from factories import make_case, write_case

    from napari_lesionmix.errors import LesionMixError
    from napari_lesionmix.evaluate import EvalConfig, make_split

    write_case(make_case(seed=1, n_lesions=2, case_id="only"), tmp_path / "one")
    cfg = EvalConfig(str(tmp_path / "one"), str(tmp_path / "r"), conditions=("none",), train_sizes=(1,))
    with pytest.raises(LesionMixError, match=r"has 1 labelled case\(s\) in use; an evaluation with K = 1 training "
                                             r"case\(s\) needs at least 2 \(one more is held out for testing\)"):
        make_split(cfg)
    assert json.dumps(cfg.identity())  # the settings stay serialisable


def test_an_evaluation_that_failed_midway_does_not_block_its_corrected_rerun(three_cases, tmp_path, capsys,
                                                                            monkeypatch):
    pytest.importorskip("monai")
    from factories import make_case, write_case

    import napari_lesionmix.evaluate.run as evaluate  # where run_evaluation looks make_synthetic up
    from napari_lesionmix.errors import LesionMixError

    write_case(make_case(seed=60, n_lesions=2, case_id="c3"), three_cases)
    out = tmp_path / "report"
    base = ["evaluate", "--dataset", str(three_cases), "--out", str(out), "--train-cases", "2", "--seeds", "1",
            "--synthetic", "2", "--iterations", "1", "--patch", "8", "--channels", "2", "4", "--no-progress",
            "--device", "cpu", "--methods", "none", "carvemix"]
    real = evaluate.make_synthetic

    def fails_midway(config, split, condition, k, seed, root):
        (root / f"K{k}_seed{seed}" / "carvemix").mkdir(parents=True)
        (root / f"K{k}_seed{seed}" / "carvemix" / "export_config.json").write_text("{}")  # a partial export
        raise LesionMixError("the export failed midway.")

    monkeypatch.setattr(evaluate, "make_synthetic", fails_midway)
    assert main([*base, "--lr", "0.01"]) == 2
    monkeypatch.setattr(evaluate, "make_synthetic", real)
    # Other settings, no --overwrite: nothing was finished, so the folder is ours to redo.
    assert main([*base, "--lr", "0.02"]) == 0, _err(capsys)
    assert (out / "summary.md").is_file() and len(list((out / "runs").glob("*.json"))) == 2
