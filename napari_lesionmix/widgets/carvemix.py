"""CarveMix dock widget: the lambda slider, its sampling distribution, "sample lambda".

The slider spans Eq. (7)'s admissible range ``[-|Dmin|/2, |Dmin|]`` and the
density of Eq. (7) is drawn under it. While the slider is dragged only the three
planes the preview shows are computed (:class:`~napari_lesionmix.augment.live.CarveMixPlanes`, a few
comparisons on the donor's cached :class:`CarveField`); on release (or after a
short pause for keyboard steps) the full volume is mixed in a ``thread_worker``
and the viewer's synthetic layers are updated.

In the per-lesion variant each lesion ``k`` gets ``lambda_k = t * |Dmin_k|``
for the slider's relative position ``t`` in ``[-1/2, 1]`` (the same fraction
of each lesion's own admissible range); "sample lambda" draws each
``lambda_k`` independently from Eq. (7) as :func:`sample_carvemix` does.

Samples are drawn and applied through the registry
(:func:`~napari_lesionmix.augment.registry.draw`,
:func:`~napari_lesionmix.augment.registry.apply_params`) with the session's
shared ``intensity_match`` mode, so the donor is pasted in the host's scale as
in the CLI and export, and a replay applies the map its params recorded. The
live planes hold the same mapped donor, so they equal the full result.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QImage, QPainter, QPen
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.carvemix import (
    CarveField,
    CarveMixOptions,
    CarveMixParams,
    lambda_density,
)
from napari_lesionmix.augment.intensity import IntensityMap, map_for
from napari_lesionmix.augment.live import CarveMixPlanes, LiveArrays
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.widgets.controls import make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error

#: Slider resolution: positions 0..STEPS map linearly onto [-1/2, 1] x |Dmin|.
STEPS = 600
T_LOW, T_HIGH = -0.5, 1.0
#: Pause (ms) after a non-drag slider change before the full volume is computed.
SETTLE_MS = 120


def t_of_position(pos: int) -> float:
    return T_LOW + (T_HIGH - T_LOW) * pos / STEPS


def position_of_t(t: float) -> int:
    return int(round((float(np.clip(t, T_LOW, T_HIGH)) - T_LOW) / (T_HIGH - T_LOW) * STEPS))


def lambdas_for(field: CarveField, t: float) -> float | tuple[float, ...]:
    """Lambda (mm) for the relative slider position ``t``: global, or one per lesion."""
    if field.per_lesion:
        return tuple(t * abs(f.d_min) for f in field.fields)
    return t * abs(field.d_min)


class DensityPlot(QWidget):
    """Eq. (7)'s density over the slider's range, with a marker at the current lambda."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(48)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.d_min = 0.0
        self.t = 0.0
        self.sampled: tuple[float, ...] = ()
        self.relative = False
        self._bars = None  # (key, QImage): the density drawn once per range and size, not per slider move

    def _density_image(self, w: int, h: int) -> QImage:
        """The density's bars and axis labels at ``w`` x ``h`` (cached: they only change with the range)."""
        key = (w, h, self.d_min, self.relative)
        if self._bars is not None and self._bars[0] == key:
            return self._bars[1]
        img = QImage(w, h, QImage.Format.Format_RGB32)
        img.fill(QColor(38, 41, 48))
        p = QPainter(img)
        d = abs(self.d_min)
        ts = np.linspace(T_LOW, T_HIGH, max(w, 2))
        dens = lambda_density(self.d_min, ts * d) * d  # density of t = lambda / |Dmin|
        top = float(dens.max()) or 1.0
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(80, 140, 220))
        for i, v in enumerate(dens):
            bh = (h - 14) * v / top
            p.drawRect(QRectF(i, h - 2 - bh, 1, bh))
        p.setPen(QPen(QColor(200, 200, 200)))
        x0 = (0 - T_LOW) / (T_HIGH - T_LOW) * w
        p.drawLine(QPointF(x0, 0), QPointF(x0, h))
        if self.relative:
            p.drawText(2, 11, "-|Dmin_k|/2")
            p.drawText(int(w - 60), 11, "|Dmin_k|")
        else:
            p.drawText(2, 11, f"{T_LOW * d:.1f} mm")
            p.drawText(int(w - 52), 11, f"{T_HIGH * d:.1f} mm")
        p.end()
        self._bars = (key, img)
        return img

    def set_state(self, d_min: float, t: float, sampled=(), relative: bool = False) -> None:
        """``relative``: per-lesion mode, the axis is in units of each lesion's |Dmin_k|."""
        self.d_min, self.t, self.sampled = float(d_min), float(t), tuple(sampled)
        self.relative = bool(relative)
        self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt API)
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(38, 41, 48))
        if self.d_min == 0:
            p.end()
            return
        p.drawImage(0, 0, self._density_image(w, h))
        p.setPen(QPen(QColor(255, 150, 60), 1))
        for t in self.sampled:
            xs = (t - T_LOW) / (T_HIGH - T_LOW) * w
            p.drawLine(QPointF(xs, h - 10), QPointF(xs, h))
        p.setPen(QPen(QColor(255, 220, 0), 2))
        xm = (self.t - T_LOW) / (T_HIGH - T_LOW) * w
        p.drawLine(QPointF(xm, 0), QPointF(xm, h))
        p.end()


class CarveMixWidget(QWidget):
    """CarveMix dock widget (Plugins > LesionMix > CarveMix)."""

    #: The slider's repaints stay out of napari's GL-composited window (widgets/docking.py).
    NATIVE_WINDOW = True

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        self.method = registry.get_method("carvemix")
        self.field: CarveField | None = None
        self._live: LiveArrays | None = None
        self.params: CarveMixParams | None = None
        self._sample_index = 0

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, STEPS)
        self.slider.setValue(position_of_t(0.0))
        self.slider.setToolTip("lambda: the signed-distance threshold of the carved ROI (Eq. 4)")
        self.lam_label = QLabel("lambda = -")
        self.density = DensityPlot()
        self.per_lesion = QCheckBox("per-lesion lambda")
        self.per_lesion.setToolTip("Give each connected lesion its own lambda from its own |Dmin|")
        self.auto_preview = QCheckBox("auto-preview on pair load")
        self.auto_preview.setChecked(True)
        self.auto_preview.setToolTip("Mix a CarveMix sample at the slider's lambda whenever a pair is loaded; "
                                     "off: only when you move the slider or sample")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(0)
        self.sample_btn = QPushButton("Sample lambda")
        self.swap_btn = QPushButton("Swap donor/host")
        self.status = QLabel("Load a host/donor pair first.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("seed", self.seed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.sample_btn)
        buttons.addWidget(self.swap_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(self.lam_label)
        layout.addWidget(self.slider)
        layout.addWidget(self.density)
        layout.addWidget(self.per_lesion)
        layout.addWidget(self.auto_preview)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)
        make_scrollable(self)

        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.compute_full)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(self.compute_full)
        self.per_lesion.toggled.connect(lambda _: self.rebuild_field())
        self.sample_btn.clicked.connect(self.sample_lambda)
        self.swap_btn.clicked.connect(self.swap)
        bind(self, self.session.cases_changed, self.rebuild_field)
        bind(self, self.session.intensity_changed, self._on_intensity)
        replayers, mine = self.session.replayers, self.replay
        replayers["carvemix"] = mine
        self.destroyed.connect(
            lambda *_: replayers.pop("carvemix") if replayers.get("carvemix") == mine else None)
        self._set_enabled(False)
        if self.session.has_pair:
            self.rebuild_field()

    # -- state ---------------------------------------------------------------
    def _set_enabled(self, on: bool) -> None:
        for w in (self.slider, self.sample_btn, self.swap_btn, self.per_lesion):
            w.setEnabled(on)

    @property
    def t(self) -> float:
        return t_of_position(self.slider.value())

    def current_params(self) -> CarveMixParams:
        """The slider's params, with the intensity map of the session's mode (what the full volume applies)."""
        s = self.session
        host, donor = s.require_pair()
        if self.field is None:
            raise LesionMixError("The donor's distance field is not ready yet.")
        lam = lambdas_for(self.field, self.t)
        if self.field.per_lesion:
            params = CarveMixParams(host.case_id, donor.case_id, None, lam, True, self.field.connectivity)
        else:
            params = CarveMixParams(host.case_id, donor.case_id, float(lam), (), False, self.field.connectivity)
        return s.fit_intensity(self.method, params)

    def _prepare(self, per_lesion: bool) -> CarveField:
        """The donor's field and both cases' normal-brain statistics (worker side: the slider needs both)."""
        field = self._field(per_lesion)
        self.session.pair_stats()
        return field

    def _resources(self, per_lesion: bool = False, connectivity: int = 26):
        """CarveMix's prepared work as the registry makes it; its fields live in the session's cache."""
        return self.method.prepare(self.session, CarveMixOptions(per_lesion=bool(per_lesion),
                                                                 connectivity=int(connectivity)))

    def _field(self, per_lesion: bool = False, connectivity: int = 26) -> CarveField:
        """The donor's :class:`CarveField` (computed once per donor and variant, shared with a replay)."""
        _, donor = self.session.require_pair()
        return self._resources(per_lesion, connectivity).field(donor)

    def _donor_map(self, params: CarveMixParams) -> IntensityMap | None:
        """The donor's recorded map, or ``None`` when it changes nothing (the live arrays need no copy)."""
        m = map_for(params.intensity, params.donor_id)
        return m if m is not None and m.mode != "none" else None

    def _on_intensity(self, _mode: str) -> None:
        """Redo the shown sample in the new mode: the same lambda(s), another intensity map."""
        s = self.session
        shown = s.synthetic.params if s.synthetic is not None else None
        if self.field is None or not s.has_pair or shown is None or shown.method != self.method.name:
            return  # no CarveMix sample shown: the next one takes the mode
        try:
            self._apply_params(s.fit_intensity(self.method, shown))
        except LesionMixError as exc:
            notify_error(str(exc))

    def rebuild_field(self) -> None:
        """(Re)compute or fetch the donor's field in a worker, then show lambda's range."""
        s = self.session
        if not s.has_pair:
            return
        # The old donor's field and planes must not serve a slider move before the new field is in.
        self.field, self._live, self.params = None, None, None
        self._settle.stop()
        per = self.per_lesion.isChecked()
        self._set_enabled(False)
        self.status.setText("Computing the donor's signed distance...")
        s.run_latest(self, self._prepare, per, on_done=self._field_ready, desc="CarveMix: donor distance field",
                     on_error=lambda _: self._set_enabled(s.has_pair))

    def _field_ready(self, field: CarveField) -> None:
        self.field = field
        self._live = None
        self.params = None  # sampled params belong to the previous pair or variant
        self._set_enabled(True)
        self._update_labels()
        self.status.setText(
            f"Donor '{self.session.donor.case_id}': {field.n_lesions if field.per_lesion else 'all'} "
            f"lesion field(s), |Dmin| = {abs(field.d_min):.2f} mm."
        )
        if self.auto_preview.isChecked():
            self.update_live()
            self.compute_full()

    def _update_labels(self, sampled=()) -> None:
        if self.field is None:
            return
        lam = lambdas_for(self.field, self.t)
        if self.field.per_lesion:
            self.lam_label.setText(
                f"lambda_k = {self.t:+.3f} x |Dmin_k|  ({len(lam)} lesions, "
                f"{min(lam):.2f} .. {max(lam):.2f} mm)")
        else:
            lo, hi = self.field.lambda_range
            self.lam_label.setText(f"lambda = {lam:+.2f} mm   (range {lo:.2f} .. {hi:.2f} mm)")
        self.density.set_state(self.field.d_min, self.t, sampled, self.field.per_lesion)

    # -- slider --------------------------------------------------------------
    def _on_slider(self, _value: int) -> None:
        self.params = None
        self._update_labels()
        self.update_live()
        if not self.slider.isSliderDown():
            self._settle.start()  # keyboard/wheel steps: full volume once they pause

    def update_live(self, params: CarveMixParams | None = None) -> None:
        """Show the three preview planes for the current lambda (cheap; every slider move)."""
        s = self.session
        if self.field is None or not s.has_pair:
            return
        try:
            params = params if params is not None else self.current_params()
            imap = self._donor_map(params)
            if self._live is None or not self._live.matches(s.host, s.donor, self.field, imap):
                self._live = LiveArrays(s.host, s.donor, s.orientation, self.field, imap)
            s.set_preview(CarveMixPlanes(self._live, self._lam_of(params)))
        except LesionMixError as exc:
            notify_error(str(exc))

    def _lam_of(self, params: CarveMixParams):
        return params.lesion_lams if params.per_lesion else params.lam

    def compute_full(self, params: CarveMixParams | None = None) -> None:
        """Mix the full volume in a worker and update the viewer's synthetic layers."""
        s = self.session
        if self.field is None or not s.has_pair:
            return
        self._settle.stop()
        try:
            params = params or self.params or self.current_params()
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        resources = self._resources(self.field.per_lesion, self.field.connectivity)
        s.run_latest(self, registry.apply_params, self.method, s.inputs(), params, resources,
                     on_done=s.set_synthetic, desc="CarveMix: full volume")

    # -- buttons -------------------------------------------------------------
    def sample_lambda(self) -> CarveMixParams | None:
        """Draw lambda from Eq. (7) as sample (seed, index) of :func:`registry.draw` (as every face);
        the index advances per press."""
        s = self.session
        if self.field is None or not s.has_pair:
            notify_error("No host/donor pair is loaded; use the Load widget first.")
            return None
        seed, f = int(self.seed.value()), self.field
        options = CarveMixOptions(per_lesion=f.per_lesion, connectivity=f.connectivity,
                                  intensity_match=s.intensity_match)
        try:
            params = registry.draw(self.method, seed, self._sample_index, s.inputs(), options,
                                   self._resources(f.per_lesion, f.connectivity), sources=s)
        except LesionMixError as exc:
            notify_error(str(exc))
            return None
        self._sample_index += 1
        self._apply_params(params)
        return params

    def sample(self) -> None:
        """Shift+S (:mod:`~napari_lesionmix.widgets.shortcuts`): "Sample lambda"."""
        self.sample_lambda()

    def _apply_params(self, params: CarveMixParams) -> None:
        """Set the slider (without recomputing) and compute ``params`` exactly."""
        f = self.field
        if params.per_lesion:
            ts = [lam / abs(fk.d_min) for lam, fk in zip(params.lesion_lams, f.fields, strict=True)]
            t = float(np.mean(ts))
        else:
            ts = []
            t = params.lam / abs(f.d_min)
        self.slider.blockSignals(True)
        self.slider.setValue(position_of_t(t))
        self.slider.blockSignals(False)
        self.params = params
        self._update_labels(sampled=ts)
        if params.per_lesion:
            self.lam_label.setText(f"sampled {len(ts)} per-lesion lambdas "
                                   f"({min(params.lesion_lams):.2f} .. {max(params.lesion_lams):.2f} mm)")
        else:
            self.lam_label.setText(f"lambda = {params.lam:+.2f} mm (sampled, index {params.sample_index})")
        self.update_live(params)
        self.compute_full(params)

    def swap(self) -> None:
        try:
            self.session.swap()
        except LesionMixError as exc:
            notify_error(str(exc))

    def replay(self, params: CarveMixParams) -> None:
        """Replay CarveMix params (from the Provenance widget) on the loaded pair, with their recorded map.

        Provenance has checked the cases (or the user chose to replay on others).
        """
        s = self.session
        _, donor = s.require_pair()
        field = self._field(params.per_lesion, params.connectivity)
        if not field.serves(params, donor.shape):
            raise LesionMixError(
                "The params' lambda(s) do not fit the loaded donor's lesions "
                f"({field.n_lesions} lesion field(s), |Dmin| = {abs(field.d_min):.2f} mm)."
            )
        if self.per_lesion.isChecked() != params.per_lesion:
            self.per_lesion.blockSignals(True)
            self.per_lesion.setChecked(params.per_lesion)
            self.per_lesion.blockSignals(False)
        self.field = field
        self._apply_params(params)
