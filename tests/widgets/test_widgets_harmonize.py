"""Harmonize widget under Xvfb: HM / shipped ARHNet, before/after, corrupt checkpoint, tiny training."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

import napari_lesionmix.harmonize as harmonize_pkg
from napari_lesionmix.augment.carvemix import CarveMixParams, carvemix
from napari_lesionmix.harmonize import SHIPPED_CHECKPOINT, harmonize
from napari_lesionmix.widgets.harmonize import HarmonizeWidget, window_with_lesion

pytestmark = pytest.mark.gui


@pytest.fixture
def studio(studio):
    viewer, docks, session = studio("Load", "Harmonize", pair=None)
    assert isinstance(docks["Harmonize"], HarmonizeWidget)
    host, donor = session.host, session.donor
    session.set_synthetic(carvemix(host, donor, CarveMixParams(host.case_id, donor.case_id, 1.0)))
    yield viewer, docks["Harmonize"], session
    docks["Harmonize"].stop()  # a training still running ends before the shared teardown waits


def _method(w, key):
    w.method.setCurrentIndex([w.method.itemData(i) for i in range(w.method.count())].index(key))


def test_hm_and_before_after_toggle(studio, qtbot):
    viewer, w, session = studio
    before = session.synthetic
    layer = session.layer("synthetic_image")
    shown_before = layer.data.copy()
    _method(w, "hm")
    w.harmonize_btn.click()
    qtbot.waitUntil(lambda: w.after is not None and not session.busy, timeout=20000)
    after = session.synthetic
    assert after is w.after and w.before is before and after.params == before.params
    np.testing.assert_array_equal(after.image, harmonize(before.image, before.mask, "hm", label=before.label))
    m = before.mask > 0
    assert not np.array_equal(after.image[:, m], before.image[:, m])  # changed inside the mask
    np.testing.assert_array_equal(after.image[:, ~m], before.image[:, ~m])  # and only there
    shown_after = layer.data.copy()
    assert not np.array_equal(shown_after, shown_before)
    assert w.toggle_btn.isEnabled()
    w.toggle_btn.click()  # show before
    np.testing.assert_array_equal(layer.data, shown_before)
    assert w.toggle_btn.text() == "Show after"
    w.toggle_btn.click()  # and after again
    np.testing.assert_array_equal(layer.data, shown_after)
    assert "device used: cpu" in w.device_label.text()
    # A new synthetic from elsewhere ends the pair.
    session.set_synthetic(before)
    assert not w.toggle_btn.isEnabled() and w.after is None


@pytest.mark.skipif(not SHIPPED_CHECKPOINT.is_file(),
                    reason="the shipped checkpoint napari_lesionmix/harmonize/weights/arhnet_sample.pt is not built yet")
def test_shipped_arhnet(studio, qtbot, tmp_path):
    viewer, w, session = studio
    before = session.synthetic
    _method(w, "arhnet")
    w.device.setCurrentText("cpu")
    w.harmonize_btn.click()
    # While it runs the button is off (a second click cannot start a second run) and the dock's bar runs.
    assert not w.harmonize_btn.isEnabled() and w.work.running
    w.harmonize_btn.click()
    qtbot.waitUntil(lambda: w.after is not None and not session.busy, timeout=30000)
    qtbot.waitUntil(lambda: w.harmonize_btn.isEnabled() and not w.work.isVisible(), timeout=5000)
    m = before.mask > 0
    np.testing.assert_array_equal(w.after.image[:, ~m], before.image[:, ~m])
    assert w.device_used == "cpu" and "arhnet" in w.status.text()
    # Provenance records the harmonization: method, checkpoint hash, device (issue 12).
    assert session.harmonization["checkpoint_sha256"] and session.harmonization["device"] == "cpu"
    # The harmonized lesion stays inside the display window (issue 17: 98 % of it was above it).
    lo, hi = session.layer("synthetic_image").contrast_limits
    inside = (w.after.image[0][m] >= lo) & (w.after.image[0][m] <= hi)
    assert inside.mean() >= 0.99
    saved = w.save_checkpoint(str(tmp_path / "copy.pt"))
    assert saved.read_bytes() == SHIPPED_CHECKPOINT.read_bytes()


def test_corrupt_checkpoint_and_no_synthetic_are_notifications(studio, qtbot, tmp_path):
    viewer, w, session = studio
    before, n_layers = session.synthetic, len(viewer.layers)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch checkpoint")
    _method(w, "file")
    w.checkpoint.setText(str(bad))
    n = len(notification_manager.records)
    w.harmonize_btn.click()
    qtbot.waitUntil(lambda: len(notification_manager.records) > n and not session.busy, timeout=20000)
    msg = notification_manager.records[-1].message
    assert "bad.pt" in msg and not msg.startswith(("RuntimeError", "UnpicklingError"))
    assert session.synthetic is before and len(viewer.layers) == n_layers
    w.checkpoint.setText(str(tmp_path / "missing.pt"))
    w.harmonize()
    assert "does not exist" in notification_manager.records[-1].message
    session.synthetic = None
    _method(w, "hm")
    w.harmonize()
    assert "no synthetic case to harmonize" in notification_manager.records[-1].message


def test_tiny_training_draws_the_loss_curve_and_stops(studio, qtbot, tmp_path, monkeypatch, request):
    viewer, w, session = studio
    # Hand-shake with the worker: after its 2nd step it waits until Stop has been clicked, so the
    # stop lands before step 3 however fast the steps run (a whole epoch can beat the click).
    second_step, clicked, total_steps = threading.Event(), threading.Event(), []
    request.addfinalizer(clicked.set)  # a failed test must not leave the worker waiting
    train = harmonize_pkg.train_harmonizer

    def train_until_clicked(*args, callback, **kwargs):
        def cb(rec):
            callback(rec)
            if rec["global_step"] == 2:
                total_steps.append(rec["epochs"] * rec["n_steps"])
                second_step.set()
                clicked.wait(60)

        return train(*args, callback=cb, **kwargs)

    monkeypatch.setattr(harmonize_pkg, "train_harmonizer", train_until_clicked)
    # The dock says what it trains on, with the shipped model's CPU recipe.
    ds = session.dataset
    assert (f"'{ds.root}'" if ds is not None else "sample data") in w.train_on.text()
    recipe = harmonize_pkg.TrainConfig.cpu_recipe()
    assert (w.train_config().lr_g, w.train_config().gain_range, w.train_config().anchor) == (
        recipe.lr_g, recipe.gain_range, "host-lesions")
    w.epochs.setValue(1)
    w.batch.setValue(2)
    w.patch.setValue(16)
    w.per_case.setValue(1)
    w.device.setCurrentText("cpu")
    out = tmp_path / "tiny.pt"
    w.train_out.setText(str(out))
    w.train_btn.click()
    assert w.training and w.stop_btn.isEnabled() and not w.train_btn.isEnabled()
    qtbot.waitUntil(lambda: second_step.is_set() and len(w.curve.points) >= 2, timeout=60000)
    assert total_steps[0] > 2  # a step is left for the stop to skip
    w.stop_btn.click()
    clicked.set()
    qtbot.waitUntil(lambda: w.train_result is not None and not session.busy, timeout=60000)
    assert w.train_result["stopped"] and out.is_file()
    assert len(w.curve.points) == 2  # stopped before the 3rd step
    pts = w.curve.points
    assert [p["global_step"] for p in pts[:2]] == [1, 2] and all(np.isfinite(p["loss_g"]) for p in pts)
    assert w.progress.value() == len(pts) and w.progress.maximum() >= len(pts)
    assert w.device_used == "cpu" and not w.training and w.train_btn.isEnabled()
    # The trained checkpoint becomes the harmonizer.
    assert w.method.currentData() == "file" and w.checkpoint.text() == str(out)
    w.harmonize_btn.click()
    qtbot.waitUntil(lambda: w.after is not None and not session.busy, timeout=30000)
    assert str(out) in w.status.text()
    # Save it elsewhere, then load that copy back.
    copy = w.save_checkpoint(str(tmp_path / "copy.pt"))
    assert copy.read_bytes() == out.read_bytes()
    w.load_checkpoint(str(copy))
    qtbot.waitUntil(lambda: w.checkpoint.text() == str(copy) and not session.busy, timeout=30000)
    assert w.status.text().startswith(f"Loaded '{copy}': ARHNet, 1 channel(s)")


STUDIO_THREADS = r"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qtpy.QtWidgets import QApplication
from superqt.utils import thread_worker
import napari_lesionmix.widgets.state  # what every dock widget imports on the GUI thread

app = QApplication([])

def contour_in_worker():  # what the Export widget's QA gallery does
    import contourpy
    import numpy as np
    z = np.zeros((20, 20))
    z[5:10, 5:10] = 1
    contourpy.contour_generator(z=z).lines(0.5)

def arhnet_in_worker():  # what the Harmonize widget does next
    from napari_lesionmix.harmonize import load_harmonizer
    return load_harmonizer("arhnet", "cpu").params()["method"]

def second():
    w = thread_worker(arhnet_in_worker)()
    w.returned.connect(lambda r: (print("harmonizer", r, flush=True), app.quit()))
    w.start()

w = thread_worker(contour_in_worker)()
w.finished.connect(second)
w.start()
app.exec()
"""


def test_arhnet_loads_in_a_worker_after_the_gallery_drew_in_another():
    """Regression: pybind11 state first made in a finished worker crashed torch's start-up (segfault).

    In a subprocess, so that a crash fails this test instead of killing the test run.
    """
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", STUDIO_THREADS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "harmonizer arhnet"


def test_window_with_lesion_only_grows():
    img = np.zeros((1, 4, 4, 4), np.float32)
    m = np.zeros((4, 4, 4), bool)
    m[1:3, 1:3, 1:3] = True
    img[0][m] = 500.0
    assert window_with_lesion((0.0, 100.0), [img], m) == (0.0, 500.0)
    assert window_with_lesion((0.0, 900.0), [img], m) == (0.0, 900.0)  # never narrowed
    assert window_with_lesion((0.0, 100.0), [img], np.zeros_like(m)) == (0.0, 100.0)
