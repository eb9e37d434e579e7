"""Soft-CP dock widget: the generic method dock plus the Eq. (3) reference picker and "Place at cursor".

Every setting is a field of :class:`~napari_lesionmix.augment.softcp.SoftCPOptions`
(the CLI's ``lesionmix softcp`` flags); "Sample" draws sample (seed, index)
through the registry over the session, as :class:`~.method.MethodDock` does.

"Place at cursor" pastes one donor lesion with its centre of mass on a chosen
voxel: the last point of the selected Points layer when there is one, otherwise
the studio crosshair (``session.cursor``, which follows the viewer and the
preview). It is the same registry draw with the option ``at_voxel`` set (the
CLI's ``--at-voxel I --at-voxel J --at-voxel K``): the lesion and its
object-level transforms are drawn as for "Sample", the position is the clicked
one, Eqs. (3)-(4) are checked there (a position that breaks them is refused with
the reason, nothing changes) and image-level transforms are off, so that the
clicked voxel is a voxel of the output grid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QPushButton, QSpinBox, QWidget

from napari_lesionmix.augment.softcp import SoftCPParams
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.position import format_position
from napari_lesionmix.widgets.method import MethodDock, OptionControl
from napari_lesionmix.widgets.state import notify_error

REFERENCES = (("brain mask", "brain_mask"), ("label value", "label"), ("non-zero image", "foreground"),
              ("brain tissue (no CSF)", "tissue"), ("whole volume", "none"))
PLACEMENTS = (("random in reference (paper)", "random"), ("near the lesion's source", "source"))


class ReferenceControl(OptionControl):
    """``reference`` as a combo box of the regions, with the label value of ``label:N``."""

    def _build(self) -> QWidget:
        self.combo = QComboBox()
        for text, key in REFERENCES:
            self.combo.addItem(text, key)
        self.label_value = QSpinBox()
        self.label_value.setRange(1, 10000)
        self.label_value.setEnabled(False)
        self.combo.currentIndexChanged.connect(
            lambda _: self.label_value.setEnabled(self.combo.currentData() == "label"))
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo, 1)
        lay.addWidget(self.label_value)
        return row

    def value(self):
        key = self.combo.currentData()
        return f"label:{int(self.label_value.value())}" if key == "label" else key

    def set_value(self, value) -> None:
        if value is None:
            return  # the dock picks the default of the loaded pair (_on_cases)
        key = "label" if str(value).startswith("label:") else value
        if key == "label":
            self.label_value.setValue(int(str(value).split(":", 1)[1]))
        self.combo.setCurrentIndex([k for _, k in REFERENCES].index(key))


class SoftCPWidget(MethodDock):
    """Soft-CP dock widget (Plugins > LesionMix > Soft-CP)."""

    METHOD = "softcp"
    GROUPS = (
        ("Placement constraints", ("delta1", "delta2", "reference", "placement", "n_lesions", "max_tries"), True),
        # Rarely changed: the paper's defaults, one click away.
        ("Soft mask", ("a", "k_erode", "k_dilate"), False),
        ("Transforms (drawn with replacement)", ("rigid_choices", "intensity_choices", "image_choices",
                                                 "n_image_ops"), False),
    )
    LABELS = {"delta1": "delta1 (in reference >=)", "delta2": "delta2 (on lesions <=)", "n_lesions": "lesions pasted",
              "max_tries": "tries per lesion", "k_erode": "erode iterations", "k_dilate": "dilate iterations",
              "rigid_choices": "rigid transform", "intensity_choices": "intensity transform",
              "image_choices": "image-level transform", "n_image_ops": "image-level per sample"}
    HIDDEN = ("at_voxel",)  # set by "Place at cursor"

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent=parent)
        c = self.controls
        # The controls by their familiar names (scripts and tests use them).
        self.a, self.k_erode, self.k_dilate = (c[n].widget for n in ("a", "k_erode", "k_dilate"))
        self.delta1, self.delta2 = c["delta1"].widget, c["delta2"].widget
        self.reference, self.label_value = c["reference"].combo, c["reference"].label_value
        self.n_lesions, self.max_tries = c["n_lesions"].widget, c["max_tries"].widget
        self.placement = c["placement"].widget
        for text, key in PLACEMENTS:
            self.placement.setItemText(self.placement.findData(key), text)
        self.rigid, self.intensity = c["rigid_choices"].boxes, c["intensity_choices"].boxes
        self.image_ops, self.n_image = c["image_choices"].boxes, c["n_image_ops"].widget
        self.soft_group = self.groups["Soft mask"]
        self.transforms_group = self.groups["Transforms (drawn with replacement)"]
        self.sample_btn.setToolTip("Draw lesions, transforms and positions (Eqs. 3-4) and paste them")
        self.place_btn = QPushButton("Place at cursor")
        self.place_btn.setToolTip("Paste one donor lesion centred on the selected point (Points layer) "
                                  "or the crosshair")
        self.buttons.insertWidget(1, self.place_btn, 1)
        self.action_buttons.append(self.place_btn)
        self.place_btn.clicked.connect(self.place_at_cursor)
        self._on_cases()

    def make_control(self, f, hint):
        if f.name == "reference":
            return ReferenceControl(f, hint, "reference")
        return super().make_control(f, hint)

    # -- state -----------------------------------------------------------------
    def _on_cases(self) -> None:
        super()._on_cases()
        s = self.session
        if not s.has_pair:
            return
        # The brain mask is the default reference; without one, the host's non-zero image.
        key = "brain_mask" if s.host_brain_mask is not None else "foreground"
        self.controls["reference"].set_value(key)
        self.status.setText(f"Host '{s.host.case_id}', donor '{s.donor.case_id}'"
                            + ("" if s.host_brain_mask is not None else " (no brain mask: reference = non-zero image; "
                               "'brain tissue' leaves CSF out)")
                            + ".")

    def reference_key(self) -> str:
        return self.controls["reference"].value()

    def sample_kwargs(self) -> dict:
        """The options as :func:`~napari_lesionmix.augment.softcp.sample_softcp` keywords (raises LesionMixError)."""
        opts = self.options()
        return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
                if f.name not in ("intensity_match", "at_voxel")}

    # -- place at cursor -------------------------------------------------------
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
            why = self.ready()
            if why is not None:
                raise LesionMixError(why)
            voxel = self.target_voxel()
            options = self.options(at_voxel=voxel)
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        seed, index = int(self.seed.value()), int(self.index.value())
        self.index.setValue(index + 1)
        self.start_draw(options, seed, index, f"Placing a lesion at {format_position(voxel, self.session.host.affine)}")

    def describe(self, syn) -> str:
        p: SoftCPParams = syn.params
        where = ", ".join(f"lesion {les.component} at offset {tuple(les.offset)}" for les in p.lesions[:3])
        more = f" (+{len(p.lesions) - 3} more)" if len(p.lesions) > 3 else ""
        ops = ", ".join(op.kind for op in p.image_ops) or "none"
        return (f"Pasted {len(p.lesions)} lesion(s): {where}{more}; a={p.a:g}, erode {p.k_erode}, dilate "
                f"{p.k_dilate}; delta1={p.delta1:g}, delta2={p.delta2:g} on '{p.reference}'; image-level: {ops}.")
