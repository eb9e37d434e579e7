"""LesionMix dock widget: the generic method dock plus the load histogram and the likelihood heat map.

Every setting is a field of :class:`~napari_lesionmix.augment.lesionmix.LesionMixOptions`
(the CLI's ``lesionmix lesionmix`` flags) and "Sample" draws through the
registry, as :class:`~.method.MethodDock` does. The training set is what the
user loaded (``session.source_dataset()``: the scanned folder, the loaded pair's
folder, or the sample data only when the sample pair is loaded; otherwise
"Sample" is disabled and the dock says what to load); the host is the loaded
pair's host. Per-case lesion loads, the lesion bank and the likelihood map are
computed once per dataset (in a worker) and kept in the session's cache.

The histogram shows the dataset's per-case loads (grey bars), the chosen
distribution's density (blue), the host's load (white) and the last sampled
target (orange) and reached load (green). The likelihood map is shown as an
``inferno`` heat-map layer with additive blending, in the host's display
orientation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment.lesion_load import DISTRIBUTIONS, LoadDistribution, dataset_loads
from napari_lesionmix.augment.lesionmix import LesionMixParams
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.widgets.controls import Collapsible
from napari_lesionmix.widgets.method import MethodDock
from napari_lesionmix.widgets.state import DATASET_KEY, ROLE_KEY, notify_error, notify_info

LIKELIHOOD_ROLE = "likelihood"
LIKELIHOOD_NAME = "lesion likelihood"
#: Distribution parameters a user may edit, per distribution.
EDITABLE = {"low": ("low", "high"), "medium": ("low", "high"), "high": ("low", "high"),
            "uniform": ("low", "high"), "gaussian": ("mean", "sd"), "real": ()}
#: The dock's start, not the Options' "real": the paper's "medium" load band (one visible place).
STUDIO_DISTRIBUTION = "medium"
#: Options the dataset-wide work depends on (lesion bank, likelihood map): the rest only draw.
PREPARED = ("connectivity", "likelihood", "sigma_mm")


class LoadHistogramPlot(QWidget):
    """Dataset loads, the distribution's density and the sampled target, drawn with QPainter."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.hist = None
        self.host_load: float | None = None
        self.target: float | None = None
        self.reached: float | None = None

    def set_state(self, hist, host_load=None, target=None, reached=None) -> None:
        self.hist, self.host_load, self.target, self.reached = hist, host_load, target, reached
        self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt API)
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(38, 41, 48))
        if self.hist is None:
            p.setPen(QPen(QColor(160, 160, 160)))
            p.drawText(6, 16, "no dataset loads yet")
            p.end()
            return
        edges, counts, dens = self.hist.edges, self.hist.dataset_counts, self.hist.density
        lo, hi = float(edges[0]), float(edges[-1])
        span = hi - lo or 1.0
        top, bottom = 16, h - 16
        plot_h = bottom - top

        def x_of(v):
            return (float(v) - lo) / span * (w - 8) + 4

        cmax = max(int(counts.max()), 1)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(120, 120, 130))
        for i, c in enumerate(counts):
            bh = plot_h * c / cmax
            p.drawRect(QRectF(x_of(edges[i]), bottom - bh, max(x_of(edges[i + 1]) - x_of(edges[i]) - 1, 1), bh))
        dmax = float(dens.max()) or 1.0
        p.setPen(QPen(QColor(80, 160, 255), 2))
        # The density as a step outline (it is a per-bin average).
        pts = []
        for i, d in enumerate(dens):
            y = bottom - plot_h * d / dmax
            pts += [QPointF(x_of(edges[i]), y), QPointF(x_of(edges[i + 1]), y)]
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            p.drawLine(a, b)
        for value, colour in ((self.host_load, QColor(235, 235, 235)), (self.target, QColor(255, 150, 60)),
                              (self.reached, QColor(110, 210, 110))):
            if value is not None:
                p.setPen(QPen(colour, 2))
                xv = min(max(x_of(value), 1), w - 2)
                p.drawLine(QPointF(xv, top - 4), QPointF(xv, bottom))
        p.setPen(QPen(QColor(200, 200, 200)))
        p.drawText(4, h - 3, f"{lo:.2f} mL")
        p.drawText(int(w - 60), h - 3, f"{hi:.2f} mL")
        p.drawText(4, 12, "cases")
        legend = [("density", QColor(80, 160, 255)), ("host", QColor(235, 235, 235)),
                  ("target", QColor(255, 150, 60)), ("reached", QColor(110, 210, 110))]
        x = 48
        for text, colour in legend:
            p.setPen(QPen(colour))
            p.drawText(x, 12, text)
            x += 8 * len(text) + 6
        p.end()


def _spin(lo, hi, value, step=0.1, decimals=2) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setSingleStep(step)
    s.setValue(value)
    return s


class TrainingSources:
    """The session as the registry's ``Sources``, with the dock's dataset as the training set.

    The lesion bank's dataset may be the loaded pair's folder or the shipped sample, not the
    scanned one; its cases are read when asked (the session caches the bank and their statistics).
    """

    def __init__(self, session, dataset):
        self.session, self.dataset = session, dataset

    def case(self, case_id: str):
        s = self.session
        for case in (s.host, s.donor):
            if case is not None and case.case_id == case_id:
                return case
        if case_id in self.dataset.case_ids:
            # Not cached: the bank holds the lesions, and the registry caches each case's brain statistics,
            # the one thing a sample reads of a whole source case (20 cases of 35 MB evicted the bank).
            return self.dataset[case_id].load()
        return s.case(case_id)

    def brain_mask(self, case_id: str):
        s = self.session
        for case, mask in ((s.host, s.host_brain_mask), (s.donor, s.donor_brain_mask)):
            if case is not None and case.case_id == case_id:
                return mask
        if case_id in self.dataset.case_ids:
            return self.cached(("brain", str(self.dataset.root), case_id),
                               lambda: self.dataset[case_id].load_brain_mask())
        return s.brain_mask(case_id)

    def training_set(self):
        return self.dataset

    def training_cases(self) -> None:
        return None  # the studio's training set is a scanned folder

    def cached(self, key, make):
        return self.session.cached(key, make)


class LesionMixWidget(MethodDock):
    """LesionMix dock widget (Plugins > LesionMix > LesionMix)."""

    METHOD = "lesionmix"
    CUSTOM = ("target_load", "load_dist", "dist_low", "dist_high", "dist_mean", "dist_sd")
    GROUPS = (
        ("Populate / inpaint", ("mode", "sigma_mm", "lesion_sampling"), True),
        # Rarely changed: the paper's defaults, one click away.
        ("Per-lesion transforms", ("angle_range_deg", "scale_range", "p_elastic", "brightness_range",
                                   "noise_range"), False),
    )
    LABELS = {"sigma_mm": "likelihood sigma (mm)", "angle_range_deg": "rotation (deg)",
              "scale_range": "resize factor", "p_elastic": "elastic probability",
              "brightness_range": "brightness factor", "noise_range": "noise sd (x sd)"}

    def __init__(self, napari_viewer, parent=None):
        self._dataset = None  # the dataset the loads below belong to
        self.loads: dict[str, float] | None = None
        super().__init__(napari_viewer, parent=parent)
        self.mode, self.sigma = self.controls["mode"].widget, self.controls["sigma_mm"].widget
        self.transforms_group = self.groups["Per-lesion transforms"]
        self.show_map_btn = QPushButton("Show likelihood map")
        self.show_map_btn.setToolTip("The likelihood map lesions are placed by, as a heat-map layer")
        form = self.groups["Populate / inpaint"].content.layout()
        form.addRow(self.show_map_btn)
        self.show_map_btn.clicked.connect(self.show_likelihood)
        self.refresh_dataset()

    def build_extras(self, layout: QVBoxLayout) -> None:
        """The target load: the distribution over the dataset's loads, or a direct target, and the histogram."""
        self.distribution = QComboBox()
        self.distribution.addItems(DISTRIBUTIONS)
        self.distribution.setCurrentText(STUDIO_DISTRIBUTION)
        self.distribution.setToolTip(self.method.Options.__dataclass_fields__["load_dist"].metadata["help"])
        self.dist_params = {
            "low": _spin(0.0, 1e5, 0.0, 0.5, 3), "high": _spin(0.0, 1e5, 1.0, 0.5, 3),
            "mean": _spin(0.0, 1e5, 1.0, 0.5, 3), "sd": _spin(0.0, 1e5, 1.0, 0.5, 3),
        }
        self.hist = LoadHistogramPlot()
        self.dataset_label = QLabel("dataset: -")
        self.dataset_label.setWordWrap(True)
        box = QWidget()
        df = QVBoxLayout(box)
        df.setContentsMargins(0, 0, 0, 0)
        df.addWidget(self.dataset_label)
        drow = QHBoxLayout()
        drow.addWidget(QLabel("distribution"))
        drow.addWidget(self.distribution, 1)
        df.addLayout(drow)
        grid = QGridLayout()  # two per row: the values need room for "123.456"
        for i, name in enumerate(("low", "high", "mean", "sd")):
            grid.addWidget(QLabel(f"{name} (mL)"), i // 2, 2 * (i % 2))
            grid.addWidget(self.dist_params[name], i // 2, 2 * (i % 2) + 1)
            self.dist_params[name].setMinimumWidth(90)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        df.addLayout(grid)
        # A direct target (issue 12): one number instead of a "uniform" distribution with low = high.
        self.direct = QCheckBox("direct target (mL)")
        self.direct.setToolTip("Reach this lesion load instead of drawing one from the distribution")
        self.target = _spin(0.0, 1e5, 1.0, 0.5, 3)
        self.target.setEnabled(False)
        trow = QHBoxLayout()
        trow.addWidget(self.direct)
        trow.addWidget(self.target, 1)
        df.addLayout(trow)
        df.addWidget(self.hist)
        layout.addWidget(Collapsible("Target lesion load", box, opened=True))
        self.distribution.currentTextChanged.connect(lambda _: self._reset_distribution())
        for spin in self.dist_params.values():
            spin.valueChanged.connect(lambda _: self._redraw())
        self.direct.toggled.connect(self._on_direct)
        self.target.valueChanged.connect(lambda v: self._redraw(target=v) if self.direct.isChecked() else None)
        self._enable_params()

    def extra_options(self) -> dict:
        """The target load's options: ``target_load``, or ``load_dist`` with the edited bounds."""
        if self.direct.isChecked():
            return {"target_load": float(self.target.value())}
        name = self.distribution.currentText()
        return {"load_dist": name, **{f"dist_{k}": float(self.dist_params[k].value()) for k in EDITABLE[name]}}

    # -- dataset -----------------------------------------------------------------
    def dataset(self):
        """The lesion bank's dataset: what the user loaded (:meth:`StudioSession.source_dataset`)."""
        ds, why = self.session.source_dataset()
        if ds is None:
            raise LesionMixError(why)
        return ds

    def ready(self) -> str | None:
        why = super().ready()
        if why is not None:
            return why
        ds, why = self.session.source_dataset()
        return why if ds is None else None

    def sources(self):
        return TrainingSources(self.session, self._dataset if self._dataset is not None else self.dataset())

    def _on_cases(self) -> None:
        super()._on_cases()
        if not hasattr(self, "hist"):
            return
        # A pair from another folder changes the bank's dataset; the same one keeps its loads.
        ds, _ = self.session.source_dataset()
        old = self._dataset
        if getattr(self, "show_map_btn", None) is not None and (
                ds is None or old is None or ds.root != old.root or ds.case_ids != old.case_ids):
            self.refresh_dataset()
        self._redraw()

    def refresh_dataset(self) -> None:
        """Read the dataset's per-case loads (labels only) in a worker; the bank is built lazily."""
        try:
            ds = self.dataset()
        except LesionMixError as exc:
            self._dataset, self.loads = None, None
            self.dataset_label.setText(str(exc))
            self.sample_btn.setEnabled(False)
            self.sample_btn.setToolTip(str(exc))
            return
        self.sample_btn.setEnabled(self.ready() is None)
        self._dataset, self.loads = ds, None
        _, why = self.session.source_dataset()
        self.dataset_label.setText(f"dataset: {why}")

        def _done(loads):
            if self._dataset is ds:
                self.loads = loads
                self._reset_distribution()

        def _failed(exc):
            self.status.setStyleSheet("color: #ff6b6b;")
            self.status.setText(str(exc))

        self.session.run(self._read_loads, ds, on_done=_done, on_error=_failed, desc="LesionMix: dataset loads",
                         owner=self)

    @staticmethod
    def _read_loads(ds) -> dict[str, float]:
        if len(ds) == 0:
            raise LesionMixError(f"Dataset '{ds.root}' has no labelled case; LesionMix needs lesions to mix.")
        return dataset_loads(ds)

    # -- distribution ------------------------------------------------------------
    def _enable_params(self) -> None:
        editable = EDITABLE[self.distribution.currentText()]
        for name, s in self.dist_params.items():
            s.setEnabled(name in editable and not self.direct.isChecked())

    def _reset_distribution(self) -> None:
        """Fill the parameter boxes with the dataset defaults of the chosen distribution."""
        self._enable_params()
        if not self.loads:
            self._redraw()
            return
        try:
            dist = LoadDistribution.from_dataset(self.loads, self.distribution.currentText())
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        for name in EDITABLE[dist.name]:
            s = self.dist_params[name]
            s.blockSignals(True)
            s.setValue(float(getattr(dist, name)))
            s.blockSignals(False)
        self._redraw()

    def current_distribution(self) -> LoadDistribution:
        """The chosen distribution with the edited parameters (raises LesionMixError)."""
        if not self.loads:
            raise LesionMixError("The dataset's lesion loads are not read yet (or the dataset has no case).")
        name = self.distribution.currentText()
        overrides = {k: float(self.dist_params[k].value()) for k in EDITABLE[name]}
        return LoadDistribution.from_dataset(self.loads, name, **overrides)

    def _on_direct(self, on: bool) -> None:
        """A direct target turns the distribution's controls off (they draw no target then)."""
        self.target.setEnabled(on)
        self.distribution.setEnabled(not on)
        self._enable_params()
        self._redraw(target=float(self.target.value()) if on else None)

    def _redraw(self, target=None, reached=None) -> None:
        try:
            dist = self.current_distribution()
        except LesionMixError:
            self.hist.set_state(None)
            return
        host_load = None
        if self.session.host is not None and self.session.host.label is not None:
            from napari_lesionmix.augment.lesion_load import lesion_load_ml

            host_load = lesion_load_ml(self.session.host.label, self.session.host.spacing)
        lo, hi = dist.support()
        for v in (host_load, target, reached):
            if v is not None:
                lo, hi = min(lo, v), max(hi, v)
        self.hist.set_state(dist.histogram(30, (lo, hi if hi > lo else lo + 1.0)), host_load, target, reached)

    # -- the registry's prepared work (worker side) ------------------------------------
    def resources(self, options):
        """LesionMix's prepared work: bank and likelihood map once per dataset (the session's cache),
        the target's distribution from the dock's loads."""
        ds = self._dataset
        key = (DATASET_KEY, str(ds.root), tuple(ds.case_ids), *(getattr(options, n) for n in PREPARED))
        # Prepared with the dataset's own distribution: the edited one only draws (below).
        base = dataclasses.replace(options, load_dist="real", target_load=None, dist_low=None, dist_high=None,
                                   dist_mean=None, dist_sd=None)
        res = self.session.cached(key, lambda: self.method.prepare(self.sources(), base))
        loads = self.loads if self.loads is not None else dataset_loads(ds)
        return dataclasses.replace(res, distribution=options.distribution(loads))

    def finish(self, synthetic):
        # Why inpainting stopped short, if it did ("one 45.0 mL lesion remains").
        return synthetic, self.method.shortfall(self.session.host, synthetic.params)

    # -- actions -------------------------------------------------------------------
    def sample(self) -> None:
        """Draw a target load and reach it (populate or inpaint) on the host, in a worker."""
        try:
            if self.session.host is None:
                raise LesionMixError("No host is loaded; use the Load widget first.")
            if not self.direct.isChecked():
                self.current_distribution()  # its own sentence for bounds that do not fit
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        super().sample()

    def show_likelihood(self) -> None:
        """Compute (once) and show the likelihood map as a heat-map layer over the host."""
        s = self.session
        if s.host is None or s.orientation is None:
            notify_error("No host is loaded; use the Load widget first (the heat map is drawn on its grid).")
            return
        if self._dataset is None:
            notify_error("No dataset: scan a dataset folder in the Load widget.")
            return
        try:
            options = self.options(target_load=1.0)  # the map does not depend on the target
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        s.run(lambda: self.resources(options).likelihood, on_done=self._show_map, desc="LesionMix: likelihood map",
              owner=self)

    def _show_map(self, lmap) -> None:
        s = self.session
        if s.host is None or s.viewer is None or lmap is None:
            return
        if lmap.shape != s.host.shape:
            notify_error(f"The likelihood map has shape {lmap.shape} but host '{s.host.case_id}' has "
                         f"{s.host.shape}; use a dataset on the host's grid.")
            return
        from napari_lesionmix.io.display import geometry_metadata

        o = s.orientation
        data = np.ascontiguousarray(o.to_display(lmap.values))
        top = float(data.max()) or 1.0
        layer = s.layer(LIKELIHOOD_ROLE)
        if layer is not None and layer.data.shape == data.shape:
            layer.data = data
            layer.contrast_limits = (0.0, top)
            return
        if layer is not None:
            s.viewer.layers.remove(layer)
        meta = {ROLE_KEY: LIKELIHOOD_ROLE,
                "lesionmix": geometry_metadata(s.host.affine, s.host.header, s.host.shape, None, "image")}
        s.viewer.add_image(data, name=LIKELIHOOD_NAME, scale=o.scale, translate=o.translate, colormap="inferno",
                           blending="additive", opacity=0.8, contrast_limits=(0.0, top), metadata=meta)

    def describe(self, syn) -> str:
        p: LesionMixParams = syn.params
        cap = int(self.controls["max_insertions"].value())
        text = p.report(max_insertions=cap)
        if not p.target_reached and cap and len(p.insertions) >= cap:
            text += "; raise 'max insertions' under More options to paste more"
        return text

    def show_result(self, result) -> None:
        syn, note = result if isinstance(result, tuple) else (result, None)
        p = syn.params
        self.status.setStyleSheet("" if p.target_reached else "color: #ffb060;")
        text = self.describe(syn) + (f": {note}." if note else "")
        self.status.setText(text)
        if not p.target_reached:
            notify_info(f"LesionMix: {text}")
        self._redraw(p.target_load_ml, p.reached_load_ml)
