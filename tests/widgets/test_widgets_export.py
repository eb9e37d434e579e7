"""Export widget under Xvfb: three cases + gallery, cancel, refusals; its source is what the user loaded."""

from __future__ import annotations

import json

import pytest
from conftest import load_pair
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QPoint, Qt

from napari_lesionmix.widgets.export import ExportWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(studio):
    viewer, docks, session = studio("Export", "Load", pair=None)  # the sample pair: the sample data
    assert isinstance(docks["Export"], ExportWidget)
    yield viewer, docks["Export"], session
    docks["Export"].cancel()  # an export still running ends before the shared teardown waits


def test_export_three_cases_and_show_the_gallery(widget, qtbot, tmp_path):
    viewer, w, session = widget
    out = tmp_path / "Dataset900_Test"
    assert "sample_data" in w.dataset_label.text()
    w.count.setValue(3)
    w.seed.setValue(4)
    w.weights["carvemix"].setValue(2.0)
    w.weights["softcp"].setValue(1.0)
    w.out.setText(str(out))
    w.include_real.setChecked(True)  # 3 synthetic cases alone cannot fill nnU-Net's 5 folds
    w.export_btn.click()
    assert w.running and w.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: w.report is not None and not session.busy, timeout=60000)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 3 + 10
    assert len(list((out / "imagesTr").glob("lmx_*_0000.nii.gz"))) == 3
    assert len(list((out / "labelsTr").glob("*.nii.gz"))) == 13
    assert (w.progress.value(), w.progress.maximum()) == (13, 13)
    assert w.report.complete and w.report.n_written == 13
    assert w.gallery_path is not None and w.gallery_path.is_file() and not w.gallery_area.isHidden()
    assert not w.gallery.pixmap().isNull()
    assert "integrity check passed" in w.status.text()
    cfg = json.loads((out / "export_config.json").read_text())["settings"]
    assert cfg["methods"] == [["carvemix", 2.0], ["softcp", 1.0]] and cfg["seed"] == 4
    # The gallery names host <- donor per case, and a click on a row opens that case in the viewer.
    assert len(w.gallery_cases) == 12
    n_layers = len(viewer.layers)
    qtbot.mouseClick(w.gallery, Qt.MouseButton.LeftButton, pos=QPoint(20, w.gallery.pixmap().height() - 3))
    qtbot.waitUntil(lambda: len(viewer.layers) == n_layers + 2, timeout=20000)
    case = w.gallery_cases[-1]
    assert f"Opened case '{case}'" in w.status.text()
    # In the studio's style: named by case and role, the label a contour at full opacity.
    image, label = viewer.layers[f"{case} image"], viewer.layers[f"{case} label"]
    assert label.contour == 1 and label.opacity == 1.0 and image.data.shape == label.data.shape
    # A second click shows the open case again instead of stacking copies.
    qtbot.mouseClick(w.gallery, Qt.MouseButton.LeftButton, pos=QPoint(20, w.gallery.pixmap().height() - 3))
    assert len(viewer.layers) == n_layers + 2 and "is open in the viewer" in w.status.text()


def test_cancel_stops_with_no_partial_files(widget, qtbot, tmp_path):
    viewer, w, session = widget
    out = tmp_path / "cancelled"
    w.count.setValue(25)
    w.out.setText(str(out))
    w.export_btn.click()
    qtbot.waitUntil(lambda: w.progress.value() >= 1, timeout=60000)
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w.report is not None and not session.busy, timeout=60000)
    assert w.report.stopped and not (out / "dataset.json").exists()
    images = sorted(p.name[: -len("_0000.nii.gz")] for p in (out / "imagesTr").iterdir())
    labels = sorted(p.name[: -len(".nii.gz")] for p in (out / "labelsTr").iterdir())
    assert 1 <= len(images) < 25 and images == labels  # whole cases only: no temp or half-written file
    assert not any(p.name.startswith(".") for d in (out, out / "imagesTr", out / "labelsTr") for p in d.iterdir())
    assert "Cancelled" in w.status.text() and w.gallery_path is None and w.export_btn.isEnabled()


def test_refusals_are_notifications(widget, qtbot, tmp_path):
    viewer, w, session = widget
    w.export()
    assert "Choose an output folder" in notification_manager.records[-1].message
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("not an export")
    w.out.setText(str(busy))
    w.count.setValue(1)
    w.folds.setValue(0)
    n = len(notification_manager.records)
    w.export_btn.click()
    qtbot.waitUntil(lambda: len(notification_manager.records) > n and not session.busy, timeout=30000)
    assert "is not empty" in notification_manager.records[-1].message
    assert (busy / "notes.txt").read_text() == "not an export" and not w.running
    assert "is not empty" in w.status.text()
    for s in w.weights.values():
        s.setValue(0.0)
    w.export()
    assert "at least one method" in notification_manager.records[-1].message


def test_harmonization_holdout_folds_and_matching_reach_the_export(widget, tmp_path):
    """The dock offers what the CLI does: --harmonize, --holdout-fraction, --folds; the studio's matching holds."""
    viewer, w, session = widget
    w.out.setText(str(tmp_path / "Dataset902_Opts"))
    w.weights["softcp"].setValue(1.0)
    w.harmonize.setCurrentText("hm")
    w.holdout.setValue(0.2)
    w.folds.setValue(0)
    session.set_intensity_match("histogram")
    cfg = w.config()
    assert (cfg.harmonize, cfg.holdout_fraction, cfg.n_folds) == ("hm", 0.2, 0)
    assert cfg.options == {"carvemix": {"intensity_match": "histogram"}, "softcp": {"intensity_match": "histogram"}}
    w.harmonize.setCurrentText("none")
    assert w.config().harmonize is None


def test_the_source_is_what_the_user_loaded(studio, qtbot, pair_on_disk):
    """After a pair from files, Export reads the pair's folder, never the sample data; nothing loaded: disabled."""
    viewer, docks, session = studio("Export", "Load")
    w = docks["Export"]
    assert not w.export_btn.isEnabled() and "Load a pair or scan a dataset folder" in w.dataset_label.text()
    load_pair(qtbot, docks["Load"], session)  # the sample pair first, as a user starts
    assert w.export_btn.isEnabled() and "sample_data" in w.dataset_label.text()
    load_pair(qtbot, docks["Load"], session, pair_on_disk)
    folder = str(pair_on_disk["host"]["label"].parent)
    assert session.host.case_id == "host" and w.dataset_root() == folder
    assert folder in w.dataset_label.text() and "sample_data" not in w.dataset_label.text()


def test_folds_are_refused_before_any_case(widget, qtbot, tmp_path):
    """Folds that splits_final.json would refuse stop the export before its folder exists; the fix then runs."""
    viewer, w, session = widget
    out = tmp_path / "Dataset903_Folds"
    w.out.setText(str(out))
    w.count.setValue(2)
    w.folds.setValue(5)
    n = len(notification_manager.records)
    w.export_btn.click()
    assert len(notification_manager.records) > n and "Fold" in notification_manager.records[-1].message
    assert not w.running and not out.exists()
    w.folds.setValue(0)
    w.export_btn.click()
    qtbot.waitUntil(lambda: w.report is not None and not session.busy, timeout=60000)
    assert w.report.complete and (out / "dataset.json").is_file()
