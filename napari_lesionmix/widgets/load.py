"""Load dock widget: a host/donor pair from files, from a dataset folder, or the sample pair.

Files are read and validated in a ``thread_worker`` (same grid, channels, a
lesion in the donor, a label for the host); the first problem is shown in the
widget in red and as a napari notification, with the core's one-sentence
message, and the session keeps the pair it had.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.dataset import CaseRecord, discover_dataset
from napari_lesionmix.io.nifti import check_same_grid, load_case
from napari_lesionmix.widgets.controls import PathField, make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error

OK_STYLE = "color: #7ec87e;"
ERROR_STYLE = "color: #ff6b6b;"


def load_pair_files(host_image: str, host_label: str, donor_image: str, donor_label: str):
    """Read and validate a pair given as four files; returns ``(host, donor, None, None, None, None)``."""
    fields = {"Host image": host_image, "Host label": host_label,
              "Donor image": donor_image, "Donor label": donor_label}
    for what, path in fields.items():
        if not str(path).strip():
            raise LesionMixError(f"{what} is empty; choose a NIfTI file.")
    host = load_case(host_image, host_label)
    donor = load_case(donor_image, donor_label)
    _validate(host, donor)
    return host, donor, None, None, None, None


def load_pair_records(host_rec: CaseRecord, donor_rec: CaseRecord):
    """Read and validate a pair of dataset cases.

    Returns ``(host, donor, host_rec, donor_rec, host_brain_mask, donor_brain_mask)``.
    """
    if host_rec.case_id == donor_rec.case_id:
        raise LesionMixError(f"Host and donor are both '{host_rec.case_id}'; choose two different cases.")
    host, donor = host_rec.load(), donor_rec.load()
    _validate(host, donor)
    return host, donor, host_rec, donor_rec, host_rec.load_brain_mask(), donor_rec.load_brain_mask()


def _validate(host, donor) -> None:
    if host.label is None:
        raise LesionMixError(f"Host case '{host.case_id}' has no label map; load its lesion label too.")
    donor.require_lesion("Donor")
    check_same_grid(host, donor)


class LoadWidget(QWidget):
    """Load dock widget (Plugins > LesionMix > Load)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        # Files
        self.host_image = PathField("host image (.nii.gz)")
        self.host_label = PathField("host lesion label")
        self.donor_image = PathField("donor image")
        self.donor_label = PathField("donor lesion label")
        self.load_files_btn = QPushButton("Load pair")
        files = QGroupBox("Host/donor files")
        ff = QFormLayout(files)
        ff.addRow("host image", self.host_image)
        ff.addRow("host label", self.host_label)
        ff.addRow("donor image", self.donor_image)
        ff.addRow("donor label", self.donor_label)
        ff.addRow(self.load_files_btn)
        # Dataset
        self.folder = PathField("dataset folder (nnU-Net, MSD or CASE + CASE_seg pairs)", mode="folder",
                                caption="Dataset folder")
        self.scan_btn = QPushButton("Scan folder")
        self.host_combo = QComboBox()
        self.donor_combo = QComboBox()
        self.load_dataset_btn = QPushButton("Load selected pair")
        ds = QGroupBox("Dataset folder")
        df = QFormLayout(ds)
        df.addRow(self.folder)
        df.addRow(self.scan_btn)
        df.addRow("host", self.host_combo)
        df.addRow("donor", self.donor_combo)
        df.addRow(self.load_dataset_btn)
        # Sample
        self.sample_btn = QPushButton("Load the sample pair")
        self.status = QLabel("No pair loaded.")
        self.status.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(files)
        lay.addWidget(ds)
        lay.addWidget(self.sample_btn)
        lay.addWidget(self.status)
        lay.addStretch(1)
        make_scrollable(self)

        self.load_files_btn.clicked.connect(self.load_files)
        self.scan_btn.clicked.connect(self.scan_folder)
        self.load_dataset_btn.clicked.connect(self.load_dataset_pair)
        self.sample_btn.clicked.connect(self.load_sample_pair)
        bind(self, self.session.dataset_changed, self._fill_combos)
        self._set_dataset_enabled(False)
        if self.session.dataset is not None:
            self._fill_combos()

    # -- messages ------------------------------------------------------------
    def _error(self, exc: Exception | str) -> None:
        msg = str(exc)
        self.status.setStyleSheet(ERROR_STYLE)
        self.status.setText(msg)

    def _ok(self, msg: str) -> None:
        self.status.setStyleSheet(OK_STYLE)
        self.status.setText(msg)

    def _set_dataset_enabled(self, on: bool) -> None:
        for w in (self.host_combo, self.donor_combo, self.load_dataset_btn):
            w.setEnabled(on)

    # -- actions -------------------------------------------------------------
    def _start(self, func, *args, what: str):
        self.status.setStyleSheet("")
        self.status.setText(f"Loading {what}...")
        return self.session.run(func, *args, on_done=self._installed, on_error=self._error,
                                desc=f"Loading {what}")

    def _installed(self, result) -> None:
        host, donor, host_rec, donor_rec, host_brain, donor_brain = result
        try:
            self.session.set_pair(host, donor, host_rec, donor_rec, host_brain, donor_brain)
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            return
        sx, sy, sz = host.spacing
        self._ok(f"Host '{host.case_id}' and donor '{donor.case_id}': grid {host.shape}, "
                 f"{sx:.2g} x {sy:.2g} x {sz:.2g} mm, {host.n_channels} channel(s).")

    def load_files(self):
        """Load the four files of the "Host/donor files" box."""
        args = (self.host_image.text(), self.host_label.text(),
                self.donor_image.text(), self.donor_label.text())
        return self._start(load_pair_files, *args, what="host/donor files")

    def scan_folder(self) -> None:
        """Discover the cases of the dataset folder (fast: lists files only)."""
        try:
            ds = discover_dataset(self.folder.text() or ".")
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            self.session.set_dataset(None)
            return
        self.session.set_dataset(ds)
        self._ok(f"Found {len(ds)} labelled case(s) ({ds.layout} layout) in '{ds.root}'.")

    def _fill_combos(self) -> None:
        ds = self.session.dataset
        for combo in (self.host_combo, self.donor_combo):
            combo.clear()
            if ds is not None:
                combo.addItems(ds.case_ids)
        if ds is not None and len(ds) > 1:
            self.donor_combo.setCurrentIndex(1)
        self._set_dataset_enabled(ds is not None and len(ds) > 0)

    def load_dataset_pair(self):
        """Load the host and donor chosen in the dataset combos."""
        ds = self.session.dataset
        if ds is None:
            msg = "Scan a dataset folder first."
            notify_error(msg)
            self._error(msg)
            return None
        host_rec = ds[self.host_combo.currentText()]
        donor_rec = ds[self.donor_combo.currentText()]
        return self._start(load_pair_records, host_rec, donor_rec, what=f"{host_rec.case_id}/{donor_rec.case_id}")

    def load_sample_pair(self):
        """Load the shipped sample pair (see :data:`napari_lesionmix._sample_data.PAIR`)."""
        from napari_lesionmix._sample_data import PAIR
        from napari_lesionmix.sample_data import sample_dataset

        try:
            ds = sample_dataset()
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            return None
        self.folder.setText(ds.root)
        self.session.set_dataset(ds)
        self.host_combo.setCurrentText(PAIR[0])
        self.donor_combo.setCurrentText(PAIR[1])
        return self.load_dataset_pair()
