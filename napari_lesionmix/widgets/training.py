"""The Harmonize dock's training part: the loss curve and the run (Train, Stop, the ETA).

:class:`TrainingMixin` holds the dock's training methods; the dock
(:class:`~napari_lesionmix.widgets.harmonize.HarmonizeWidget`) builds the controls they read
(``epochs``, ``batch``, ``patch``, ``per_case``, ``train_seed``, ``train_out``, ``train_btn``,
``stop_btn``, ``progress``, ``curve``, ``train_on``). Training runs
:func:`~napari_lesionmix.harmonize.train_harmonizer` in a worker; its per-step loss dicts arrive
through the callback and are drawn as they come (a timer in the GUI thread drains them); the bar
shows "epoch 3/20 · 41 % · about 2 min 10 s left" from the measured step times, and "Stop" ends
the run through ``should_stop``, which the core polls inside every layer's forward and backward
pass (the checkpoint keeps what was trained).
"""

from __future__ import annotations

import os
import time

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.harmonize.progress import Eta, format_duration, training_status
from napari_lesionmix.widgets.state import notify_error


class LossCurve(QWidget):
    """Generator and discriminator losses per step (log scale), validation marks (fMAE, and the
    cross-subject contrast error as green dots on a linear 0-1 axis when the run scores it)."""

    SERIES = (("loss_g", QColor(255, 150, 60)), ("loss_d", QColor(80, 160, 255)))

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.points: list[dict] = []  # step records
        self.val: list[dict] = []  # validation records

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
            return QPointF(
                left + (step - x0) / (x1 - x0) * (right - left),
                bottom - (np.log10(max(v, 1e-6)) - lo) / (hi - lo) * (bottom - top),
            )

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


class TrainingMixin:
    """The Harmonize dock's training methods (see the module docstring)."""

    # -- training ------------------------------------------------------------------
    def train_config(self):
        """The dock's settings over the shipped checkpoint's CPU recipe (``TrainConfig.cpu_recipe``)."""
        from napari_lesionmix.harmonize import TrainConfig

        return TrainConfig.cpu_recipe(
            epochs=int(self.epochs.value()),
            batch_size=int(self.batch.value()),
            patch_size=int(self.patch.value()),
            patches_per_case=int(self.per_case.value()),
            seed=int(self.train_seed.value()),
            device=self.device.currentText(),
            val_every=max(1, min(8, int(self.epochs.value()) // 3)),
        )

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
        self._train_eta, self.stop_seconds, self._train_stop_pressed = None, None, None
        self.train_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("loading the cases...")
        self._ok(f"Training on '{root}'...")
        area = getattr(self, "scroll_area", None)
        # The bar sits below the fold of a 1600x1000 studio: bring it into view.
        if area is not None:
            area.ensureWidgetVisible(self.progress)
        events = self._events

        def _log(msg: str) -> None:
            events.append({"log": msg})

        def _finish(*_):
            self._drain()
            self._timer.stop()
            if self._train_stop_pressed is not None:
                self.stop_seconds = time.perf_counter() - self._train_stop_pressed
            self.training = False
            self._show_training_set()
            self.stop_btn.setEnabled(False)

        def _done(result):
            _finish()
            self.train_result = result
            took = (
                ""
                if self.stop_seconds is None
                else f" (it stopped {self.stop_seconds:.1f} s after Stop)"
            )
            if result["out"] is None:
                self.progress.setRange(0, 1)
                self.progress.setFormat("stopped before training")
                self._ok(f"Training stopped while loading the cases{took}; nothing was written.")
                return
            self._harmonizers = {}
            self.checkpoint.setText(os.fspath(result["out"]))
            self.method.setCurrentIndex(self.method.findData("file"))
            val = result.get("val") or {}
            what = "stopped" if result["stopped"] else "finished"
            extra = (
                f"; validation fMAE {val['fmae']:.4f} (composite {val.get('composite_fmae', float('nan')):.4f})"
                if "fmae" in val
                else ""
            )
            if "contrast_error_mean" in val:
                extra += f", cross-subject contrast error {val['contrast_error_mean']:.3f}"
            if result.get("best_path"):
                extra += f"; best (epoch {result['best']['epoch']}) kept in '{result['best_path']}'"
            self.progress.setFormat(
                f"{what} · {result['epochs_done']} epoch(s) in {format_duration(result['seconds'])}"
            )
            self._ok(
                f"Training {what} after {result['epochs_done']} epoch(s) in {result['seconds']:.1f} s on "
                f"{self.device_used or '?'}{extra}{took}; checkpoint '{result['out']}'."
            )

        def _failed(exc):
            _finish()
            self.progress.setRange(0, 1)
            self._error(exc)

        self._timer.start()
        self.session.run(
            train_harmonizer,
            root,
            out,
            config,
            callback=events.append,
            should_stop=self._stop.is_set,
            log=_log,
            on_done=_done,
            on_error=_failed,
            desc="Harmonize: training ARHNet",
            owner=self,
        )

    def stop(self) -> None:
        """Ask the training run to stop (within a layer's forward or backward pass; it saves what it has)."""
        if self.training and not self._stop.is_set():
            self._train_stop_pressed = time.perf_counter()
            self.status.setText("Stopping...")
        self._stop.set()

    def _drain(self) -> None:
        """Move the training callback's records into the curve and the progress bar (GUI thread)."""
        events, n = self._events, len(self._events)
        batch, self._events[:n] = events[:n], []
        for rec in batch:
            if "log" in rec:
                msg = rec["log"]
                if msg.startswith("device "):
                    self.device_used = msg.split(";")[0][len("device ") :]
                    self.device_label.setText(f"device used: {self.device_used}")
                continue
            self.curve.add(rec)
            total = int(rec["epochs"]) * int(rec["n_steps"])
            self.progress.setRange(0, total)
            self.progress.setValue(min(int(rec["global_step"]), total))
            # A step: the ETA from the measured step times (validations included).
            if "elapsed" in rec:
                if self._train_eta is None:
                    self._train_eta = Eta(total)
                self._train_eta.update(int(rec["global_step"]), now=float(rec["elapsed"]))
            self.progress.setFormat(training_status(rec, self._train_eta))
