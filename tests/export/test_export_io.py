"""Export I/O off the critical path: a case's writes overlap the next case, manifest lines their own thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from factories import make_case, write_case

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export import ExportConfig, export_dataset, runners, writer
from napari_lesionmix.export.plan import make_plan
from napari_lesionmix.export.writer import prepare_output

SMALL = (20, 22, 18)


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    root = tmp_path / "src"
    for k in range(4):
        write_case(make_case(seed=60 + k, n_lesions=2, case_id=f"c{k}", shape=SMALL), root)
    return root


def cfg(src, out, **kw) -> ExportConfig:
    return ExportConfig(os.fspath(src), os.fspath(out), **{"n": 4, "seed": 1, "n_folds": 0, **kw})


def test_a_serial_record_comes_only_once_its_files_are_in_place(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    plan = make_plan(cfg(tiny_dataset, out, n=5))
    prepare_output(out, {}, False)
    seen = []
    for rec in runners.run_serial(plan, [("syn", i) for i in range(5)]):
        assert all(
            (out / rel).is_file() for rel in rec["files"]
        )  # a manifest line never precedes its files
        assert all(writer.sha256(out / rel) == digest for rel, digest in rec["files"].items())
        seen.append(rec["index"])
    assert seen == [0, 1, 2, 3, 4]


def test_a_failed_write_stops_the_export_with_the_cases_before_it_recorded(
    tiny_dataset, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    real = writer.commit_case
    calls = []

    def full_disk_on_third(blobs):
        calls.append(blobs)
        if len(calls) == 3:
            raise LesionMixError("Could not write 'x': the disk is full (nothing was overwritten).")
        real(blobs)

    monkeypatch.setattr(writer, "commit_case", full_disk_on_third)
    with pytest.raises(LesionMixError, match="disk is full"):
        export_dataset(cfg(tiny_dataset, out, n=5))
    recorded = writer.Manifest(out).read()
    assert sorted(r["index"] for r in recorded.values()) == [0, 1]
    assert len(list((out / "labelsTr").iterdir())) == 2 and not (out / "dataset.json").exists()
    monkeypatch.setattr(writer, "commit_case", real)
    report = export_dataset(cfg(tiny_dataset, out, n=5))
    assert report.complete and report.n_skipped == 2 and report.n_written == 3


def test_a_manifest_line_that_cannot_be_written_fails_the_export(
    tiny_dataset, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    real = writer.Manifest.append
    lines = []

    def fail_second(self, record):
        lines.append(record["id"])
        if len(lines) == 2:
            raise LesionMixError(
                f"Could not write '{self.path}': the disk is full (nothing was overwritten)."
            )
        real(self, record)

    monkeypatch.setattr(writer.Manifest, "append", fail_second)
    with pytest.raises(LesionMixError, match="disk is full"):
        export_dataset(cfg(tiny_dataset, out, n=4))
    assert not (out / "dataset.json").exists()
    monkeypatch.setattr(writer.Manifest, "append", real)
    assert export_dataset(cfg(tiny_dataset, out, n=4)).complete
