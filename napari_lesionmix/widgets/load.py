"""Load dock widget: a host/donor pair from the viewer's layers, from files, a dataset folder, or the sample.

Layers opened with File > Open (our reader keeps each file's geometry in ``layer.metadata``)
are picked in four combo boxes and used as they are, without reading the files again.

Files are read and validated in a ``thread_worker`` (same grid, channels, a
lesion in the donor, a label for the host); the first problem is shown in the
widget in red and as a napari notification, with the core's one-sentence
message, and the session keeps the pair it had.

The "Intensity matching" box holds the studio's one toggle of the shared
``intensity_match`` option (``session.intensity_match``: every method dock
samples with it) and shows the host's and donor's normal-brain medians, in a
warning colour when they differ by more than 25 % and matching is off.
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

from napari_lesionmix.augment import intensity
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.dataset import CaseRecord, discover_dataset
from napari_lesionmix.io.display import case_from_layers
from napari_lesionmix.io.nifti import check_same_grid, load_case
from napari_lesionmix.widgets.controls import PathField, make_scrollable
from napari_lesionmix.widgets.state import ROLE_KEY, bind, get_session, notify_error

#: The four layer pickers: attribute name, label, napari layer type.
PICKERS = (("host_image_layer", "host image", "image"), ("host_label_layer", "host label", "labels"),
           ("donor_image_layer", "donor image", "image"), ("donor_label_layer", "donor label", "labels"))

OK_STYLE = "color: #7ec87e;"
ERROR_STYLE = "color: #ff6b6b;"
WARN_STYLE = "color: #e0b050;"
#: The intensity toggle's entries: mode, text.
MATCH_MODES = (("none", "none (the papers)"), ("brain-linear", "brain-linear (median, IQR)"),
               ("histogram", "histogram (Nyul-Udupa)"))


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


def load_pair_layers(host_image: dict, host_label: dict, donor_image: dict, donor_label: dict):
    """Build and validate a pair from four layers (see :func:`case_from_layers`); same return as files."""
    host = case_from_layers(host_image, host_label)
    donor = case_from_layers(donor_image, donor_label)
    _validate(host, donor)
    return host, donor, None, None, None, None


def same_case(host, donor) -> bool:
    """Host and donor are one scan (same id, same file, or the same voxels)."""
    if host.case_id == donor.case_id or (host.image_paths and host.image_paths == donor.image_paths):
        return True
    return host.image is donor.image


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
        # Layers already in the viewer
        layers_box = QGroupBox("From viewer layers")
        lf = QFormLayout(layers_box)
        for attr, text, _ in PICKERS:
            combo = QComboBox()
            combo.setToolTip(f"The {text} among the viewer's layers (File > Open)")
            setattr(self, attr, combo)
            lf.addRow(text, combo)
        self.load_layers_btn = QPushButton("Load pair from layers")
        lf.addRow(self.load_layers_btn)
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
        # The shared intensity step
        self.intensity_match = QComboBox()
        for mode, text in MATCH_MODES:
            self.intensity_match.addItem(text, mode)
        self.intensity_match.setCurrentIndex([m for m, _ in MATCH_MODES].index(self.session.intensity_match))
        self.intensity_match.setToolTip("Map the donor's intensities into the host's scale before mixing, fitted "
                                        "on normal brain (every method; recorded in the params)")
        self.medians = QLabel("Normal-brain medians: load a pair.")
        self.medians.setWordWrap(True)
        match_box = QGroupBox("Intensity matching")
        mf = QFormLayout(match_box)
        mf.addRow("donor into host", self.intensity_match)
        mf.addRow(self.medians)
        # Sample
        self.sample_btn = QPushButton("Load the sample pair")
        self.status = QLabel("No pair loaded.")
        self.status.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(layers_box)
        lay.addWidget(files)
        lay.addWidget(ds)
        lay.addWidget(self.sample_btn)
        lay.addWidget(match_box)
        lay.addWidget(self.status)
        lay.addStretch(1)
        make_scrollable(self)

        self.load_files_btn.clicked.connect(self.load_files)
        self.load_layers_btn.clicked.connect(self.load_layers)
        self._viewer = self.session.viewer
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed):
            ev.connect(self._fill_layer_pickers)
        self.destroyed.connect(lambda *_, ev=events, cb=self._fill_layer_pickers: (
            ev.inserted.disconnect(cb), ev.removed.disconnect(cb)))
        self._fill_layer_pickers()
        self.scan_btn.clicked.connect(self.scan_folder)
        self.load_dataset_btn.clicked.connect(self.load_dataset_pair)
        self.sample_btn.clicked.connect(self.load_sample_pair)
        bind(self, self.session.dataset_changed, self._fill_combos)
        self._stats = None
        self.intensity_match.currentIndexChanged.connect(
            lambda _: self.session.set_intensity_match(self.intensity_match.currentData()))
        bind(self, self.session.intensity_changed, self._on_intensity)
        bind(self, self.session.cases_changed, self._measure)
        if self.session.has_pair:
            self._measure()
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
                                desc=f"Loading {what}", owner=self)

    def _installed(self, result) -> None:
        host, donor, host_rec, donor_rec, host_brain, donor_brain = result
        try:
            self.session.set_pair(host, donor, host_rec, donor_rec, host_brain, donor_brain)
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            return
        sx, sy, sz = host.spacing
        msg = (f"Host '{host.case_id}' and donor '{donor.case_id}': grid {host.shape}, "
               f"{sx:.2g} x {sy:.2g} x {sz:.2g} mm, {host.n_channels} channel(s).")
        if same_case(host, donor):
            from napari.utils.notifications import show_warning

            warning = f"Host and donor are the same case '{host.case_id}'; its lesions will be pasted into itself."
            show_warning(warning)
            self.status.setStyleSheet(WARN_STYLE)
            self.status.setText(f"{warning} {msg}")
            return
        self._ok(msg)

    # -- intensity matching --------------------------------------------------
    def _measure(self) -> None:
        """Normal-brain statistics of the new pair, in a worker (they are cached for the intensity step)."""
        self._stats = None
        self.medians.setStyleSheet("")
        self.medians.setText("Normal-brain medians: measuring...")
        self.session.run_latest(self, self.session.pair_stats, on_done=self._stats_ready,
                                desc="Normal-brain statistics")

    def _stats_ready(self, stats) -> None:
        self._stats = stats
        self._show_medians()

    def _on_intensity(self, mode: str) -> None:
        i = self.intensity_match.findData(mode)
        if i != self.intensity_match.currentIndex():
            self.intensity_match.blockSignals(True)
            self.intensity_match.setCurrentIndex(i)
            self.intensity_match.blockSignals(False)
        self._show_medians()

    def _show_medians(self) -> None:
        s = self.session
        if self._stats is None or not s.has_pair:
            return
        host_stats, donor_stats = self._stats
        text, warn = intensity.medians_line(host_stats, donor_stats, s.host.case_id, s.donor.case_id,
                                            s.intensity_match)
        self.medians.setStyleSheet(WARN_STYLE if warn else "")
        self.medians.setText(text)

    # -- viewer layers -------------------------------------------------------
    def _fill_layer_pickers(self, *_) -> None:
        """List the viewer's image and labels layers (not the studio's own) in the four pickers."""
        from napari.layers import Image, Labels

        types = {"image": Image, "labels": Labels}
        layers = [lyr for lyr in self._viewer.layers if ROLE_KEY not in lyr.metadata]
        for k, (attr, _, kind) in enumerate(PICKERS):
            combo = getattr(self, attr)
            current = combo.currentText()
            names = [lyr.name for lyr in layers if isinstance(lyr, types[kind])]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            host_pick = getattr(self, PICKERS[k - 2][0]).currentText() if k >= 2 else None
            if host_pick == combo.currentText() and len(names) > 1:
                # A new layer arrived: the donor defaults to another scan than the host.
                combo.setCurrentIndex(1 if names[0] == host_pick else 0)
            combo.blockSignals(False)
        self.load_layers_btn.setEnabled(all(getattr(self, a).count() for a, _, _ in PICKERS))

    def _layer_values(self, attr: str) -> dict:
        name = getattr(self, attr).currentText()
        if name not in self._viewer.layers:
            raise LesionMixError(f"There is no layer '{name}' in the viewer; open the scans first (File > Open).")
        lyr = self._viewer.layers[name]
        return {"data": lyr.data, "metadata": dict(lyr.metadata), "scale": tuple(lyr.scale),
                "translate": tuple(lyr.translate), "name": lyr.name}

    def load_layers(self):
        """Load the pair chosen in the layer pickers (the files are not read again)."""
        try:
            args = [self._layer_values(attr) for attr, _, _ in PICKERS]
        except LesionMixError as exc:
            notify_error(str(exc))
            self._error(exc)
            return None
        return self._start(load_pair_layers, *args, what="host/donor layers")

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
