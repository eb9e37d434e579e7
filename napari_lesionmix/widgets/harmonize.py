"""Harmonize dock widget: ARHNet / Composite / HM on the current synthetic, training, before/after.

Thin over :mod:`napari_lesionmix.harmonize` (torch is imported only when a
model is loaded or trained, in the worker). "Harmonize" changes the current
synthetic image (``session.synthetic``) inside its mixing mask; the result
becomes the session's synthetic (same label, mask and params: the method's
params still replay the unharmonized sample; the harmonizer's settings are
shown in the status line), and "Show before" swaps the ``synthetic`` layer's
data (and the preview) between the unharmonized and harmonized image.

Training runs :func:`~napari_lesionmix.harmonize.train_harmonizer` on the
dataset the user loaded (the scanned folder, the loaded pair's folder, or the sample data
only when the sample pair is loaded; otherwise the button says what to load) in a worker; its per-step loss
dicts arrive through the callback and are drawn as they come (a timer in the
GUI thread drains them), and "Stop" ends the run through ``should_stop``
(the checkpoint keeps what was trained).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment.params import Synthetic
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import VolumePlanes
from napari_lesionmix.widgets.controls import PathField, WorkIndicator, make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error

METHODS = (("ARHNet (shipped checkpoint)", "arhnet"), ("ARHNet (checkpoint file)", "file"),
           ("Composite (no harmonization)", "composite"), ("Histogram matching to host lesions (HM)", "hm"),
           ("Histogram matching to the tissue ring", "hm-ring"))
DEVICES = ("auto", "cuda", "mps", "cpu")
#: Milliseconds between two drains of the training callback's queue.
POLL_MS = 100


def notify_warning(message: str) -> None:
    """Show ``message`` as a napari warning notification (never raises)."""
    from napari.utils.notifications import show_warning

    show_warning(str(message))


def window_with_lesion(window: tuple[float, float], images, mask: np.ndarray,
                       q: float = 99.5) -> tuple[float, float]:
    """``window`` widened (never narrowed) so that the mask's voxels of every image lie inside it.

    The studio's window comes from the host; a harmonized (or pasted) lesion
    brighter than the host's 99.5th percentile would show as a flat white blob,
    so the top grows to the ``q``-th percentile of the mask's voxels (and the
    bottom to the ``100 - q``-th), over the images given (before and after).
    """
    lo, hi = (float(v) for v in window)
    m = np.asarray(mask) > 0
    if m.any():
        for image in images:
            v = np.asarray(image)[0][m]
            a, b = (float(x) for x in np.percentile(v, (100.0 - q, q)))
            lo, hi = min(lo, a), max(hi, b)
    return lo, (hi if hi > lo else lo + 1.0)


class LossCurve(QWidget):
    """Generator and discriminator losses per step (log scale), validation marks (fMAE, and the
    cross-subject contrast error as green dots on a linear 0-1 axis when the run scores it)."""

    SERIES = (("loss_g", QColor(255, 150, 60)), ("loss_d", QColor(80, 160, 255)))

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.points: list[dict] = []  # step records
        self.val: list[dict] = []     # validation records

    def clear(self) -> None:
        self.points, self.val = [], []
        self.update()

    def add(self, rec: dict) -> None:
        (self.val if "val" in rec else self.points).append(rec)
        self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt API)
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(38, 41, 48))
        p.setPen(QPen(QColor(200, 200, 200)))
        if not self.points:
            p.drawText(6, 16, "loss curve: train to see it")
            p.end()
            return
        steps = np.array([r["global_step"] for r in self.points], float)
        top, bottom, left, right = 16, h - 14, 4, w - 4
        x0, x1 = steps.min(), max(steps.max(), steps.min() + 1)
        vals = np.array([[max(float(r[k]), 1e-6) for k, _ in self.SERIES] for r in self.points])
        logs = np.log10(vals)
        lo, hi = float(logs.min()), float(logs.max())
        hi = hi if hi > lo else lo + 1.0

        def xy(step, v):
            return QPointF(left + (step - x0) / (x1 - x0) * (right - left),
                           bottom - (np.log10(max(v, 1e-6)) - lo) / (hi - lo) * (bottom - top))

        for j, (_name, colour) in enumerate(self.SERIES):
            p.setPen(QPen(colour, 2))
            pts = [xy(s, v) for s, v in zip(steps, vals[:, j], strict=True)]
            if len(pts) == 1:
                p.drawEllipse(pts[0], 2, 2)
            for a, b in zip(pts[:-1], pts[1:], strict=True):
                p.drawLine(a, b)
        p.setPen(QPen(QColor(110, 210, 110), 1, Qt.PenStyle.DashLine))
        for r in self.val:
            x = xy(r["global_step"], 1.0).x()
            p.drawLine(QPointF(x, top), QPointF(x, bottom))
        p.setPen(QPen(QColor(110, 210, 110), 2))
        p.setBrush(QColor(110, 210, 110))
        for r in self.val:
            e = r["val"].get("contrast_error_mean")
            if e is not None and np.isfinite(e):
                x = xy(r["global_step"], 1.0).x()
                p.drawEllipse(QPointF(x, bottom - min(float(e), 1.0) * (bottom - top)), 3, 3)
        last = self.points[-1]
        p.setPen(QPen(QColor(255, 150, 60)))
        p.drawText(4, 12, f"G {last['loss_g']:.3g}")
        p.setPen(QPen(QColor(80, 160, 255)))
        p.drawText(84, 12, f"D {last['loss_d']:.3g}")
        p.setPen(QPen(QColor(200, 200, 200)))
        text = f"step {int(last['global_step'])}"
        if self.val:
            v = self.val[-1]["val"]
            text += f"   val fMAE {v.get('fmae', float('nan')):.4f}"
            if "contrast_error_mean" in v:
                text += f"   contrast err {v['contrast_error_mean']:.3f}"
        p.drawText(164, 12, text)
        p.drawText(4, h - 2, "log loss vs step")
        p.end()


CHECKPOINT_FILTER = "PyTorch checkpoint (*.pt *.pth *.ckpt)"


def _int_spin(lo, hi, value) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class HarmonizeWidget(QWidget):
    """Harmonize dock widget (Plugins > LesionMix > Harmonize)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        self.before: Synthetic | None = None  # the unharmonized synthetic
        self.after: Synthetic | None = None   # the harmonized one (session.synthetic while current)
        self.device_used: str | None = None
        self._harmonizers: dict = {}
        self._events: list[dict] = []  # filled by the training thread, drained by the timer
        self._stop = threading.Event()
        self.training = False
        self.train_result: dict | None = None

        # harmonize
        self.method = QComboBox()
        for text, key in METHODS:
            self.method.addItem(text, key)
        self.checkpoint = PathField("checkpoint (.pt) for 'ARHNet (checkpoint file)'", caption="Checkpoint",
                                    file_filter=CHECKPOINT_FILTER)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device_label = QLabel("device used: -")
        self.harmonize_btn = QPushButton("Harmonize")
        self.toggle_btn = QPushButton("Show before")
        self.toggle_btn.setCheckable(True)
        self.toggle_btn.setEnabled(False)
        self.toggle_btn.setToolTip("Swap the synthetic layer between the unharmonized and harmonized image")
        hb = QGroupBox("Harmonize the current synthetic")
        hf = QFormLayout(hb)
        hf.addRow("method", self.method)
        hf.addRow("checkpoint", self.checkpoint)
        drow = QHBoxLayout()
        drow.addWidget(self.device)
        drow.addWidget(self.device_label, 1)
        hf.addRow("device", drow)
        brow = QHBoxLayout()
        brow.addWidget(self.harmonize_btn)
        brow.addWidget(self.toggle_btn)
        hf.addRow(brow)
        # Harmonizing takes seconds (ARHNet on a CPU): a bar here, the button off until it is done.
        self.work = WorkIndicator()
        hf.addRow(self.work)

        # checkpoint files
        self.load_btn = QPushButton("Load checkpoint...")
        self.save_btn = QPushButton("Save checkpoint as...")
        crow = QHBoxLayout()
        crow.addWidget(self.load_btn)
        crow.addWidget(self.save_btn)

        # training
        # Defaults: the CPU recipe of the shipped checkpoint (TrainConfig.cpu_recipe), a useful model in minutes.
        self.epochs = _int_spin(1, 10000, 32)
        self.batch = _int_spin(1, 256, 16)
        self.patch = _int_spin(8, 256, 24)
        self.patch.setSingleStep(8)
        self.patch.setToolTip("Cubic patch side in voxels (a multiple of 8; 24 at 2 mm covers 48 mm, 64 at 1 mm is the paper's)")
        self.train_on = QLabel()
        self.train_on.setWordWrap(True)
        self.per_case = _int_spin(1, 1000, 16)
        self.train_seed = _int_spin(0, 2**31 - 1, 0)
        self.train_out = PathField("where to write the trained checkpoint", mode="save", caption="Checkpoint",
                                   file_filter=CHECKPOINT_FILTER)
        self.train_out.setText(os.path.join(tempfile.gettempdir(), "lesionmix_arhnet_studio.pt"))
        self.train_btn = QPushButton("Train on the loaded dataset")
        self.train_btn.setToolTip("Self-supervised ARHNet training on the dataset scanned in the Load dock "
                                  "(the sample data when none is); two cases are held out for the validation curve")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.curve = LossCurve()
        tb = QGroupBox("Train ARHNet on your data")
        tf = QFormLayout(tb)
        tf.addRow(self.train_on)
        # Two label/spin pairs a row: three in one row made the dock 491 px in its 460 px column.
        grid = QGridLayout()
        for k, (text, w) in enumerate((("epochs", self.epochs), ("batch", self.batch), ("patch", self.patch),
                                       ("patches/case", self.per_case), ("seed", self.train_seed))):
            grid.addWidget(QLabel(text), k // 2, 2 * (k % 2))
            grid.addWidget(w, k // 2, 2 * (k % 2) + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        tf.addRow(grid)
        tf.addRow("save to", self.train_out)
        trow = QHBoxLayout()
        trow.addWidget(self.train_btn)
        trow.addWidget(self.stop_btn)
        tf.addRow(trow)
        tf.addRow(self.progress)
        tf.addRow(self.curve)

        self.status = QLabel("Make a synthetic case (CarveMix, Soft-CP or LesionMix), then harmonize it.")
        self.status.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(hb)
        lay.addLayout(crow)
        lay.addWidget(tb)
        lay.addWidget(self.status)
        lay.addStretch(1)
        make_scrollable(self)  # issue 12: every dock scrolls, so the studio fits 1600x1000

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._drain)
        self.harmonize_btn.clicked.connect(self.harmonize)
        self.toggle_btn.toggled.connect(self.show_before)
        self.load_btn.clicked.connect(self._pick_checkpoint)
        self.save_btn.clicked.connect(self._pick_save)
        self.train_btn.clicked.connect(self.train)
        self.stop_btn.clicked.connect(self.stop)
        self.method.currentIndexChanged.connect(lambda _: self._sync_controls())
        bind(self, self.session.synthetic_changed, self._on_synthetic)
        bind(self, self.session.dataset_changed, self._show_training_set)
        bind(self, self.session.cases_changed, self._show_training_set)
        self._show_training_set()
        self._sync_controls()

    # -- helpers -------------------------------------------------------------------
    def _sync_controls(self) -> None:
        self.checkpoint.setEnabled(self.method.currentData() == "file")

    def spec(self) -> str:
        """The harmonizer to use: "arhnet", "composite", "hm" or a checkpoint path."""
        key = self.method.currentData()
        if key != "file":
            return key
        path = self.checkpoint.text()
        if not path:
            raise LesionMixError("Choose a checkpoint file for 'ARHNet (checkpoint file)'.")
        if not Path(path).is_file():
            raise LesionMixError(f"Checkpoint '{path}' does not exist.")
        return path

    def _error(self, exc) -> None:
        self.status.setStyleSheet("color: #ff6b6b;")
        self.status.setText(str(exc))

    def _ok(self, text: str) -> None:
        self.status.setStyleSheet("")
        self.status.setText(text)

    def _harmonizer(self, spec: str, device: str):
        """Load (once per file version and device) a harmonizer; runs in the worker."""
        from napari_lesionmix.harmonize import load_harmonizer

        key = (spec, device)
        if spec not in ("composite", "hm", "hm-ring"):
            from napari_lesionmix.harmonize import shipped_checkpoint

            p = shipped_checkpoint() if spec == "arhnet" else Path(spec)
            st = p.stat()
            key = (os.fspath(p.resolve()), st.st_mtime_ns, st.st_size, device)
        if key not in self._harmonizers:
            self._harmonizers = {key: load_harmonizer(spec, device)}
        return self._harmonizers[key]

    # -- harmonize -----------------------------------------------------------------
    def _on_synthetic(self) -> None:
        """A synthetic from elsewhere (a new sample) ends the before/after pair."""
        if self.session.synthetic is not self.after:
            self.before = self.after = None
            self.toggle_btn.blockSignals(True)
            self.toggle_btn.setChecked(False)
            self.toggle_btn.blockSignals(False)
            self.toggle_btn.setEnabled(False)

    def harmonize(self) -> None:
        """Harmonize ``session.synthetic`` inside its mask with the chosen method (in a worker)."""
        s = self.session
        try:
            syn = self.before if (self.before is not None and s.synthetic is self.after) else s.synthetic
            if syn is None:
                raise LesionMixError("There is no synthetic case to harmonize; make one with CarveMix, "
                                     "Soft-CP or LesionMix first.")
            spec = self.spec()
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            return
        device = self.device.currentText()
        self._ok(f"Harmonizing with {self.method.currentText()}...")

        spacing = s.host.spacing if s.host is not None else None

        def _work():
            import warnings

            from napari_lesionmix.harmonize import OutOfDomainWarning

            h = self._harmonizer(spec, device)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", OutOfDomainWarning)
                image = h.harmonize(syn.image, syn.mask, label=syn.label, spacing=spacing)
            note = next((str(w.message) for w in caught if issubclass(w.category, OutOfDomainWarning)), None)
            used = str(getattr(h, "device", "cpu"))
            return image, h.params(), used, note

        def _done(result):
            image, params, used, note = result
            if s.synthetic is not syn and s.synthetic is not self.after:
                return  # a newer sample replaced it meanwhile
            self.before = syn
            self.after = Synthetic(image=image, label=syn.label, mask=syn.mask, params=syn.params)
            self.device_used = used
            self.device_label.setText(f"device used: {used}")
            if self.toggle_btn.isChecked():
                self.toggle_btn.blockSignals(True)
                self.toggle_btn.setChecked(False)
                self.toggle_btn.blockSignals(False)
            s.set_synthetic(self.after, harmonization={**params, "device": used})
            self._show_window()
            self.toggle_btn.setEnabled(True)
            m = syn.mask > 0
            delta = float(np.abs(image[:, m] - syn.image[:, m]).mean()) if m.any() else 0.0
            self._ok(f"Harmonized with {params.get('method')} on {used}: mean |change| inside the mask "
                     f"{delta:.4g}." + (f" Checkpoint {params['checkpoint']}." if "checkpoint" in params else "")
                     + (f" {note}" if note else ""))
            if note:
                notify_warning(note)

        s.run(_work, on_done=_done, on_error=self._error, desc="Harmonize", owner=self,
              track=lambda worker: self.work.track(worker, self.harmonize_btn, self.load_btn))

    def show_before(self, before: bool) -> None:
        """Show the unharmonized (``True``) or harmonized image in the synthetic layer and preview."""
        s = self.session
        if self.before is None or self.after is None or s.synthetic is not self.after:
            return
        syn = self.before if before else self.after
        s.show_layer("synthetic_image", s.orientation.to_display(syn.image[0]), contrast_limits=self.window())
        s.set_preview(VolumePlanes(syn.image, syn.label, syn.mask, s.orientation))
        self.toggle_btn.setText("Show after" if before else "Show before")

    def window(self) -> tuple[float, float]:
        """The display window of the before/after pair: the studio's, widened to hold both lesions."""
        s = self.session
        if self.before is None or self.after is None:
            return s.window
        return window_with_lesion(s.window, (self.before.image, self.after.image), self.after.mask)

    def _show_window(self) -> None:
        lyr = self.session.layer("synthetic_image")
        if lyr is not None:
            lyr.contrast_limits = self.window()

    # -- checkpoints ---------------------------------------------------------------
    def _pick_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load ARHNet checkpoint", "",
                                              "PyTorch checkpoint (*.pt *.pth *.ckpt)")
        if path:
            self.load_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        """Check a checkpoint in a worker and make it the harmonizer ("ARHNet (checkpoint file)")."""
        device = self.device.currentText()
        self._ok(f"Loading checkpoint '{path}'...")

        def _done(h):
            self.checkpoint.setText(path)
            self.method.setCurrentIndex([k for _, k in METHODS].index("file"))
            self.device_used = str(h.device)
            self.device_label.setText(f"device used: {h.device}")
            cfg = h.model_config
            self._ok(f"Loaded '{path}': ARHNet, {cfg.in_channels} channel(s), base {cfg.base_channels}, "
                     f"depth {cfg.depth}, patch {h.patch_size}.")

        self.session.run(self._harmonizer, path, device, on_done=_done, on_error=self._error,
                         desc="Harmonize: load checkpoint", owner=self,
                         track=lambda worker: self.work.track(worker, self.harmonize_btn, self.load_btn))

    def _pick_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save ARHNet checkpoint", "",
                                              "PyTorch checkpoint (*.pt)")
        if path:
            self.save_checkpoint(path)

    def save_checkpoint(self, path: str) -> Path | None:
        """Copy the current checkpoint (trained, loaded or shipped) to ``path``, atomically."""
        from napari_lesionmix.io.atomic import write_bytes_atomic

        try:
            spec = self.spec()
            if spec in ("composite", "hm", "hm-ring"):
                raise LesionMixError(f"'{self.method.currentText()}' has no checkpoint to save.")
            if spec == "arhnet":
                from napari_lesionmix.harmonize import shipped_checkpoint

                spec = os.fspath(shipped_checkpoint())
            if Path(spec).resolve() == Path(path).resolve():
                raise LesionMixError(f"Checkpoint '{path}' is the file being saved; choose another path.")
            out = write_bytes_atomic(Path(spec).read_bytes(), path)
        except (LesionMixError, OSError) as exc:
            notify_error(str(exc))
            self._error(exc)
            return None
        self._ok(f"Saved the checkpoint to '{out}'.")
        return out

    # -- training ------------------------------------------------------------------
    def train_config(self):
        """The dock's settings over the shipped checkpoint's CPU recipe (``TrainConfig.cpu_recipe``)."""
        from napari_lesionmix.harmonize import TrainConfig

        return TrainConfig.cpu_recipe(epochs=int(self.epochs.value()), batch_size=int(self.batch.value()),
                                      patch_size=int(self.patch.value()), patches_per_case=int(self.per_case.value()),
                                      seed=int(self.train_seed.value()), device=self.device.currentText(),
                                      val_every=max(1, min(8, int(self.epochs.value()) // 3)))

    def _show_training_set(self, *_) -> None:
        ds, why = self.session.source_dataset()
        if ds is not None:
            self.train_on.setText(f"Trains on {why}.")
        else:
            self.train_on.setText(why)
        if not self.training:
            self.train_btn.setEnabled(ds is not None)
        self.train_btn.setToolTip("" if ds is not None else why)

    def _dataset_root(self) -> str:
        """The training set: what the user loaded (:meth:`StudioSession.source_dataset`)."""
        ds, why = self.session.source_dataset()
        if ds is None:
            raise LesionMixError(why)
        return ds.root

    def train(self) -> None:
        """Train ARHNet on the dataset in a worker; losses are drawn as they arrive."""
        from napari_lesionmix.harmonize import train_harmonizer

        if self.training:
            notify_error("A training run is already going; stop it first.")
            return
        try:
            config = self.train_config()
            root = self._dataset_root()
            out = self.train_out.text()
            if not out:
                raise LesionMixError("Choose where to save the trained checkpoint.")
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            return
        self._stop.clear()
        self._events = []
        self.curve.clear()
        self.train_result = None
        self.training = True
        self.train_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self._ok(f"Training on '{root}'...")
        events = self._events

        def _log(msg: str) -> None:
            events.append({"log": msg})

        def _finish(*_):
            self._drain()
            self._timer.stop()
            self.training = False
            self._show_training_set()
            self.stop_btn.setEnabled(False)

        def _done(result):
            _finish()
            self.train_result = result
            self._harmonizers = {}
            self.checkpoint.setText(os.fspath(result["out"]))
            self.method.setCurrentIndex([k for _, k in METHODS].index("file"))
            val = result.get("val") or {}
            what = "stopped" if result["stopped"] else "finished"
            extra = f"; validation fMAE {val['fmae']:.4f} (composite {val.get('composite_fmae', float('nan')):.4f})" \
                if "fmae" in val else ""
            if "contrast_error_mean" in val:
                extra += f", cross-subject contrast error {val['contrast_error_mean']:.3f}"
            if result.get("best_path"):
                extra += f"; best (epoch {result['best']['epoch']}) kept in '{result['best_path']}'"
            self._ok(f"Training {what} after {result['epochs_done']} epoch(s) in {result['seconds']:.1f} s on "
                     f"{self.device_used or '?'}{extra}; checkpoint '{result['out']}'.")

        def _failed(exc):
            _finish()
            self.progress.setRange(0, 1)
            self._error(exc)

        self._timer.start()
        self.session.run(train_harmonizer, root, out, config, callback=events.append,
                         should_stop=self._stop.is_set, log=_log, on_done=_done, on_error=_failed,
                         desc="Harmonize: training ARHNet", owner=self)

    def stop(self) -> None:
        """Ask the training run to stop before its next step (it saves what it has)."""
        self._stop.set()
        self.status.setText("Stopping after the current step...")

    def _drain(self) -> None:
        """Move the training callback's records into the curve and the progress bar (GUI thread)."""
        events, n = self._events, len(self._events)
        batch, self._events[:n] = events[:n], []
        for rec in batch:
            if "log" in rec:
                msg = rec["log"]
                if msg.startswith("device "):
                    self.device_used = msg.split(";")[0][len("device "):]
                    self.device_label.setText(f"device used: {self.device_used}")
                continue
            self.curve.add(rec)
            total = int(rec["epochs"]) * int(rec["n_steps"])
            self.progress.setRange(0, total)
            self.progress.setValue(min(int(rec["global_step"]), total))
