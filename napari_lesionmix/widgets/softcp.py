"""Soft-CP dock widget: soft mask, anatomical constraints, transforms, sampled or clicked placement.

Thin over :mod:`napari_lesionmix.augment.softcp`: "Sample" draws
:class:`~napari_lesionmix.augment.softcp.SoftCPParams` with
:func:`~napari_lesionmix.augment.softcp.sample_softcp` (seeded with
``sample_rng(seed, index)``; the index advances per press) and applies them with
:func:`~napari_lesionmix.augment.softcp.softcp`, both in a ``thread_worker``.

"Place at cursor" pastes one donor lesion with its centre of mass on a chosen
voxel: the last point of the selected Points layer when there is one, otherwise
the studio crosshair (``session.cursor``, which follows the viewer and the
preview). The lesion and its object-level transforms are drawn as for
"Sample"; the position is the clicked one, and Eqs. (3)-(4) are checked there
(a position that breaks them is refused with the reason, nothing changes).
Image-level transforms are off in this mode so that the clicked voxel is a
voxel of the output grid. The params record ``placement="random"`` (the field
only says how positions were drawn; the offset itself is what replays).

After the draw, the registry's shared intensity step fits the donor's map in
the session's ``intensity_match`` mode and the sample is applied through
:func:`~napari_lesionmix.augment.registry.apply_params`, as in every face; a
replay applies the map its params recorded.
"""

from __future__ import annotations

import numpy as np
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
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

import napari_lesionmix.augment.softcp as core  # noqa: E402  (placement checks at a clicked voxel)
from napari_lesionmix.augment import registry
from napari_lesionmix.augment.softcp import (
    DonorLesions,
    SoftCPOptions,
    SoftCPParams,
    place_at,
    sample_softcp,
)
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.random import sample_rng
from napari_lesionmix.widgets.controls import Collapsible, WorkIndicator, make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error

REFERENCES = (("brain mask", "brain_mask"), ("label value", "label"), ("non-zero image", "foreground"),
              ("brain tissue (no CSF)", "tissue"), ("whole volume", "none"))
PLACEMENTS = (("random in reference (paper)", "random"), ("near the lesion's source", "source"))


class SoftCPWidget(QWidget):
    """Soft-CP dock widget (Plugins > LesionMix > Soft-CP)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        self.method = registry.get_method("softcp")
        self._sample_index = 0
        self.params: SoftCPParams | None = None

        # soft mask
        self.a = QDoubleSpinBox()
        self.a.setRange(0.01, 0.99)
        self.a.setSingleStep(0.05)
        self.a.setValue(core.DEFAULT_A)
        self.a.setToolTip("Softening coefficient a in (0, 1): how fast the weight falls off outside the lesion")
        self.k_erode = QSpinBox()
        self.k_erode.setRange(0, 20)
        self.k_erode.setValue(core.DEFAULT_K_ERODE)
        self.k_dilate = QSpinBox()
        self.k_dilate.setRange(0, 30)
        self.k_dilate.setValue(core.DEFAULT_K_DILATE)
        soft = QGroupBox("Soft mask")
        sf = QFormLayout(soft)
        sf.addRow("a", self.a)
        sf.addRow("erode iterations", self.k_erode)
        sf.addRow("dilate iterations", self.k_dilate)

        # constraints
        self.delta1 = QDoubleSpinBox()
        self.delta1.setRange(0.0, 1.0)
        self.delta1.setSingleStep(0.05)
        self.delta1.setValue(core.DEFAULT_DELTA1)
        self.delta1.setToolTip("Eq. (3): smallest fraction of the pasted lesion inside the reference")
        self.delta2 = QDoubleSpinBox()
        self.delta2.setRange(0.0, 1.0)
        self.delta2.setSingleStep(0.05)
        self.delta2.setValue(core.DEFAULT_DELTA2)
        self.delta2.setToolTip("Eq. (4): largest fraction of the pasted lesion on the host's lesions")
        self.reference = QComboBox()
        for text, key in REFERENCES:
            self.reference.addItem(text, key)
        self.label_value = QSpinBox()
        self.label_value.setRange(1, 10000)
        self.label_value.setEnabled(False)
        self.placement = QComboBox()
        for text, key in PLACEMENTS:
            self.placement.addItem(text, key)
        self.n_lesions = QSpinBox()
        self.n_lesions.setRange(1, 50)
        self.max_tries = QSpinBox()
        self.max_tries.setRange(1, 100000)
        self.max_tries.setValue(core.DEFAULT_MAX_TRIES)
        cons = QGroupBox("Placement constraints")
        cf = QFormLayout(cons)
        cf.addRow("delta1 (in reference >=)", self.delta1)
        cf.addRow("delta2 (on lesions <=)", self.delta2)
        ref_row = QHBoxLayout()
        ref_row.addWidget(self.reference, 1)
        ref_row.addWidget(self.label_value)
        cf.addRow("reference", ref_row)
        cf.addRow("placement", self.placement)
        cf.addRow("lesions pasted", self.n_lesions)
        cf.addRow("tries per lesion", self.max_tries)

        # transforms
        self.rigid = {n: QCheckBox(n) for n in core.RIGID_CHOICES}
        self.intensity = {n: QCheckBox(n) for n in core.INTENSITY_CHOICES}
        self.image_ops = {n: QCheckBox(n.replace("_", "-")) for n in core.IMAGE_CHOICES}
        for box in (*self.rigid.values(), *self.intensity.values(), *self.image_ops.values()):
            box.setChecked(True)
        self.n_image = QSpinBox()
        self.n_image.setRange(0, 4)
        self.n_image.setValue(1)
        tf = QGroupBox("Transforms (drawn with replacement)")
        grid = QGridLayout(tf)
        grid.setHorizontalSpacing(6)
        r = 0
        for title, boxes in (("rigid", self.rigid), ("intensity", self.intensity), ("image-level", self.image_ops)):
            grid.addWidget(QLabel(f"<b>{title}</b>"), r, 0, 1, 3)
            r += 1
            for i, box in enumerate(boxes.values()):
                grid.addWidget(box, r + i // 3, i % 3)
            r += (len(boxes) + 2) // 3
        img_row = QHBoxLayout()
        img_row.addWidget(QLabel("image-level transforms per sample"))
        img_row.addWidget(self.n_image)
        grid.addLayout(img_row, r, 0, 1, 3)

        # actions
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.sample_btn = QPushButton("Sample")
        self.sample_btn.setToolTip("Draw lesions, transforms and positions (Eqs. 3-4) and paste them")
        self.place_btn = QPushButton("Place at cursor")
        self.place_btn.setToolTip("Paste one donor lesion centred on the selected point (Points layer) "
                                  "or the crosshair")
        self.status = QLabel("Load a host/donor pair first.")
        self.status.setWordWrap(True)
        seed_row = QHBoxLayout()
        seed_row.addWidget(QLabel("seed"))
        seed_row.addWidget(self.seed, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.sample_btn)
        buttons.addWidget(self.place_btn)

        lay = QVBoxLayout(self)
        lay.addWidget(cons)
        # Rarely changed: the paper's defaults, one click away.
        self.soft_group = Collapsible(soft.title(), soft)
        self.transforms_group = Collapsible(tf.title(), tf)
        soft.setTitle("")
        tf.setTitle("")
        lay.addWidget(self.soft_group)
        lay.addWidget(self.transforms_group)
        lay.addLayout(seed_row)
        lay.addLayout(buttons)
        self.work = WorkIndicator()
        lay.addWidget(self.work)
        lay.addWidget(self.status)
        lay.addStretch(1)
        make_scrollable(self)

        self.reference.currentIndexChanged.connect(
            lambda _: self.label_value.setEnabled(self.reference.currentData() == "label"))
        self.sample_btn.clicked.connect(self.sample)
        self.place_btn.clicked.connect(self.place_at_cursor)
        bind(self, self.session.cases_changed, self._on_cases)
        bind(self, self.session.intensity_changed, self._on_intensity)
        replayers, mine = self.session.replayers, self.replay
        replayers["softcp"] = mine
        self.destroyed.connect(lambda *_: replayers.pop("softcp") if replayers.get("softcp") == mine else None)
        self._on_cases()

    # -- state -----------------------------------------------------------------
    def _on_cases(self) -> None:
        s = self.session
        on = s.has_pair
        self.sample_btn.setEnabled(on)
        self.place_btn.setEnabled(on)
        if not on:
            return
        # The brain mask is the default reference; without one, the host's non-zero image.
        key = "brain_mask" if s.host_brain_mask is not None else "foreground"
        self.reference.setCurrentIndex([k for _, k in REFERENCES].index(key))
        self.status.setStyleSheet("")
        self.status.setText(f"Host '{s.host.case_id}', donor '{s.donor.case_id}'"
                            + ("" if s.host_brain_mask is not None else " (no brain mask: reference = non-zero image; "
                               "'brain tissue' leaves CSF out)")
                            + ".")

    def reference_key(self) -> str:
        key = self.reference.currentData()
        return f"label:{int(self.label_value.value())}" if key == "label" else key

    def _chosen(self, boxes: dict[str, QCheckBox], what: str) -> tuple[str, ...]:
        out = tuple(n for n, b in boxes.items() if b.isChecked())
        if not out:
            raise LesionMixError(f"Tick at least one {what} transform (tick 'none' for no transform).")
        return out

    def sample_kwargs(self) -> dict:
        """The sampler's settings from the controls (raises LesionMixError for none ticked)."""
        return dict(
            reference=self.reference_key(), n_lesions=int(self.n_lesions.value()), a=float(self.a.value()),
            k_erode=int(self.k_erode.value()), k_dilate=int(self.k_dilate.value()),
            delta1=float(self.delta1.value()), delta2=float(self.delta2.value()),
            max_tries=int(self.max_tries.value()), placement=self.placement.currentData(),
            rigid_choices=self._chosen(self.rigid, "rigid"),
            intensity_choices=self._chosen(self.intensity, "intensity"),
            image_choices=self._chosen(self.image_ops, "image-level"), n_image_ops=int(self.n_image.value()),
        )

    def _resources(self, params: SoftCPParams | None = None):
        """Soft-CP's prepared work in the session's cache (the donor's components, found once per pair)."""
        options = self.method.options_for(params) if params is not None else SoftCPOptions()
        return self.method.prepare(self.session, options)

    def _donor_lesions(self) -> DonorLesions:
        """The donor's components, found once per donor (called in the worker)."""
        return self._resources()(self.session.donor)

    def _finish(self, params: SoftCPParams, fit: bool = True):
        """The shared intensity step (unless replaying recorded maps) and the registry's apply (worker side)."""
        s = self.session
        if fit:
            params = s.fit_intensity(self.method, params)
        return registry.apply_params(self.method, s.inputs(), params, self._resources(params))

    # -- compute ---------------------------------------------------------------
    def _start(self, func, *args, what: str) -> None:
        s = self.session
        self.status.setStyleSheet("")
        self.status.setText(f"{what}...")

        def _done(syn):
            self.params = syn.params
            s.set_synthetic(syn)
            self.status.setText(self.describe(syn.params))

        def _failed(exc):
            self.status.setStyleSheet("color: #ff6b6b;")
            self.status.setText(str(exc))

        worker = s.run_latest(self, func, *args, on_done=_done, on_error=_failed, desc=f"Soft-CP: {what.lower()}")
        self.work.track(worker, self.sample_btn, self.place_btn)

    def _pair(self):
        s = self.session
        if not s.has_pair:
            raise LesionMixError("No host/donor pair is loaded; use the Load widget first.")
        return s.host, s.donor, s.host_brain_mask

    def sample(self) -> None:
        """Draw Soft-CP params with ``sample_rng(seed, index)`` and paste (in a worker)."""
        try:
            host, donor, brain = self._pair()
            kwargs = self.sample_kwargs()
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        seed, index = int(self.seed.value()), self._sample_index
        self._sample_index += 1

        def _work():
            params = sample_softcp(sample_rng(seed, index), host, donor, brain, seed=seed, sample_index=index,
                                   donor_lesions=self._donor_lesions(), **kwargs)
            return self._finish(params)

        self._start(_work, what=f"Sampling (seed {seed}, index {index})")

    def target_voxel(self) -> tuple[int, int, int]:
        """The file-order voxel to place at: the selected Points layer's last point, else the crosshair."""
        s = self.session
        zyx = s.cursor
        viewer = s.viewer
        if viewer is not None:
            layer = viewer.layers.selection.active
            if layer is not None and getattr(layer, "_type_string", "") == "points" and len(layer.data):
                world = layer.data_to_world(layer.data[-1])
                zyx = s.display_index(world)
        ijk = s.orientation.original_index(zyx)
        shape = s.host.shape
        return tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(ijk, shape, strict=True))

    def place_at_cursor(self) -> None:
        """Paste one donor lesion with its centre of mass on :meth:`target_voxel` (Eqs. 3-4 checked there)."""
        try:
            host, donor, brain = self._pair()
            kwargs = self.sample_kwargs()
            voxel = self.target_voxel()
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        seed, index = int(self.seed.value()), self._sample_index
        self._sample_index += 1

        def _work():
            params = place_at(sample_rng(seed, index), host, donor, brain, voxel, self._donor_lesions(), seed=seed,
                              sample_index=index, **kwargs)
            return self._finish(params)

        self._start(_work, what=f"Placing a lesion at voxel {voxel}")

    def replay(self, params: SoftCPParams) -> None:
        """Replay Soft-CP params (Provenance widget) on the loaded pair, with their recorded intensity map.

        Provenance has checked the cases (or the user chose to replay on others).
        """
        self._pair()
        self._start(self._finish, params, False, what="Replaying Soft-CP params")

    def _on_intensity(self, _mode: str) -> None:
        """Redo the shown Soft-CP sample in the new mode: the same draw, another intensity map."""
        syn = self.session.synthetic
        if syn is not None and syn.params.method == self.method.name and self.session.has_pair:
            self._start(self._finish, syn.params, what="Matching intensities again")

    @staticmethod
    def describe(p: SoftCPParams) -> str:
        where = ", ".join(f"lesion {les.component} at offset {tuple(les.offset)}" for les in p.lesions[:3])
        more = f" (+{len(p.lesions) - 3} more)" if len(p.lesions) > 3 else ""
        ops = ", ".join(op.kind for op in p.image_ops) or "none"
        return (f"Pasted {len(p.lesions)} lesion(s): {where}{more}; a={p.a:g}, erode {p.k_erode}, dilate "
                f"{p.k_dilate}; delta1={p.delta1:g}, delta2={p.delta2:g} on '{p.reference}'; image-level: {ops}.")
