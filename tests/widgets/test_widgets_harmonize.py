"""Harmonize widget under Xvfb: HM / shipped ARHNet, before/after, corrupt checkpoint, tiny training,
Cancel and Stop on work made slow enough to tell, the dock's width at 1600x1000."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

import napari_lesionmix.harmonize as harmonize_pkg
from napari_lesionmix.augment.carvemix import CarveMixParams, carvemix
from napari_lesionmix.harmonize import SHIPPED_CHECKPOINT, harmonize
from napari_lesionmix.widgets.harmonize import HarmonizeWidget, window_with_lesion
from napari_lesionmix.widgets.state import get_session

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
    # The bar says where the run is and, from the measured step times, how long it has left.
    assert w.progress.format().startswith("epoch 1/1 · ") and w.progress.format().endswith(" left")
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


class _Gated:
    """A harmonizer whose first progress report waits until the test has pressed Cancel."""

    def __init__(self, inner, reported, clicked, reports):
        self.inner, self.reported, self.clicked, self.reports = inner, reported, clicked, reports

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def harmonize(self, *args, progress, **kwargs):
        def report(done, total):
            progress(done, total)
            self.reports.append((done, total))
            self.reported.set()
            self.clicked.wait(60)

        return self.inner.harmonize(*args, progress=report, **kwargs)


@pytest.mark.skipif(not SHIPPED_CHECKPOINT.is_file(),
                    reason="the shipped checkpoint napari_lesionmix/harmonize/weights/arhnet_sample.pt is not built yet")
def test_cancel_mid_harmonization_changes_nothing(studio, qtbot, monkeypatch, request):
    viewer, w, session = studio
    before, shown = session.synthetic, session.layer("synthetic_image").data.copy()
    reported, clicked, reports = threading.Event(), threading.Event(), []
    request.addfinalizer(clicked.set)  # a failed test must not leave the worker waiting
    load = w._harmonizer
    monkeypatch.setattr(w, "_harmonizer", lambda spec, device: _Gated(load(spec, device), reported, clicked, reports))
    _method(w, "arhnet")
    w.device.setCurrentText("cpu")
    assert w.cancel_btn.isHidden()
    w.harmonize_btn.click()
    assert not w.cancel_btn.isHidden() and w.cancel_btn.isEnabled()
    # The first batch is done: the bar counts patches with the time left (shown in the GUI thread).
    qtbot.waitUntil(lambda: reported.is_set() and w.work.value() == reports[0][0], timeout=30000)
    done, total = reports[0]
    assert done < total, "the sample synthetic needs more than one batch of patches to cancel between"
    assert w.work.format().startswith(f"{done}/{total} · ") and not w.work.isHidden()
    w.cancel_btn.click()
    clicked.set()
    qtbot.waitUntil(lambda: not session.busy and w.cancel_btn.isHidden(), timeout=30000)
    assert len(reports) == 1  # stopped before the second batch
    assert "cancelled after" in w.status.text() and "as it was" in w.status.text()
    assert session.synthetic is before and w.after is None and not w.toggle_btn.isEnabled()
    np.testing.assert_array_equal(session.layer("synthetic_image").data, shown)
    assert session.harmonization is None or not session.harmonization  # no harmonization recorded
    assert w.cancel_seconds is not None and w.cancel_seconds <= 2.0
    assert w.harmonize_btn.isEnabled()
    # A Cancel does not outlive its run: the next one harmonizes to the end.
    monkeypatch.setattr(w, "_harmonizer", load)
    w.harmonize_btn.click()
    qtbot.waitUntil(lambda: w.after is not None and not session.busy, timeout=30000)
    assert session.synthetic is w.after


def test_training_stop_ends_the_run_within_two_seconds(studio, qtbot, tmp_path, monkeypatch, request):
    """From the second step on, the generator's forward pass runs until stopped (many short layers,
    as a slow 1 mm step on a CPU is): the run must end within 2 s of Stop, mid-step."""
    import torch

    import napari_lesionmix.harmonize.train as train_mod

    viewer, w, session = studio
    slow, released, entered = threading.Event(), threading.Event(), threading.Event()
    request.addfinalizer(released.set)

    class Tick(torch.nn.Module):  # one short layer: the stop hooks poll before each call
        def forward(self, x):
            entered.set()
            released.wait(0.02)
            return x

    class SlowGenerator(train_mod.Generator):
        def __init__(self, config):
            super().__init__(config)
            self.tick = Tick()

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            while slow.is_set() and not released.is_set():
                out = self.tick(out)
            return out

    monkeypatch.setattr(train_mod, "Generator", SlowGenerator)
    train = harmonize_pkg.train_harmonizer

    def slow_after_the_first_step(*args, callback, **kwargs):
        def cb(rec):
            callback(rec)
            slow.set()

        return train(*args, callback=cb, **kwargs)

    monkeypatch.setattr(harmonize_pkg, "train_harmonizer", slow_after_the_first_step)
    w.epochs.setValue(3)
    w.batch.setValue(2)
    w.patch.setValue(16)
    w.per_case.setValue(1)
    w.device.setCurrentText("cpu")
    out = tmp_path / "slow.pt"
    w.train_out.setText(str(out))
    w.train_btn.click()
    qtbot.waitUntil(lambda: entered.is_set() and len(w.curve.points) == 1, timeout=60000)
    assert w.progress.format().startswith("epoch 1/3 · ")
    pressed = time.perf_counter()
    w.stop_btn.click()
    qtbot.waitUntil(lambda: w.train_result is not None, timeout=10000)
    assert time.perf_counter() - pressed <= 2.0 and w.stop_seconds <= 2.0
    assert not released.is_set()  # the step never ended by itself: the Stop ended it
    assert w.train_result["stopped"] and out.is_file() and len(w.curve.points) == 1
    assert f"{w.stop_seconds:.1f} s after Stop" in w.status.text()
    qtbot.waitUntil(lambda: not session.busy and w.train_btn.isEnabled(), timeout=10000)


def test_the_dock_fits_460_px_at_1600x1000(make_napari_viewer, qtbot):
    """Issue 22: the Harmonize dock was 491 px wide (a horizontal scrollbar, spinboxes cut to 90 of 132 px)."""
    from qtpy.QtWidgets import QApplication, QComboBox, QSpinBox

    from napari_lesionmix.widgets.studio import open_studio

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    open_studio(viewer, load_sample=False)
    w = viewer.window.dock_widgets["Harmonize (napari-lesionmix)"]
    w.parent().raise_()
    qtbot.waitUntil(lambda: w.isVisible() and w.scroll_area.viewport().width() > 100, timeout=10000)
    QApplication.processEvents()
    area = w.scroll_area
    body = area.widget()
    assert w.parent().width() <= 460
    assert body.minimumSizeHint().width() <= area.viewport().width(), (body.minimumSizeHint(), area.viewport().size())
    qtbot.waitUntil(lambda: body.width() <= area.viewport().width(), timeout=5000)
    assert not area.horizontalScrollBar().isVisible()
    for box in (*body.findChildren(QSpinBox), *body.findChildren(QComboBox)):
        assert box.width() >= box.minimumSizeHint().width(), (box, box.width(), box.minimumSizeHint())
    qtbot.waitUntil(lambda: not get_session(viewer).busy, timeout=30000)  # the docks' start-up work
