"""Harmonize dock widget: ARHNet / Composite / HM on the current synthetic, training, before/after.

Thin over :mod:`napari_lesionmix.harmonize` (torch is imported only when a
model is loaded or trained, in the worker). "Harmonize" changes the current
synthetic image (``session.synthetic``) inside its mixing mask; the result
becomes the session's synthetic (same label, mask and params: the method's
params still replay the unharmonized sample; the harmonizer's settings are
shown in the status line), and "Show before" swaps the ``synthetic`` layer's
data (and the preview) between the unharmonized and harmonized image.
While it runs, the dock's bar counts patches (ARHNet) or components (HM) with
the time left, and "Cancel" stops it at the next batch: the synthetic case and
its layers stay as they were.

Training (:mod:`napari_lesionmix.widgets.training`) runs on the dataset the user
loaded (the scanned folder, the loaded pair's folder, or the sample data only
when the sample pair is loaded; otherwise the button says what to load), with
an ETA and a Stop that takes effect within a layer's pass.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Qt, QTimer, Signal
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
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment.params import Synthetic
from napari_lesionmix.errors import Cancelled, LesionMixError
from napari_lesionmix.harmonize.progress import Eta
from napari_lesionmix.io.display import VolumePlanes
from napari_lesionmix.widgets.controls import PathField, WorkIndicator, make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error
from napari_lesionmix.widgets.training import LossCurve, TrainingMixin

METHODS = (("ARHNet (shipped checkpoint)", "arhnet"), ("ARHNet (checkpoint file)", "file"),
           ("Composite (no harmonization)", "composite"), ("Histogram matching to host lesions (HM)", "hm"),
           ("Histogram matching to the tissue ring", "hm-ring"))
DEVICES = ("auto", "cuda", "mps", "cpu")
#: Milliseconds between two drains of the training callback's queue.
POLL_MS = 100
#: The widest the dock's content may need (issue 22: no dock wider than 460 px at 1600x1000).
MAX_WIDTH = 440


class _Relay(QObject):
    """Carries ``progress(done, total)`` from the worker thread to the GUI thread (a queued signal)."""

    progressed = Signal(int, int)


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


CHECKPOINT_FILTER = "PyTorch checkpoint (*.pt *.pth *.ckpt)"


def _int_spin(lo, hi, value) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class HarmonizeWidget(TrainingMixin, QWidget):
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
        self._cancel = threading.Event()  # replaced by a fresh one for every harmonization
        self._eta: Eta | None = None       # the running harmonization's, then the training's
        self._train_eta: Eta | None = None
        self._stop_pressed: float | None = None
        self._train_stop_pressed: float | None = None
        #: Seconds from the last Cancel / Stop press to the end of the work (None: not pressed).
        self.cancel_seconds: float | None = None
        self.stop_seconds: float | None = None
        self.training = False
        self.train_result: dict | None = None
        self._relay = _Relay(self)
        self._relay.progressed.connect(self._on_progress)

        # harmonize
        self.method = QComboBox()
        for text, key in METHODS:
            self.method.addItem(text, key)
            self.method.setItemData(self.method.count() - 1, text, Qt.ItemDataRole.ToolTipRole)
        # Sized to 22 characters, not to the longest entry (that made the dock 491 px wide); the list shows all.
        self.method.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method.setMinimumContentsLength(22)
        self.checkpoint = PathField("checkpoint (.pt) for 'ARHNet (checkpoint file)'", caption="Checkpoint",
                                    file_filter=CHECKPOINT_FILTER)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device_label = QLabel("device used: -")
        self.harmonize_btn = QPushButton("Harmonize")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the harmonization at the next batch of patches; the synthetic stays as it was")
        self.cancel_btn.setVisible(False)
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
        # Harmonizing takes seconds to a minute (ARHNet at 1 mm on a CPU): a bar here counting patches with
        # the time left, Cancel beside it, the buttons off until it is done.
        self.work = WorkIndicator()
        self.work.setMaximumHeight(18)
        wrow = QHBoxLayout()
        wrow.addWidget(self.work, 1)
        wrow.addWidget(self.cancel_btn)
        hf.addRow(wrow)

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
        self.per_case.setToolTip("Training patches drawn per case and epoch")
        self.progress.setFormat("not training")
        tb = QGroupBox("Train ARHNet on your data")
        tf = QFormLayout(tb)
        tf.addRow(self.train_on)
        # Two label/spinbox pairs a row (three spinboxes side by side were cut to 90 of their 132 px).
        grid = QGridLayout()
        spins = (("epochs", self.epochs), ("batch", self.batch), ("patch", self.patch),
                 ("per case", self.per_case), ("seed", self.train_seed))
        for k, (text, w) in enumerate(spins):
            label = QLabel(text)
            label.setToolTip(w.toolTip())
            grid.addWidget(label, k // 2, 2 * (k % 2))
            if w is self.train_seed:  # the widest box (ten digits) spans the row instead of widening a column
                grid.addWidget(w, k // 2, 1, 1, 3, Qt.AlignmentFlag.AlignLeft)
            else:
                grid.addWidget(w, k // 2, 2 * (k % 2) + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        grid.setHorizontalSpacing(4)
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
        self.cancel_btn.clicked.connect(self.cancel)
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
    def showEvent(self, event):  # noqa: N802 (Qt API)
        # Spinboxes' size hints grow with napari's stylesheet, applied after the layout first measured
        # them (the grid cut the seed box to 135 of its 144 px): pin each to its hint once styled.
        for spin in self.findChildren(QSpinBox):
            spin.setMinimumWidth(spin.minimumSizeHint().width())
        super().showEvent(event)

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
        cancel = self._cancel = threading.Event()  # a fresh flag: an earlier run's Cancel never stops this one
        relay = self._relay
        self._eta, self.cancel_seconds, self._stop_pressed = None, None, None

        def _report(done: int, total: int) -> None:
            try:
                relay.progressed.emit(done, total)
            except RuntimeError:  # the dock was closed (its Qt objects are gone): nobody waits for the result
                cancel.set()

        def _work():
            import warnings

            from napari_lesionmix.harmonize import OutOfDomainWarning

            h = self._harmonizer(spec, device)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", OutOfDomainWarning)
                try:
                    image = h.harmonize(syn.image, syn.mask, progress=_report, label=syn.label, spacing=spacing,
                                        should_stop=cancel.is_set)
                except Cancelled as exc:
                    return str(exc)  # not an error (superqt raises a returned exception): _done says so
            note = next((str(w.message) for w in caught if issubclass(w.category, OutOfDomainWarning)), None)
            used = str(getattr(h, "device", "cpu"))
            return image, h.params(spacing=spacing), used, note

        def _done(result):
            if isinstance(result, str):  # cancelled: nothing changes
                if self._stop_pressed is not None:
                    self.cancel_seconds = time.perf_counter() - self._stop_pressed
                took = "" if self.cancel_seconds is None else f" (it stopped {self.cancel_seconds:.1f} s after Cancel)"
                self._ok(f"{result}{took} The synthetic case is as it was.")
                return
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

        def _track(worker) -> None:
            self.work.track(worker, self.harmonize_btn, self.load_btn)
            self.cancel_btn.setEnabled(True)
            self.cancel_btn.setVisible(True)
            worker.finished.connect(self._harmonize_finished)

        s.run(_work, on_done=_done, on_error=self._error, desc="Harmonize", owner=self, track=_track)

    def cancel(self) -> None:
        """Stop the running harmonization at its next batch of patches (or component); nothing changes."""
        if self.cancel_btn.isHidden():  # nothing running (hidden, not merely off screen)
            return
        self._cancel.set()
        self._stop_pressed = time.perf_counter()
        self.cancel_btn.setEnabled(False)
        self._ok("Cancelling after the current batch of patches...")

    def _on_progress(self, done: int, total: int) -> None:
        """A harmonization's ``progress(done, total)``, arrived in the GUI thread: the bar and the time left."""
        if self._eta is None or self._eta.total != total:
            self._eta = Eta(total)
        self._eta.update(done)
        self.work.setRange(0, max(total, 1))
        self.work.setValue(min(done, total))
        self.work.setTextVisible(True)
        self.work.setFormat(f"{done}/{total} · {self._eta.text()}")
        self.work.setVisible(True)  # counted work shows at once

    def _harmonize_finished(self, *_) -> None:
        self._stop_pressed = None
        self.cancel_btn.setVisible(False)
        self.work.setRange(0, 0)  # back to the busy bar for the next (uncounted) work
        self.work.setTextVisible(False)

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
