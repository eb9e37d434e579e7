"""Export dock widget: write an nnU-Net v2 dataset of synthetic cases, with progress, cancel and a QA gallery.

Thin over :func:`napari_lesionmix.export.export_dataset`: the method mix
(relative weights of CarveMix, Soft-CP and LesionMix; a weight of 0 leaves a
method out), the number of cases, the root seed, the output folder, the local
worker processes and "overwrite" become an
:class:`~napari_lesionmix.export.ExportConfig`; the export runs in a
``thread_worker``. Its ``progress(done, total)`` callback (called from the
worker) only stores the counts, which a timer in the GUI thread copies into
the progress bar; "Cancel" sets the ``should_stop`` flag, which the export
polls between cases (finished cases stay, verified and resumable; no
``dataset.json`` is written, so the folder never looks complete). When the
export completes, the QA contact sheet
(:func:`~napari_lesionmix.export.render_gallery`) is rendered in the worker
and shown in the widget.

The source dataset is what the user loaded
(:meth:`~napari_lesionmix.widgets.state.StudioSession.source_dataset`): the
scanned folder, or the loaded pair's folder, or the sample data only when the
sample pair is loaded; otherwise Export is disabled and says what to load. Every
check of the settings, folds included, runs (:func:`precheck`) before the
worker starts, so a refused export leaves no folder behind.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment.registry import methods
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export import HARMONIZERS
from napari_lesionmix.widgets.controls import make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error, notify_info

#: Milliseconds between two copies of the progress counts into the bar.
POLL_MS = 100
#: Cases the dock's QA gallery shows (spread evenly over the export), one per row.
GALLERY_CASES = 12
#: Narrowest width (px) the gallery image is scaled to (it otherwise fills the dock's width).
GALLERY_MIN_WIDTH = 240


class _GalleryLabel(QLabel):
    """The QA contact sheet; a click reports where it landed, as fractions of the image."""

    def __init__(self, on_click):
        super().__init__()
        self._on_click = on_click

    def mousePressEvent(self, event):  # noqa: N802 (Qt API)
        pix = self.pixmap()
        if pix is not None and not pix.isNull() and pix.height() > 0:
            # The pixmap is centred horizontally and top-aligned in the label.
            y = event.position().y() if hasattr(event, "position") else event.y()
            self._on_click(min(max(y / pix.height(), 0.0), 1.0))
        super().mousePressEvent(event)


def precheck(config) -> None:
    """The export's settings checked on the GUI thread before the worker starts (folds included).

    :func:`~napari_lesionmix.export.check_settings`, the core's own checks that
    read no voxel; the worker's export runs the rest before its folder exists.
    A refused export so leaves no folder behind.
    """
    from napari_lesionmix.export import check_settings

    check_settings(config)


class ExportWidget(QWidget):
    """Export dock widget (Plugins > LesionMix > Export)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        self._cancel = threading.Event()
        self._counts = (0, 0)  # (done, total), written by the worker
        self.running = False
        self.report = None
        self.gallery_path: Path | None = None

        self.dataset_label = QLabel()
        self.dataset_label.setWordWrap(True)
        self.weights = {}
        mix = QGroupBox("Method mix (relative weights)")
        mf = QGridLayout(mix)
        # Every registered method, in its default settings; the first one is on by default.
        for k, method in enumerate(methods()):
            s = QDoubleSpinBox()
            s.setRange(0.0, 100.0)
            s.setSingleStep(0.5)
            s.setValue(1.0 if k == 0 else 0.0)
            s.setToolTip(f"Relative weight of {method.label}: {method.summary} (0 leaves it out)")
            self.weights[method.name] = s
            row, col = divmod(k, 2)  # two pairs a row: three made the dock 544 px in its 460 px column
            mf.addWidget(QLabel(method.label), row, 2 * col)
            mf.addWidget(s, row, 2 * col + 1)

        self.count = QSpinBox()
        self.count.setRange(1, 1_000_000)
        self.count.setValue(20)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.workers = QSpinBox()
        self.workers.setRange(1, max(os.cpu_count() or 1, 1))
        self.workers.setValue(1)
        self.out = QLineEdit()
        self.out.setPlaceholderText("output folder, e.g. .../nnUNet_raw/Dataset501_LesionMix")
        browse = QToolButton()
        browse.setText("...")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)
        self.overwrite = QCheckBox("overwrite a folder made with other settings")
        self.include_real = QCheckBox("copy the real cases too")
        # As the CLI's --harmonize, --holdout-fraction and --folds.
        self.harmonize = QComboBox()
        self.harmonize.addItems(["none", *HARMONIZERS])
        self.harmonize.setToolTip("harmonize inside each mixing mask (ARHNet: the shipped checkpoint, on the CPU)")
        self.holdout = QDoubleSpinBox()
        self.holdout.setRange(0.0, 0.9)
        self.holdout.setSingleStep(0.05)
        self.holdout.setToolTip("real cases held out: never a source, in no training fold")
        self.folds = QSpinBox()
        self.folds.setRange(0, 10)
        self.folds.setValue(5)
        self.folds.setToolTip("folds of splits_final.json (0: none; nnU-Net then draws its own)")
        form = QFormLayout()
        form.addRow(self.dataset_label)
        form.addRow("cases", self.count)
        form.addRow("seed", self.seed)
        form.addRow("workers", self.workers)
        form.addRow("output", out_row)
        form.addRow("harmonize", self.harmonize)
        form.addRow("hold-out fraction", self.holdout)
        form.addRow("folds", self.folds)
        form.addRow(self.overwrite)
        form.addRow(self.include_real)

        self.export_btn = QPushButton("Export")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_btn)
        buttons.addWidget(self.cancel_btn)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m cases")
        self.status = QLabel("Choose an output folder and press Export.")
        self.status.setWordWrap(True)
        self.gallery = _GalleryLabel(self._gallery_clicked)
        self.gallery.setToolTip("click a case to open its image and label in the viewer")
        self.gallery_cases: list[str] = []
        self.gallery.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self._gallery_pix: QPixmap | None = None
        self.gallery_area = QScrollArea()
        self.gallery_area.setWidget(self.gallery)
        self.gallery_area.setWidgetResizable(True)
        self.gallery_area.setMinimumHeight(220)
        self.gallery_area.setVisible(False)

        lay = QVBoxLayout(self)
        lay.addWidget(mix)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.gallery_area, 10)
        lay.addStretch(1)  # takes the space while no gallery is shown
        make_scrollable(self)

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._show_progress)
        self.export_btn.clicked.connect(self.export)
        self.cancel_btn.clicked.connect(self.cancel)
        bind(self, self.session.dataset_changed, self._show_dataset)
        bind(self, self.session.cases_changed, self._show_dataset)
        self._show_dataset()

    # -- settings --------------------------------------------------------------------
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export folder", self.out.text())
        if path:
            self.out.setText(path)

    def dataset_root(self) -> str:
        """The folder the export reads: what the user loaded (:meth:`StudioSession.source_dataset`)."""
        ds, why = self.session.source_dataset()
        if ds is None:
            raise LesionMixError(why)
        return ds.root

    def _show_dataset(self) -> None:
        ds, why = self.session.source_dataset()
        self.dataset_label.setText(f"source: {why}" if ds is not None else why)
        self.dataset_label.setStyleSheet("" if ds is not None else "color: #e0b050;")
        self.export_btn.setEnabled(ds is not None and not self.running)
        self.export_btn.setToolTip("" if ds is not None else why)

    def config(self):
        """The :class:`~napari_lesionmix.export.ExportConfig` of the controls (raises LesionMixError)."""
        from napari_lesionmix.export import ExportConfig

        methods = tuple((m, float(s.value())) for m, s in self.weights.items() if s.value() > 0)
        if not methods:
            raise LesionMixError("Give at least one method a weight above 0.")
        out = self.out.text().strip()
        if not out:
            raise LesionMixError("Choose an output folder for the export.")
        harmonize = self.harmonize.currentText()
        # The studio's intensity matching choice holds for what it exports, too.
        options = {m: {"intensity_match": self.session.intensity_match} for m, _ in methods}
        return ExportConfig(dataset=self.dataset_root(), out=out, n=int(self.count.value()), methods=methods,
                            seed=int(self.seed.value()), workers=int(self.workers.value()),
                            overwrite=self.overwrite.isChecked(), include_real=self.include_real.isChecked(),
                            harmonize=None if harmonize == "none" else harmonize,
                            holdout_fraction=float(self.holdout.value()), n_folds=int(self.folds.value()),
                            options=options)

    # -- run ---------------------------------------------------------------------------
    def export(self) -> None:
        """Start the export in a worker (progress bar, Cancel, then the QA gallery)."""
        if self.running:
            notify_error("An export is already running; cancel it first.")
            return
        try:
            config = self.config()
            precheck(config)
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            return
        from napari_lesionmix.export import export_dataset, render_gallery

        self._cancel.clear()
        self._counts = (0, config.n)
        self.report, self.gallery_path = None, None
        self.gallery_area.setVisible(False)
        self.running = True
        self.export_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setStyleSheet("")
        self.status.setText(f"Exporting {config.n} case(s) to '{config.out}'...")

        def _progress(done: int, total: int) -> None:
            self._counts = (int(done), int(total))

        def _work():
            report = export_dataset(config, progress=_progress, should_stop=self._cancel.is_set)
            # One case per row: the dock is narrow, a 3-column sheet would be unreadable there.
            png = render_gallery(report.out, GALLERY_CASES, columns=1) if report.complete else None
            return report, png

        def _finish():
            self._timer.stop()
            self._show_progress()
            self.running = False
            self.cancel_btn.setEnabled(False)
            self._show_dataset()

        def _done(result):
            _finish()
            report, png = result
            self.report = report
            if report.stopped:
                self.status.setText(
                    f"Cancelled: {report.n_written + report.n_skipped} of {report.n_total} case(s) are finished "
                    f"in '{report.out}' (no dataset.json yet); press Export again to resume.")
                notify_info("Export cancelled; finished cases are kept and a rerun resumes.")
                return
            self.status.setText(
                f"Wrote {report.n_written} case(s) (skipped {report.n_skipped} finished) to '{report.out}' in "
                f"{report.seconds:.1f} s; integrity check passed."
                + "".join(f"\nWarning: {w.removeprefix('warning: ')}" for w in report.warnings()))
            self.show_gallery(png)

        def _failed(exc):
            _finish()
            self._error(exc)

        self._timer.start()
        self.session.run(_work, on_done=_done, on_error=_failed, desc="Export", owner=self)

    def cancel(self) -> None:
        """Stop the export between cases (finished cases stay; a rerun resumes)."""
        if self.running:
            self._cancel.set()
            self.status.setText("Cancelling after the cases in progress...")

    def _show_progress(self) -> None:
        done, total = self._counts
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))

    def show_gallery(self, png) -> None:
        """Show the QA contact sheet PNG in the widget (one case per row; a click opens that case)."""
        from napari_lesionmix.export.gallery import gallery_cases

        pix = QPixmap(os.fspath(png))
        if pix.isNull():
            self._error(f"Could not read the QA gallery '{png}'.")
            return
        self.gallery_path = Path(png)
        self.gallery_cases = gallery_cases(Path(png).parent, GALLERY_CASES)
        self._gallery_pix = pix
        self.gallery_area.setVisible(True)
        self._fit_gallery()

    def _fit_gallery(self) -> None:
        """Scale the contact sheet to the scroll area's width (it scrolls vertically)."""
        if self._gallery_pix is None:
            return
        width = max(self.gallery_area.viewport().width() - 4, GALLERY_MIN_WIDTH)
        self.gallery.setPixmap(self._gallery_pix.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation))

    def _gallery_clicked(self, y_fraction: float) -> None:
        # Rows are equally tall (a title strip on top is small): the row under the click is the case.
        if self.gallery_cases:
            row = min(int(y_fraction * len(self.gallery_cases)), len(self.gallery_cases) - 1)
            self.open_case(self.gallery_cases[row])

    def open_case(self, case_id: str) -> None:
        """Open an exported case's image and label in the viewer (the reader keeps their geometry)."""
        if self.gallery_path is None:
            return
        root = self.gallery_path.parent
        viewer = self.session.viewer
        if viewer is None:
            return
        names = {"image": f"{case_id} image", "label": f"{case_id} label"}
        if all(n in viewer.layers for n in names.values()):  # opened before: show it again, not twice
            for n in names.values():
                viewer.layers[n].visible = True
            self.status.setText(f"Case '{case_id}' of '{root}' is open in the viewer.")
            return
        try:
            image = viewer.open(os.fspath(root / "imagesTr" / f"{case_id}_0000.nii.gz"), plugin="napari-lesionmix")
            label = viewer.open(os.fspath(root / "labelsTr" / f"{case_id}.nii.gz"), plugin="napari-lesionmix")
        except Exception as exc:  # napari wraps reader errors in its own types
            notify_error(f"Could not open case '{case_id}' of '{root}': {exc}")
            return
        # The studio's style: named by case and role, the label as a contour over the intensities it judges.
        for lyr in image:
            lyr.name = names["image"]
        for lyr in label:
            lyr.name = names["label"]
            if hasattr(lyr, "contour"):
                lyr.contour = 1
                lyr.opacity = 1.0
        self.status.setText(f"Opened case '{case_id}' of '{root}' in the viewer.")

    def resizeEvent(self, event):  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit_gallery()

    def _error(self, exc) -> None:
        self.status.setStyleSheet("color: #ff6b6b;")
        self.status.setText(str(exc))
