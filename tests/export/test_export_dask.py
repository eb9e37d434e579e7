"""The same export on a dask.distributed LocalCluster gives the files of a serial run."""

from __future__ import annotations

import os

import pytest
from factories import make_case, write_case

from napari_lesionmix.export import ExportConfig, export_dataset, verify_dataset

distributed = pytest.importorskip("distributed")


def _checksums(root):
    from napari_lesionmix.export.writer import sha256

    return {os.fspath(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as c:
        yield c


def test_dask_matches_serial(tmp_path, cluster):
    src = tmp_path / "src"
    for k in range(4):
        write_case(make_case(seed=30 + k, n_lesions=2, case_id=f"d{k}", shape=(20, 22, 18)), src)
    kw = dict(n=6, seed=11, include_real=True, holdout_fraction=0.25)
    export_dataset(ExportConfig(os.fspath(src), os.fspath(tmp_path / "serial"), **kw))
    # By scheduler address (what --scheduler does) ...
    report = export_dataset(ExportConfig(os.fspath(src), os.fspath(tmp_path / "dask"),
                                         scheduler=cluster.scheduler_address, **kw))
    assert report.n_written == 10 and verify_dataset(tmp_path / "dask") == []
    assert _checksums(tmp_path / "serial") == _checksums(tmp_path / "dask")
    # ... and with a Client the studio already holds; a rerun resumes (nothing to redo).
    with distributed.Client(cluster) as client:
        export_dataset(ExportConfig(os.fspath(src), os.fspath(tmp_path / "dask2"), **kw), client=client)
        again = export_dataset(ExportConfig(os.fspath(src), os.fspath(tmp_path / "dask2"), **kw), client=client)
    assert again.n_written == 0 and again.n_skipped == 10
    assert _checksums(tmp_path / "serial") == _checksums(tmp_path / "dask2")


def test_bad_scheduler_address_is_a_clear_error(tmp_path, monkeypatch):
    from napari_lesionmix.errors import LesionMixError
    from napari_lesionmix.export import runners

    monkeypatch.setattr(runners, "DASK_CONNECT_TIMEOUT", "1s")

    src = tmp_path / "src"
    for k in range(2):
        write_case(make_case(seed=k, case_id=f"e{k}", shape=(16, 16, 16)), src)
    # n_folds=0: one case cannot fill folds, and the fold check now runs before the scheduler is reached.
    with pytest.raises(LesionMixError, match="Dask scheduler"):
        export_dataset(ExportConfig(os.fspath(src), os.fspath(tmp_path / "o"), n=1, n_folds=0,
                                    scheduler="tcp://127.0.0.1:9"))


def test_dask_worker_processes_match_serial(tmp_path):
    """Workers in other processes: the plan and tasks are pickled, files written there."""
    src = tmp_path / "src"
    for k in range(3):
        write_case(make_case(seed=60 + k, n_lesions=2, case_id=f"p{k}", shape=(16, 18, 14)), src)
    kw = dict(n=3, seed=4, n_folds=0)
    export_dataset(ExportConfig(os.fspath(src), os.fspath(tmp_path / "serial"), **kw))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:
        report = export_dataset(ExportConfig(os.fspath(src), os.fspath(tmp_path / "proc"),
                                             scheduler=c.scheduler_address, **kw))
    assert report.n_written == 3 and os.getpid() not in report.peak_rss_mb
    assert _checksums(tmp_path / "serial") == _checksums(tmp_path / "proc")
