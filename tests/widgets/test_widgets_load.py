"""Load widget under Xvfb: files, dataset folder, and every validation error as a notification."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fill_pair
from factories import make_case, write_case
from napari.utils.notifications import notification_manager

pytestmark = pytest.mark.gui


@pytest.fixture
def studio(studio):
    viewer, docks, session = studio("Load")
    return viewer, docks["Load"], session


def _expect_error(qtbot, load, n_before: int, fragment: str):
    qtbot.waitUntil(lambda: len(notification_manager.records) > n_before, timeout=10000)
    msg = notification_manager.records[-1].message
    assert fragment in msg
    assert msg.count(". ") == 0 or msg.endswith(".")  # one sentence from the core
    qtbot.waitUntil(lambda: fragment in load.status.text(), timeout=5000)


def test_load_pair_from_files(studio, qtbot, pair_on_disk, host_case):
    viewer, load, session = studio
    fill_pair(load, pair_on_disk)
    load.load_files()
    qtbot.waitUntil(lambda: session.has_pair, timeout=10000)
    assert (session.host.case_id, session.donor.case_id) == ("host", "donor")
    assert "'host' and donor 'donor'" in load.status.text()
    host_layer = session.layer("host_image")
    np.testing.assert_allclose(session.orientation.to_original(host_layer.data), host_case.image[0])
    assert host_layer.metadata["lesionmix_role"] == "host_image"
    # The viewer's slider was moved to the crosshair, which sits on a donor lesion.
    z, y, x = session.cursor
    ijk = tuple(int(v) for v in session.orientation.original_index((z, y, x)))
    assert session.donor.label[ijk] != 0


def test_load_pair_from_dataset_folder(studio, qtbot, tmp_path):
    viewer, load, session = studio
    root = tmp_path / "ds"
    for s in range(3):
        write_case(make_case(seed=10 + s, case_id=f"c{s}"), root)
    load.folder.setText(str(root))
    load.scan_folder()
    assert [load.host_combo.itemText(i) for i in range(load.host_combo.count())] == ["c0", "c1", "c2"]
    assert "Found 3 labelled case(s)" in load.status.text()
    load.host_combo.setCurrentText("c2")
    load.donor_combo.setCurrentText("c0")
    load.load_dataset_pair()
    qtbot.waitUntil(lambda: session.has_pair, timeout=10000)
    assert (session.host.case_id, session.donor.case_id) == ("c2", "c0")
    assert session.host_record.case_id == "c2"


def test_missing_file_keeps_user_layers_and_pair(studio, qtbot, pair_on_disk):
    viewer, load, session = studio
    mine = viewer.add_image(np.ones((5, 5)), name="my layer")
    fill_pair(load, pair_on_disk)
    load.load_files()
    qtbot.waitUntil(lambda: session.has_pair and not session.busy, timeout=10000)
    before = session.host
    load.donor_label.setText(str(pair_on_disk["donor"]["label"]) + ".missing.nii.gz")
    n = len(notification_manager.records)
    load.load_files()
    _expect_error(qtbot, load, n, "does not exist")
    assert session.host is before
    assert "my layer" in viewer.layers and viewer.layers["my layer"] is not None
    assert mine.data.shape == (5, 5)
    assert session.layer("host_image") is not None


def test_grid_mismatch_is_reported(studio, qtbot, tmp_path):
    viewer, load, session = studio
    host = write_case(make_case(seed=1, case_id="h"), tmp_path)
    donor = write_case(make_case(seed=2, case_id="d", shape=(24, 28, 22)), tmp_path)
    fill_pair(load, {"host": host, "donor": donor})
    n = len(notification_manager.records)
    load.load_files()
    _expect_error(qtbot, load, n, "resample them to one grid first")
    assert not session.has_pair


def test_donor_without_lesion_is_reported(studio, qtbot, tmp_path):
    viewer, load, session = studio
    empty = make_case(seed=3, case_id="e")
    empty.label[:] = 0
    host = write_case(make_case(seed=1, case_id="h"), tmp_path)
    donor = write_case(empty, tmp_path)
    fill_pair(load, {"host": host, "donor": donor})
    n = len(notification_manager.records)
    load.load_files()
    _expect_error(qtbot, load, n, "has no lesion voxels")


def test_empty_field_and_bad_folder_and_same_case(studio, qtbot, tmp_path):
    viewer, load, session = studio
    n = len(notification_manager.records)
    load.load_files()
    _expect_error(qtbot, load, n, "Host image is empty")

    load.folder.setText(str(tmp_path / "nowhere"))
    n = len(notification_manager.records)
    load.scan_folder()
    _expect_error(qtbot, load, n, "does not exist")

    root = tmp_path / "ds"
    write_case(make_case(seed=4, case_id="only"), root)
    load.folder.setText(str(root))
    load.scan_folder()
    n = len(notification_manager.records)
    load.load_dataset_pair()  # host and donor combos both hold "only"
    _expect_error(qtbot, load, n, "choose two different cases")


def test_worker_errors_become_notifications(studio, qtbot):
    """Any failure in background work is a notification; other exceptions name their type."""
    from napari_lesionmix.errors import LesionMixError

    viewer, load, session = studio
    seen = []

    def bad(kind):
        raise LesionMixError("Donor 'x' is broken.") if kind == "ours" else RuntimeError("boom")

    for kind, want in (("ours", "Donor 'x' is broken."), ("other", "RuntimeError: boom")):
        n = len(notification_manager.records)
        session.run(bad, kind, on_error=seen.append, desc="test")
        qtbot.waitUntil(lambda n=n: len(notification_manager.records) > n and not session.busy, timeout=5000)
        assert notification_manager.records[-1].message == want
    assert [type(e).__name__ for e in seen] == ["LesionMixError", "RuntimeError"]
