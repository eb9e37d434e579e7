"""Batch export: nnU-Net v2 layout, provenance, leakage-free splits, determinism, resume, errors."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.params import params_from_dict
from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export import ExportConfig, export_dataset, verify_dataset
from napari_lesionmix.export.plan import assign, make_plan, parse_method_specs
from napari_lesionmix.io.nifti import load_case

SMALL = (20, 22, 18)


def tree_checksums(root: Path) -> dict[str, str]:
    from napari_lesionmix.export.writer import sha256

    return {os.fspath(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """Five labelled cases (plain pairs layout) on one small grid."""
    root = tmp_path / "src"
    for k in range(5):
        write_case(make_case(seed=10 + k, n_lesions=2, case_id=f"c{k}", shape=SMALL), root)
    return root


def cfg(src, out, **kw) -> ExportConfig:
    base = dict(n=4, seed=3, n_folds=0)  # no splits file unless a test checks one (tiny exports cannot fill folds)
    base.update(kw)
    return ExportConfig(os.fspath(src), os.fspath(out), **base)


def test_layout_manifest_and_replay(tiny_dataset, tmp_path):
    out = tmp_path / "Dataset501_Syn"
    report = export_dataset(cfg(tiny_dataset, out, include_real=True, holdout_fraction=0.2))
    assert report.complete and report.n_written == 9 and report.n_total == 9
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "image"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["file_ending"] == ".nii.gz"
    labels = sorted(p.name for p in (out / "labelsTr").iterdir())
    assert meta["numTraining"] == len(labels) == 9
    assert [p.name for p in sorted((out / "imagesTr").iterdir())][:1] == ["c0_0000.nii.gz"]
    for i in range(4):
        assert (out / "imagesTr" / f"lmx_{i:06d}_0000.nii.gz").is_file()
        assert (out / "labelsTr" / f"lmx_{i:06d}.nii.gz").is_file()
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    syn = [r for r in lines if r["method"] != "real"]
    assert [r["id"] for r in syn] == [f"lmx_{i:06d}" for i in range(4)]
    assert [r["index"] for r in syn] == [0, 1, 2, 3]
    assert verify_dataset(out) == []
    # Every synthetic case replays bit for bit from its manifest params.
    for rec in syn:
        params = params_from_dict(rec["params"])
        assert rec["sources"] == [params.host_id, params.donor_id] and rec["version"]
        host = load_case(tiny_dataset / f"{params.host_id}.nii.gz", tiny_dataset / f"{params.host_id}_seg.nii.gz",
                         case_id=params.host_id)
        donor = load_case(tiny_dataset / f"{params.donor_id}.nii.gz", tiny_dataset / f"{params.donor_id}_seg.nii.gz",
                          case_id=params.donor_id)
        s = registry.replay(params, host, donor)  # the shared path: it applies the recorded intensity map
        written = load_case(out / "imagesTr" / f"{rec['id']}_0000.nii.gz", out / "labelsTr" / f"{rec['id']}.nii.gz")
        np.testing.assert_array_equal(written.image, s.image)
        np.testing.assert_array_equal(written.label, s.label)
        np.testing.assert_allclose(written.affine, host.affine, atol=1e-5)


def test_two_channels(tmp_path):
    src = tmp_path / "src2"
    for k in range(3):
        write_case(make_case(seed=k, n_channels=2, case_id=f"m{k}", shape=SMALL), src)
    out = tmp_path / "out2"
    export_dataset(cfg(src, out, n=2))
    meta = json.loads((out / "dataset.json").read_text())
    assert len(meta["channel_names"]) == 2 and meta["numTraining"] == 2
    assert (out / "imagesTr" / "lmx_000001_0001.nii.gz").is_file()


def test_holdout_is_never_a_source_and_splits_are_leak_free(tiny_dataset, tmp_path):
    out = tmp_path / "o"
    config = cfg(tiny_dataset, out, n=12, include_real=True, holdout_fraction=0.4, n_folds=5)
    plan = make_plan(config)
    assert len(plan.holdout_ids) == 2 and not set(plan.holdout_ids) & set(plan.train_ids)
    report = export_dataset(config)
    assert report.holdout == plan.holdout_ids
    recs = {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    for r in recs.values():
        if r["method"] != "real":
            assert not set(r["sources"]) & set(plan.holdout_ids)
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == min(5, len(plan.train_ids))
    real_train = set(plan.train_ids)
    vals = []
    for fold in splits:
        train, val = set(fold["train"]), set(fold["val"])
        assert not train & val
        assert set(plan.holdout_ids) <= val  # held-out cases validate every fold, train none
        real_val = val & real_train
        vals.append(real_val)
        for cid in train:
            assert cid not in plan.holdout_ids
            srcs = set(recs[cid]["sources"])
            assert not srcs & real_val, f"{cid} made from a validation case of its fold"
    # The folds partition the real training pool.
    assert sorted(c for v in vals for c in v) == sorted(real_train)


def test_an_empty_fold_of_cases_with_many_sources_leads_with_include_real():
    """LesionMix cases paste lesions from many cases, so each trains few folds: more cases barely help."""
    from types import SimpleNamespace

    from napari_lesionmix.export.writer import splits_final

    folds = [["a", "b"], ["c", "d"], ["e", "f"]]
    plan = SimpleNamespace(holdout_ids=[], real_ids=[], folds=folds, fold_train=None, train_ids=list("abcdef"))
    wide = {f"l{i}": {"method": "lesionmix", "sources": ["a", "c", "e", "b"][: 3 + i % 2]} for i in range(4)}
    with pytest.raises(LesionMixError, match=r"Fold 0 .* no training case \(4 synthetic case\(s\), 3 folds; a case "
                                             r"trains only the folds that validate none of its sources, and with "
                                             r"3\.5 source cases each a fold trains on 0% of them\); add "
                                             r"--include-real"):
        splits_final(plan, wide)
    pairs = {f"c{i}": {"method": "carvemix", "sources": [h, d]} for i, (h, d) in enumerate(["ab", "ab", "cd", "cd"])}
    with pytest.raises(LesionMixError, match=r"Fold 2 .* no validation case \(4 synthetic case\(s\), 3 folds\); "
                                             r"export more cases"):
        splits_final(plan, pairs)  # a pair trains 2 of 3 folds: more cases fill the fold


def test_folds_that_cannot_be_filled_are_an_error_and_folds_0_writes_no_splits(tiny_dataset, tmp_path):
    """nnU-Net cannot train or validate an empty fold: say so (a rerun with more cases completes it)."""
    with pytest.raises(LesionMixError, match=r"Fold \d of splits_final.json would have no (training|validation) "
                                             r"case \(2 synthetic case\(s\), 5 folds\)"):
        export_dataset(cfg(tiny_dataset, tmp_path / "o", n=2, n_folds=5))
    assert not (tmp_path / "o" / "splits_final.json").exists() and not (tmp_path / "o" / "dataset.json").exists()
    report = export_dataset(cfg(tiny_dataset, tmp_path / "o", n=2, n_folds=0, overwrite=True))
    assert report.complete and not (tmp_path / "o" / "splits_final.json").exists()
    assert verify_dataset(tmp_path / "o") == []


def test_splits_file_folds_and_holdout(tiny_dataset, tmp_path):
    folds = [{"train": ["c0", "c1"], "val": ["c2"]}, {"train": ["c1", "c2"], "val": ["c0"]}]
    (tmp_path / "splits.json").write_text(json.dumps(folds))
    config = cfg(tiny_dataset, tmp_path / "o", n=6, include_real=True, splits=os.fspath(tmp_path / "splits.json"))
    plan = make_plan(config)
    assert plan.holdout_ids == ("c3", "c4") and plan.train_ids == ("c0", "c1", "c2")
    export_dataset(config)
    splits = json.loads((tmp_path / "o" / "splits_final.json").read_text())
    assert len(splits) == 2
    assert set(splits[0]["val"]) == {"c2", "c3", "c4"}
    assert {c for c in splits[0]["train"] if c.startswith("c")} == {"c0", "c1"}
    (tmp_path / "bad.json").write_text(json.dumps(["c9"]))
    with pytest.raises(LesionMixError, match="c9"):
        make_plan(cfg(tiny_dataset, tmp_path / "o2", splits=os.fspath(tmp_path / "bad.json")))


def test_assignment_depends_only_on_seed_and_index(tiny_dataset, tmp_path):
    p1 = make_plan(cfg(tiny_dataset, tmp_path / "a", n=10, methods=(("carvemix", 1.0),)))
    p2 = make_plan(cfg(tiny_dataset, tmp_path / "b", n=3, methods=(("carvemix", 1.0),), workers=2))
    for i in range(3):
        a1, r1 = assign(p1, i)
        a2, r2 = assign(p2, i)
        assert a1 == a2 and r1.random() == r2.random()
        assert a1.host_id != a1.donor_id
    assert parse_method_specs(["carvemix:2", "softcp"]) == (("carvemix", 2.0), ("softcp", 1.0))
    with pytest.raises(LesionMixError, match="positive"):
        parse_method_specs(["carvemix:-1"])


def test_one_vs_two_workers_identical(tiny_dataset, tmp_path):
    export_dataset(cfg(tiny_dataset, tmp_path / "w1", n=5, include_real=True, workers=1, n_folds=5))
    export_dataset(cfg(tiny_dataset, tmp_path / "w2", n=5, include_real=True, workers=2, n_folds=5))
    a, b = tree_checksums(tmp_path / "w1"), tree_checksums(tmp_path / "w2")
    assert a == b and len(a) == 2 * 10 + 4


def test_repeated_parallel_exports_are_byte_identical(tiny_dataset, tmp_path):
    """Every file, gzip streams included, is the same bytes in every run of a 3-method parallel export."""
    methods = (("carvemix", 1.0), ("softcp", 1.0), ("lesionmix", 1.0))
    runs = []
    for r in range(3):
        export_dataset(cfg(tiny_dataset, tmp_path / f"r{r}", n=6, workers=2, methods=methods,
                           options={"softcp": {"delta1": 0.5}}))
        runs.append({k: v for k, v in tree_checksums(tmp_path / f"r{r}").items() if k.endswith(".nii.gz")})
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 12


def test_gzip_codecs_write_the_same_voxels_and_are_part_of_the_settings(tiny_dataset, tmp_path):
    import gzip

    export_dataset(cfg(tiny_dataset, tmp_path / "isal", n=3))  # isal is the default
    export_dataset(cfg(tiny_dataset, tmp_path / "zlib", n=3, gzip="zlib"))
    files = sorted(p.relative_to(tmp_path / "isal") for p in (tmp_path / "isal").rglob("*.nii.gz"))
    assert len(files) == 6
    for rel in files:
        a, b = (tmp_path / "isal" / rel).read_bytes(), (tmp_path / "zlib" / rel).read_bytes()
        assert a != b  # two encoders...
        assert gzip.decompress(a) == gzip.decompress(b)  # ...of the same NIfTI bytes
    assert verify_dataset(tmp_path / "zlib") == []
    with pytest.raises(LesionMixError, match=r"differs in: gzip"):
        export_dataset(cfg(tiny_dataset, tmp_path / "zlib", n=3))
    with pytest.raises(LesionMixError, match="Unknown gzip codec 'lz4'"):
        cfg(tiny_dataset, tmp_path / "x", gzip="lz4")


def test_folder_started_by_other_code_is_not_completed(tiny_dataset, tmp_path, monkeypatch):
    import napari_lesionmix.export.provenance as provenance

    out = tmp_path / "o"
    seen = []
    export_dataset(cfg(tiny_dataset, out, n=4), progress=lambda d, t: seen.append(d), should_stop=lambda: seen[-1] >= 1)
    written = json.loads((out / "export_config.json").read_text())
    assert written["settings"]["code"] == provenance.code_fingerprint()
    assert {"numpy", "nibabel", "isal", "code"} <= set(written["environment"])
    monkeypatch.setattr(provenance, "code_fingerprint", lambda: "0123456789abcdef")  # the package changed
    with pytest.raises(LesionMixError, match=r"differs in: code"):
        export_dataset(cfg(tiny_dataset, out, n=4))
    assert export_dataset(cfg(tiny_dataset, out, n=4, overwrite=True)).n_written == 4


def test_stop_then_resume_skips_finished(tiny_dataset, tmp_path):
    full = tmp_path / "full"
    export_dataset(cfg(tiny_dataset, full, n=6))
    out = tmp_path / "part"
    seen = []
    report = export_dataset(cfg(tiny_dataset, out, n=6), progress=lambda d, t: seen.append(d),
                            should_stop=lambda: seen[-1] >= 2)
    assert report.stopped and report.n_written == 2
    assert not (out / "dataset.json").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "labelsTr").iterdir()}
    report = export_dataset(cfg(tiny_dataset, out, n=6))
    assert report.complete and report.n_skipped == 2 and report.n_written == 4
    for name, t in mtimes.items():
        assert (out / "labelsTr" / name).stat().st_mtime_ns == t  # not redone
    assert tree_checksums(out) == tree_checksums(full)


def test_kill_9_mid_run_then_rerun_completes(tmp_path):
    src = tmp_path / "src"
    for k in range(4):
        write_case(make_case(seed=20 + k, n_lesions=3, case_id=f"k{k}", shape=(40, 40, 36)), src)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "napari_lesionmix.cli", "export", "--dataset", os.fspath(src),
           "--out", os.fspath(out), "--n", "200", "--seed", "5", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    # Wait on observable state (three cases recorded), not on a clock: a loaded CI machine can take
    # long to start the interpreter, so the generous deadline only stops a hung export.
    deadline = time.time() + 300
    while not (manifest.is_file() and len(manifest.read_text().splitlines()) >= 3):
        assert proc.poll() is None, f"the export exited with {proc.returncode} before it wrote three cases"
        assert time.time() < deadline, "the export wrote fewer than three cases in 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "dataset.json").exists(), "the export finished before it could be killed"
    # What a kill during a write leaves: a temporary file and a torn manifest line.
    (out / "imagesTr" / ".lmx_000199_0000.nii.gz.abc123.tmp.nii.gz").write_bytes(b"\x1f\x8b partial")
    with open(manifest, "a") as fh:
        fh.write('{"id": "lmx_0000')
    done_before = {json.loads(x)["id"] for x in manifest.read_text().splitlines()[:-1]}
    mtimes = {cid: (out / "labelsTr" / f"{cid}.nii.gz").stat().st_mtime_ns for cid in done_before}
    assert main(["export", "--dataset", os.fspath(src), "--out", os.fspath(out), "--n", "200",
                 "--seed", "5", "--no-progress"]) == 0
    assert verify_dataset(out) == []
    assert not [p for p in out.rglob(".*") if p.is_file()]
    for cid, t in mtimes.items():
        assert (out / "labelsTr" / f"{cid}.nii.gz").stat().st_mtime_ns == t
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 200


def test_other_settings_refused_unless_overwrite(tiny_dataset, tmp_path):
    out = tmp_path / "o"
    export_dataset(cfg(tiny_dataset, out, n=2))
    with pytest.raises(LesionMixError, match=r"other settings \(differs in: seed\).*--overwrite"):
        export_dataset(cfg(tiny_dataset, out, n=2, seed=4))
    report = export_dataset(cfg(tiny_dataset, out, n=2, seed=4, overwrite=True))
    assert report.n_written == 2 and verify_dataset(out) == []
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(LesionMixError, match="not empty"):
        export_dataset(cfg(tiny_dataset, stranger, n=1))
    assert main(["export", "--dataset", os.fspath(tiny_dataset), "--out", os.fspath(out),
                 "--n", "2", "--seed", "9", "--no-progress"]) == 2


def test_full_disk_leaves_nothing_half_written(tiny_dataset, tmp_path, monkeypatch):
    import napari_lesionmix.io.atomic as atomic

    real_temporary, real_write_all = atomic._temporary, atomic._write_all
    doomed: set[int] = set()

    def temporary(path):
        fd, tmp = real_temporary(path)
        if path.name == "lmx_000001.nii.gz":  # the label of the second case: its image is already saved
            doomed.add(fd)
        return fd, tmp

    def full_disk_write(fd, data):
        if fd in doomed:
            os.write(fd, b"\x1f\x8b partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_all(fd, data)

    monkeypatch.setattr(atomic, "_temporary", temporary)
    monkeypatch.setattr(atomic, "_write_all", full_disk_write)
    out = tmp_path / "o"
    with pytest.raises(LesionMixError, match="disk is full"):
        export_dataset(cfg(tiny_dataset, out, n=3))
    assert doomed, "the failing write was never reached"
    assert not [p for p in out.rglob(".*") if p.is_file()]
    assert not (out / "dataset.json").exists()
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["lmx_000000_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["lmx_000000.nii.gz"]
    monkeypatch.setattr(atomic, "_temporary", real_temporary)
    monkeypatch.setattr(atomic, "_write_all", real_write_all)
    report = export_dataset(cfg(tiny_dataset, out, n=3))
    assert report.n_skipped == 1 and report.n_written == 2 and verify_dataset(out) == []


def test_unknown_methods_and_soft_labels_are_refused_before_any_file(tiny_dataset, tmp_path):
    with pytest.raises(LesionMixError, match="Unknown augmentation method 'nosuch'"):
        export_dataset(cfg(tiny_dataset, tmp_path / "o", methods=(("nosuch", 1.0),)))
    with pytest.raises(LesionMixError, match=r"soft \(fractional\) labels.*--option mixup.label=hard"):
        export_dataset(cfg(tiny_dataset, tmp_path / "o", methods=(("mixup", 1.0),)))
    assert not (tmp_path / "o").exists()


def test_harmonize_hm_inside_mask_only(tiny_dataset, tmp_path):
    from napari_lesionmix.harmonize import load_harmonizer

    export_dataset(cfg(tiny_dataset, tmp_path / "plain", n=2))
    export_dataset(cfg(tiny_dataset, tmp_path / "hm", n=2, harmonize="hm"))
    rec = json.loads((tmp_path / "hm" / "manifest.jsonl").read_text().splitlines()[0])
    assert rec["harmonize"]["method"] == "hm"
    params = params_from_dict(rec["params"])
    host = load_case(tiny_dataset / f"{params.host_id}.nii.gz", tiny_dataset / f"{params.host_id}_seg.nii.gz")
    donor = load_case(tiny_dataset / f"{params.donor_id}.nii.gz", tiny_dataset / f"{params.donor_id}_seg.nii.gz")
    s = registry.replay(params, host, donor)
    expected = load_harmonizer("hm").harmonize(s.image, s.mask, label=s.label)  # the paper's HM: to the host's lesions
    got = nib.load(tmp_path / "hm" / "imagesTr" / "lmx_000000_0000.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(got, expected[0])
    plain = nib.load(tmp_path / "plain" / "imagesTr" / "lmx_000000_0000.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(got[~s.mask], plain[~s.mask])
    with pytest.raises(LesionMixError, match="nosuch.pt"):
        export_dataset(cfg(tiny_dataset, tmp_path / "x", harmonize="nosuch.pt"))


def test_cli_export_prints_summary(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["export", "--dataset", os.fspath(tiny_dataset), "--out", os.fspath(out), "--n", "3",
                 "--method", "carvemix:2", "--holdout-fraction", "0.2", "--include-real", "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "8 case(s)" in text and "held out: c" in text
    assert main(["export", "--dataset", os.fspath(tmp_path / "missing"), "--out", os.fspath(tmp_path / "x"),
                 "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_lesionmix_method_uses_training_pool_only(tiny_dataset, tmp_path):
    pytest.importorskip("napari_lesionmix.augment.lesionmix")
    from napari_lesionmix.augment.lesionmix import lesionmix
    from napari_lesionmix.augment.lesions import LesionBank
    from napari_lesionmix.export.context import training_dataset

    config = cfg(tiny_dataset, tmp_path / "lm", n=4, methods=(("lesionmix", 1.0),), holdout_fraction=0.4)
    plan = make_plan(config)
    export_dataset(config)
    recs = [json.loads(x) for x in (tmp_path / "lm" / "manifest.jsonl").read_text().splitlines()]
    assert [r["method"] for r in recs] == ["lesionmix"] * 4
    bank = LesionBank(records=training_dataset(plan).cases)
    for rec in recs:
        params = params_from_dict(rec["params"])
        assert params.host_id == rec["sources"][0]
        assert not set(rec["sources"]) & set(plan.holdout_ids)
        assert {ins.case_id for ins in params.insertions} <= set(plan.train_ids)
        host = load_case(tiny_dataset / f"{params.host_id}.nii.gz", tiny_dataset / f"{params.host_id}_seg.nii.gz",
                         case_id=params.host_id)
        s = lesionmix(host, params, bank=bank)
        written = load_case(tmp_path / "lm" / "imagesTr" / f"{rec['id']}_0000.nii.gz",
                            tmp_path / "lm" / "labelsTr" / f"{rec['id']}.nii.gz")
        np.testing.assert_array_equal(written.label, s.label)
        np.testing.assert_array_equal(written.image, s.image)


def test_the_report_says_when_the_folds_leave_most_synthetic_cases_out(tiny_dataset, tmp_path):
    """A case trains only the folds that validate none of its sources: LesionMix's have many."""
    shares = {}
    for method in ("lesionmix", "carvemix"):
        out = tmp_path / method
        report = export_dataset(cfg(tiny_dataset, out, n=6, methods=((method, 1.0),), include_real=True, n_folds=5,
                                    options={"lesionmix": {"target_load": 1.5}} if method == "lesionmix" else {}))
        folds = json.loads((out / "splits_final.json").read_text())
        synthetic = {r["id"] for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
                     if r["method"] != "real"}
        shares[method] = sum(len(synthetic & set(f["train"])) for f in folds) / (len(folds) * len(synthetic))
        assert report.fold_share == pytest.approx(shares[method])
        assert (report.fold_warning() is not None) == (shares[method] < 0.5)
        assert (report.fold_warning() in report.warnings()) == (shares[method] < 0.5)
    assert shares["lesionmix"] < 0.5 <= shares["carvemix"]  # a pair has two sources, these more
    assert f"trains on {shares['lesionmix']:.0%} of the synthetic cases" in report_line(tiny_dataset, tmp_path)


def report_line(src, tmp_path) -> str:
    """The CLI's warning for a LesionMix export with folds (the same seed: the same folds)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stdout(err), contextlib.redirect_stderr(err):
        main(["export", "--dataset", os.fspath(src), "--out", os.fspath(tmp_path / "cli"), "--n", "6", "--seed", "3",
              "--method", "lesionmix", "--include-real", "--option", "lesionmix.target_load=1.5", "--no-progress"])
    return err.getvalue()


def test_method_options(tiny_dataset, tmp_path):
    from napari_lesionmix.export.plan import parse_option_specs

    opts = parse_option_specs(["carvemix.per_lesion=true", "carvemix.connectivity=6"])
    assert opts == {"carvemix": {"per_lesion": True, "connectivity": 6}}
    export_dataset(cfg(tiny_dataset, tmp_path / "pl", n=2, options=opts))
    rec = json.loads((tmp_path / "pl" / "manifest.jsonl").read_text().splitlines()[0])
    assert rec["params"]["per_lesion"] is True and rec["params"]["connectivity"] == 6
    assert len(rec["params"]["lesion_lams"]) >= 1
    with pytest.raises(LesionMixError, match="has no option lambda_"):
        cfg(tiny_dataset, tmp_path / "x", options={"carvemix": {"lambda_": 1.0}})
    with pytest.raises(LesionMixError, match="carvemix.per_lesion must be true or false"):
        cfg(tiny_dataset, tmp_path / "x", options={"carvemix": {"per_lesion": "yes"}})
    with pytest.raises(LesionMixError, match="not in the method list"):
        cfg(tiny_dataset, tmp_path / "x", options={"softcp": {"n_lesions": 2}})
    with pytest.raises(LesionMixError, match="METHOD.NAME=VALUE"):
        parse_option_specs(["per_lesion=true"])
    # Options are settings: changing them on rerun is refused like any other.
    with pytest.raises(LesionMixError, match="differs in: options"):
        export_dataset(cfg(tiny_dataset, tmp_path / "pl", n=2))


def test_rerun_with_larger_n_adds_cases_smaller_n_is_refused(tiny_dataset, tmp_path):
    out = tmp_path / "grow"
    export_dataset(cfg(tiny_dataset, out, n=2))
    first = tree_checksums(out)
    report = export_dataset(cfg(tiny_dataset, out, n=4))
    assert report.n_skipped == 2 and report.n_written == 2
    export_dataset(cfg(tiny_dataset, tmp_path / "direct", n=4))
    assert tree_checksums(out) == tree_checksums(tmp_path / "direct")
    assert all(tree_checksums(out)[k] == v for k, v in first.items() if k.startswith(("imagesTr", "labelsTr")))
    with pytest.raises(LesionMixError, match="lmx_000003, beyond --n 3"):
        export_dataset(cfg(tiny_dataset, out, n=3))
    report = export_dataset(cfg(tiny_dataset, out, n=3, overwrite=True))
    assert report.n_skipped == 3 and not (out / "labelsTr" / "lmx_000003.nii.gz").exists()
    assert verify_dataset(out) == []


def test_worker_error_reaches_the_caller_as_one_sentence(tiny_dataset, tmp_path, monkeypatch):
    import napari_lesionmix.export.run as export  # where export_dataset looks its checks up

    for k in range(5):
        (tiny_dataset / f"c{k}.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not a volume")
    # Corrupt sources are caught before any case is written...
    with pytest.raises(LesionMixError, match=r"Case 'c0': Source file '.*c0.nii.gz' is a corrupt or truncated gzip"):
        export_dataset(cfg(tiny_dataset, tmp_path / "pre", n=4, workers=2))
    assert not (tmp_path / "pre").exists()
    # ...and a worker's own error (a file that breaks after that check) still reaches the caller.
    monkeypatch.setattr(export, "check_sources", lambda plan: None)
    with pytest.raises(LesionMixError, match=r"c\d.nii.gz' is a corrupt or truncated gzip"):
        export_dataset(cfg(tiny_dataset, tmp_path / "err", n=4, workers=2))
    assert not (tmp_path / "err" / "dataset.json").exists()
    assert not [p for p in (tmp_path / "err").rglob(".*") if p.is_file()]


def test_softcp_method_replays_and_avoids_holdout(tiny_dataset, tmp_path):
    config = cfg(tiny_dataset, tmp_path / "sc", n=3, methods=(("softcp", 1.0),), holdout_fraction=0.4,
                 options={"softcp": {"n_lesions": 1}})
    plan = make_plan(config)
    export_dataset(config)
    recs = [json.loads(x) for x in (tmp_path / "sc" / "manifest.jsonl").read_text().splitlines()]
    assert [r["method"] for r in recs] == ["softcp"] * 3
    for rec in recs:
        params = params_from_dict(rec["params"])
        host_id, donor_id = rec["sources"]
        assert not {host_id, donor_id} & set(plan.holdout_ids)
        host = load_case(tiny_dataset / f"{host_id}.nii.gz", tiny_dataset / f"{host_id}_seg.nii.gz", case_id=host_id)
        donor = load_case(tiny_dataset / f"{donor_id}.nii.gz", tiny_dataset / f"{donor_id}_seg.nii.gz",
                          case_id=donor_id)
        s = registry.replay(params, host, donor)
        written = load_case(tmp_path / "sc" / "imagesTr" / f"{rec['id']}_0000.nii.gz",
                            tmp_path / "sc" / "labelsTr" / f"{rec['id']}.nii.gz")
        np.testing.assert_array_equal(written.label, s.label)
        np.testing.assert_array_equal(written.image, s.image.astype(np.float32))


def test_worker_case_cache_is_bounded_in_bytes(tiny_dataset, tmp_path):
    from napari_lesionmix.export.context import ExportContext

    plan = make_plan(cfg(tiny_dataset, tmp_path / "o", n=1))
    one = int(np.prod(SMALL)) * (4 + 1)  # float32 image + uint8 label
    ctx = ExportContext(plan, cache_size=16, cache_bytes=2 * one)
    for cid in plan.train_ids:
        ctx.case(cid)
    assert list(ctx._cases.data) == list(plan.train_ids[-2:]) and ctx._cases.bytes == 2 * one
    assert ctx.case(plan.train_ids[-1]) is ctx.case(plan.train_ids[-1])  # cached, not reloaded


def test_pool_worker_exits_when_the_export_process_is_killed():
    """The watchdog of pool workers: an orphan (after kill -9 of the export) exits by itself."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = ("import sys; from napari_lesionmix.export.runners import _watch_parent; "
            f"_watch_parent({parent.pid}, 0.05); sys.exit(0)")
    worker = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)
    assert worker.poll() is None  # parent alive: the worker stays
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert worker.wait(timeout=20) == 1


def test_export_processes_keep_freed_memory(tiny_dataset, tmp_path, monkeypatch):
    """Pool workers and the CLI tune glibc's allocator; a caller's own process is left alone."""
    import platform

    import napari_lesionmix.export.runners as runners

    code = "from napari_lesionmix.export.runners import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(platform.libc_ver()[0] == "glibc")
    monkeypatch.setattr(runners, "keep_freed_memory", lambda: pytest.fail("tuned the caller's process"))
    assert export_dataset(cfg(tiny_dataset, tmp_path / "o", n=2)).complete


@pytest.mark.parametrize("voxels, expected", [
    ({}, [0]), ({(0, 0, 0): 1}, [0, 1]), ({(0, 0, 0): 1, (1, 1, 1): 3}, [0, 1, 3]),
    ({(0, 0, 0): 2, (1, 1, 1): 2}, [0, 2]), ("all 2, one 3", [2, 3]), ("all 5", [5]),
])
def test_label_values_recorded_in_the_manifest(voxels, expected):
    from napari_lesionmix.export.runners import _values

    label = np.zeros((4, 5, 6), np.uint8)
    if voxels == "all 2, one 3":
        label[:] = 2
        label[3, 4, 5] = 3
    elif voxels == "all 5":
        label[:] = 5
    else:
        for ijk, v in voxels.items():
            label[ijk] = v
    assert _values(label) == expected == sorted(int(v) for v in np.unique(label))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_sample_with_nan_or_inf_is_never_written(tiny_dataset, tmp_path, monkeypatch, bad):
    from napari_lesionmix.augment import registry
    from napari_lesionmix.augment.carvemix import CarveMixMethod

    class Broken(CarveMixMethod):
        name = "broken"

        def apply(self, inputs, params, resources):
            result = super().apply(inputs, params, resources)
            result.image.flat[7] = bad
            return result

    registry.method_names()  # discover the built-in methods before adding one
    monkeypatch.setitem(registry._METHODS, "broken", Broken())
    out = tmp_path / "o"
    with pytest.raises(LesionMixError, match=r"Sample lmx_000000 \(broken\) has NaN or infinite voxels"):
        export_dataset(cfg(tiny_dataset, out, n=2, methods=(("broken", 1.0),)))
    assert list((out / "imagesTr").iterdir()) == [] and list((out / "labelsTr").iterdir()) == []


def test_export_reads_each_hosts_brain_mask_from_the_dataset(tmp_path):
    """A dataset's ``*_brainmask`` (floats, 0.99999997 as BraTS stores it) is the host's brain, as for the CLI."""
    root = tmp_path / "src"
    masks = {}
    for k in range(4):
        case = make_case(seed=130 + k, n_lesions=3, case_id=f"b{k}")
        write_case(case, root)
        mask = np.zeros(case.shape, bool)
        mask[3:-3, 3:-3, 3:-3] = True  # not the estimate: the image has no background, so all of it is brain
        mask |= case.label != 0
        masks[case.case_id] = mask
        nib.save(nib.Nifti1Image(mask * 0.99999997, case.affine), root / f"b{k}_brainmask.nii.gz")
    out = tmp_path / "Dataset902_Masked"
    export_dataset(ExportConfig(str(root), str(out), n=6, seed=1, n_folds=0,
                                methods=(("carvemix", 1.0), ("softcp", 1.0), ("lesionmix", 1.0))))
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} >= {"softcp", "lesionmix"}
    for rec in records:
        mask = masks[rec["host"]]
        assert rec["params"]["brain"] == {"source": "mask", "voxels": int(mask.sum())}, rec["id"]
        if rec["method"] in ("softcp", "lesionmix"):
            label = np.asarray(nib.load(out / "labelsTr" / f"{rec['id']}.nii.gz").dataobj)
            host = np.asarray(nib.load(root / f"{rec['host']}_seg.nii.gz").dataobj)
            assert not ((label != 0) & (host == 0) & ~mask).any(), rec["id"]  # pasted inside the given brain


def test_lesionmix_cases_that_miss_their_target_are_reported(tiny_dataset, tmp_path, capsys):
    """Whole lesions go or stay, so a tiny target leaves one lesion: the case is kept, and the run says so."""
    opts = {"target_load": 0.001, "tolerance_ml": 0.0001, "tolerance_frac": 0.0, "mode": "inpaint"}
    out = tmp_path / "Dataset904_Missed"
    args = ["export", "--dataset", str(tiny_dataset), "--out", str(out), "--n", "2", "--folds", "0", "--method",
            "lesionmix", "--no-progress"] + [x for o in opts for x in ("--option", f"lesionmix.{o}={opts[o]}")]
    assert main(args) == 0
    records = {json.loads(x)["id"]: json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()}
    assert [r["params"]["target_reached"] for r in records.values()] == [False, False]
    expected = {cid: (r["params"]["reached_load_ml"], 0.001) for cid, r in records.items()}
    err = capsys.readouterr().err
    assert "warning: 2 LesionMix case(s) missed their target lesion load" in err
    assert "for a target of 0.0 mL" in err and "the manifest records each target" in err
    report = export_dataset(ExportConfig(str(tiny_dataset), str(out), n=2, n_folds=0, methods=(("lesionmix", 1.0),),
                                         options={"lesionmix": opts}))
    assert report.missed_targets == expected and len(report.warnings()) == 1
    # A reachable target: nothing to report.
    fine = export_dataset(ExportConfig(str(tiny_dataset), str(tmp_path / "Dataset905_Fine"), n=2, n_folds=0,
                                       methods=(("carvemix", 1.0),)))
    assert fine.missed_targets == {} and fine.warnings() == []
