"""LesionMix dock widget: load distribution and its histogram, likelihood heat map, populate/inpaint.

Thin over :mod:`napari_lesionmix.augment.lesionmix`. The dataset is what the
user loaded (``session.source_dataset()``: the scanned folder, the loaded pair's
folder, or the sample data only when the sample pair is loaded; otherwise
"Sample" is disabled and the dock says what to load); the host is the loaded pair's host. Per-case lesion loads, the
lesion bank and the likelihood map are computed once per dataset (in a
worker) and cached.

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
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.lesion_load import DISTRIBUTIONS, LoadDistribution, dataset_loads
from napari_lesionmix.augment.lesionmix import (
    LesionAugment,
    LesionMixParams,
    inpaint_shortfall,
    lesionmix,
    sample_lesionmix,
)
from napari_lesionmix.augment.lesions import LesionBank
from napari_lesionmix.augment.likelihood import likelihood_map
from napari_lesionmix.augment.params import BrainRecord
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.brain import case_brain
from napari_lesionmix.random import sample_rng
from napari_lesionmix.widgets.controls import Collapsible, WorkIndicator, make_scrollable
from napari_lesionmix.widgets.state import ROLE_KEY, bind, get_session, notify_error, notify_info

LIKELIHOOD_ROLE = "likelihood"
LIKELIHOOD_NAME = "lesion likelihood"
#: Distribution parameters a user may edit, per distribution.
EDITABLE = {"low": ("low", "high"), "medium": ("low", "high"), "high": ("low", "high"),
            "uniform": ("low", "high"), "gaussian": ("mean", "sd"), "real": ()}


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


class LesionMixWidget(QWidget):
    """LesionMix dock widget (Plugins > LesionMix > LesionMix)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        self.method = registry.get_method("lesionmix")
        self._sample_sources = None
        self._dataset = None  # the dataset the caches below belong to
        self.loads: dict[str, float] | None = None
        self.bank: LesionBank | None = None
        self._likelihood = {}  # sigma_mm -> LikelihoodMap
        self._sample_index = 0
        self.params: LesionMixParams | None = None

        # load distribution
        self.distribution = QComboBox()
        self.distribution.addItems(DISTRIBUTIONS)
        self.distribution.setCurrentText("medium")
        self.dist_params = {
            "low": _spin(0.0, 1e5, 0.0, 0.5, 3), "high": _spin(0.0, 1e5, 1.0, 0.5, 3),
            "mean": _spin(-1e5, 1e5, 1.0, 0.5, 3), "sd": _spin(0.0, 1e5, 1.0, 0.5, 3),
        }
        self.hist = LoadHistogramPlot()
        self.dataset_label = QLabel("dataset: -")
        self.dataset_label.setWordWrap(True)
        dist = QGroupBox("Target lesion load")
        df = QFormLayout(dist)
        df.addRow(self.dataset_label)
        df.addRow("distribution", self.distribution)
        grid = QGridLayout()  # two per row: the values need room for "123.456"
        for i, name in enumerate(("low", "high", "mean", "sd")):
            grid.addWidget(QLabel(f"{name} (mL)"), i // 2, 2 * (i % 2))
            grid.addWidget(self.dist_params[name], i // 2, 2 * (i % 2) + 1)
            self.dist_params[name].setMinimumWidth(90)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        df.addRow(grid)
        # A direct target (issue 12): one number instead of a "uniform" distribution with low = high.
        self.direct = QCheckBox("direct target (mL)")
        self.direct.setToolTip("Reach this lesion load instead of drawing one from the distribution")
        self.target = _spin(0.0, 1e5, 1.0, 0.5, 3)
        self.target.setEnabled(False)
        trow = QHBoxLayout()
        trow.addWidget(self.direct)
        trow.addWidget(self.target, 1)
        df.addRow(trow)
        df.addRow(self.hist)

        # mode and likelihood
        self.mode = QComboBox()
        self.mode.addItems(["auto", "populate", "inpaint"])
        self.mode.setToolTip("auto: populate above the host's load, inpaint below it")
        self.sigma = _spin(0.0, 50.0, 0.0, 0.5, 1)
        self.sigma.setToolTip("Gaussian smoothing of the likelihood map (mm; 0 = the paper's plain sum)")
        self.show_map_btn = QPushButton("Show likelihood map")
        place = QGroupBox("Populate / inpaint")
        pf = QFormLayout(place)
        pf.addRow("mode", self.mode)
        srow = QHBoxLayout()
        srow.addWidget(self.sigma, 1)
        srow.addWidget(self.show_map_btn)
        pf.addRow("likelihood sigma (mm)", srow)

        # per-lesion transforms
        d = LesionAugment()
        self.angle_max = _spin(0.0, 180.0, d.angle_range_deg[1], 5.0, 1)
        self.scale_lo = _spin(0.05, 5.0, d.scale_range[0], 0.05)
        self.scale_hi = _spin(0.05, 5.0, d.scale_range[1], 0.05)
        self.p_elastic = _spin(0.0, 1.0, d.p_elastic, 0.1)
        self.bright_lo = _spin(0.0, 5.0, d.brightness_range[0], 0.05)
        self.bright_hi = _spin(0.0, 5.0, d.brightness_range[1], 0.05)
        self.noise_max = _spin(0.0, 2.0, d.noise_range[1], 0.05)
        tf = QGroupBox("Per-lesion transforms")
        tff = QFormLayout(tf)
        tff.addRow("rotation max (deg)", self.angle_max)
        r = QHBoxLayout()
        r.addWidget(self.scale_lo)
        r.addWidget(QLabel("to"))
        r.addWidget(self.scale_hi)
        tff.addRow("resize factor", r)
        tff.addRow("elastic probability", self.p_elastic)
        r2 = QHBoxLayout()
        r2.addWidget(self.bright_lo)
        r2.addWidget(QLabel("to"))
        r2.addWidget(self.bright_hi)
        tff.addRow("brightness factor", r2)
        tff.addRow("noise sd max (x sd)", self.noise_max)

        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.sample_btn = QPushButton("Sample")
        self.status = QLabel("Load a host (Load widget) to mix into.")
        self.status.setWordWrap(True)
        act = QHBoxLayout()
        act.addWidget(QLabel("seed"))
        act.addWidget(self.seed, 1)
        act.addWidget(self.sample_btn)

        lay = QVBoxLayout(self)
        lay.addWidget(dist)
        lay.addWidget(place)
        # Rarely changed: the paper's defaults, one click away.
        self.transforms_group = Collapsible(tf.title(), tf)
        tf.setTitle("")
        lay.addWidget(self.transforms_group)
        lay.addLayout(act)
        self.work = WorkIndicator()
        lay.addWidget(self.work)
        lay.addWidget(self.status)
        lay.addStretch(1)
        make_scrollable(self)

        self.distribution.currentTextChanged.connect(lambda _: self._reset_distribution())
        for s in self.dist_params.values():
            s.valueChanged.connect(lambda _: self._redraw())
        self.sample_btn.clicked.connect(self.sample)
        self.direct.toggled.connect(self._on_direct)
        self.target.valueChanged.connect(lambda v: self._redraw(target=v) if self.direct.isChecked() else None)
        self.show_map_btn.clicked.connect(self.show_likelihood)
        bind(self, self.session.dataset_changed, self.refresh_dataset)
        bind(self, self.session.cases_changed, self._on_cases)
        bind(self, self.session.intensity_changed, self._on_intensity)
        replayers, mine = self.session.replayers, self.replay
        replayers["lesionmix"] = mine
        self.destroyed.connect(lambda *_: replayers.pop("lesionmix") if replayers.get("lesionmix") == mine else None)
        self._enable_params()
        self.refresh_dataset()

    # -- dataset -----------------------------------------------------------------
    def dataset(self):
        """The lesion bank's dataset: what the user loaded (:meth:`StudioSession.source_dataset`)."""
        ds, why = self.session.source_dataset()
        if ds is None:
            raise LesionMixError(why)
        return ds

    def _on_cases(self) -> None:
        # A pair from another folder changes the bank's dataset; the same one keeps its loads.
        ds, _ = self.session.source_dataset()
        if ds is None or getattr(self, "_dataset", None) is None or ds.root != self._dataset.root:
            self.refresh_dataset()
        self._redraw()

    def refresh_dataset(self) -> None:
        """Read the dataset's per-case loads (labels only) in a worker; the bank is built lazily."""
        try:
            ds = self.dataset()
        except LesionMixError as exc:
            self._dataset, self.loads, self.bank, self._likelihood = None, None, None, {}
            self.dataset_label.setText(str(exc))
            self.sample_btn.setEnabled(False)
            self.sample_btn.setToolTip(str(exc))
            return
        self.sample_btn.setEnabled(True)
        self.sample_btn.setToolTip("")
        self._dataset, self.loads, self.bank, self._likelihood = ds, None, None, {}
        _, why = self.session.source_dataset()
        self.dataset_label.setText(f"dataset: {why}")

        def _done(loads):
            if self._dataset is ds:
                self.loads = loads
                self._reset_distribution()

        def _failed(exc):
            self.status.setStyleSheet("color: #ff6b6b;")
            self.status.setText(str(exc))

        self.session.run(self._read_loads, ds, on_done=_done, on_error=_failed, desc="LesionMix: dataset loads", owner=self)

    @staticmethod
    def _read_loads(ds) -> dict[str, float]:
        if len(ds) == 0:
            raise LesionMixError(f"Dataset '{ds.root}' has no labelled case; LesionMix needs lesions to mix.")
        return dataset_loads(ds)

    # -- distribution ------------------------------------------------------------
    def _enable_params(self) -> None:
        editable = EDITABLE[self.distribution.currentText()]
        for name, s in self.dist_params.items():
            s.setEnabled(name in editable)

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
        for name, spin in self.dist_params.items():
            spin.setEnabled(not on and name in EDITABLE[self.distribution.currentText()])
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

    def augment(self) -> LesionAugment:
        d = LesionAugment()
        return LesionAugment(
            angle_range_deg=(min(d.angle_range_deg[0], float(self.angle_max.value())), float(self.angle_max.value())),
            scale_range=(float(self.scale_lo.value()), float(self.scale_hi.value())),
            p_elastic=float(self.p_elastic.value()),
            brightness_range=(float(self.bright_lo.value()), float(self.bright_hi.value())),
            noise_range=(0.0, float(self.noise_max.value())),
        )

    # -- caches (worker side) ------------------------------------------------------
    def _bank(self, ds) -> LesionBank:
        if self.bank is None or self._dataset is not ds:
            self.bank = LesionBank.from_dataset(ds)
        return self.bank

    def _likelihood_map(self, ds, sigma: float):
        if sigma not in self._likelihood:
            self._likelihood[sigma] = likelihood_map(ds, sigma_mm=sigma)
        return self._likelihood[sigma]

    # -- actions -------------------------------------------------------------------
    def show_likelihood(self) -> None:
        """Compute (once) and show the likelihood map as a heat-map layer over the host."""
        s = self.session
        if s.host is None or s.orientation is None:
            notify_error("No host is loaded; use the Load widget first (the heat map is drawn on its grid).")
            return
        ds, sigma = self._dataset, float(self.sigma.value())
        if ds is None:
            notify_error("No dataset: scan a dataset folder in the Load widget.")
            return
        s.run(self._likelihood_map, ds, sigma, on_done=self._show_map, desc="LesionMix: likelihood map", owner=self)

    def _show_map(self, lmap) -> None:
        s = self.session
        if s.host is None or s.viewer is None:
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

    def sample(self) -> None:
        """Draw a target load and reach it (populate or inpaint) on the host, in a worker."""
        s = self.session
        try:
            if s.host is None:
                raise LesionMixError("No host is loaded; use the Load widget first.")
            target = float(self.target.value()) if self.direct.isChecked() else None
            dist = None if target is not None else self.current_distribution()
            aug = self.augment()
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        host, brain, ds = s.host, s.host_brain_mask, self._dataset
        mode, sigma = self.mode.currentText(), float(self.sigma.value())
        seed, index = int(self.seed.value()), self._sample_index
        self._sample_index += 1

        def _work():
            bank = self._bank(ds)
            rng = sample_rng(seed, index)
            # The target is drawn first, so the mode is known before the map is needed.
            lmap = self._likelihood_map(ds, sigma) if mode != "inpaint" else None
            # The one brain region (the mask, else the estimate): lesions are pasted inside it.
            region = case_brain(host, brain)
            params = sample_lesionmix(rng, host, bank, lmap, target, distribution=dist, mode=mode,
                                      brain_mask=region.mask, augment=aug, on_unreachable="ignore", seed=seed,
                                      sample_index=index)
            params = dataclasses.replace(params, brain=BrainRecord(region.source, region.n_voxels))
            # The shared intensity step: each pasted lesion's case mapped into the host's scale.
            params = s.fit_intensity(self.method, params, self._sources(ds))
            return lesionmix(host, params, bank, region.mask), inpaint_shortfall(host, params)

        self._start(_work, f"Sampling (seed {seed}, index {index})")

    def _start(self, func, what: str) -> None:
        s = self.session
        self.status.setStyleSheet("")
        self.status.setText(f"{what}...")

        def _done(result):
            # A sample comes with why inpainting stopped short, if it did ("one 45.0 mL lesion remains").
            syn, note = result if isinstance(result, tuple) else (result, None)
            self.params = p = syn.params
            s.set_synthetic(syn)
            self.status.setStyleSheet("" if p.target_reached else "color: #ffb060;")
            text = p.report() + (f": {note}." if note else "")
            self.status.setText(text)
            if not p.target_reached:
                notify_info(f"LesionMix: {text}")
            self._redraw(p.target_load_ml, p.reached_load_ml)

        def _failed(exc):
            self.status.setStyleSheet("color: #ff6b6b;")
            self.status.setText(str(exc))

        worker = s.run_latest(self, func, on_done=_done, on_error=_failed, desc=f"LesionMix: {what.lower()}")
        self.work.track(worker, self.sample_btn)

    def replay(self, params: LesionMixParams) -> None:
        """Replay LesionMix params (Provenance widget) on the loaded host with this dataset's bank."""
        s = self.session
        if s.host is None:
            raise LesionMixError("No host is loaded; use the Load widget first.")
        host, brain, ds = s.host, s.host_brain_mask, self._dataset
        # lesionmix() applies each insertion's recorded intensity map (params.intensity).
        self._start(lambda: lesionmix(host, params, self._bank(ds), brain), "Replaying LesionMix params")

    def _sources(self, ds):
        """Where the fit finds the lesions' source cases: the session, or (shipped sample) the sample set."""
        s = self.session
        if ds is s.dataset:
            return s
        if self._sample_sources is None or self._sample_sources.training_set() is not ds:
            self._sample_sources = registry.LocalSources(training_set=ds)
        return self._sample_sources

    def _on_intensity(self, _mode: str) -> None:
        """Redo the shown LesionMix sample in the new mode: the same insertions, other intensity maps."""
        s = self.session
        syn = s.synthetic
        if syn is None or syn.params.method != self.method.name or s.host is None:
            return
        host, brain, ds = s.host, s.host_brain_mask, self._dataset
        self._start(lambda: lesionmix(host, s.fit_intensity(self.method, syn.params, self._sources(ds)),
                                      self._bank(ds), brain), "Matching intensities again")
