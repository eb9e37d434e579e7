"""How the studio shows a session's cases as napari layers: roles, refills in place, flip, compare, outlines.

:class:`LayerDisplay` is a part of :class:`~napari_lesionmix.widgets.state.StudioSession`
(a mixin: it reads the session's viewer, orientation, cases and window).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import geometry_metadata

ROLE_KEY = "lesionmix_role"

#: Metadata flag of a synthetic layer hidden because its pair was replaced (the next sample shows it again).
STALE_KEY = "lesionmix_stale"

#: Roles of the layers that show a synthetic case (they go when another pair is loaded).
SYNTHETIC_ROLES = ("synthetic_image", "synthetic_label", "mixing_mask", "pasted_outline")

#: Opacity of the mixing mask: its layer's opacity when tinted (on request: filled overlays); by default
#: the mask is hidden and the pasted region outlined (``pasted_outline``), so the intensities stay visible.
MASK_OPACITY = {False: 0.25, True: 0.6}

#: The pasted region's outline: where the mixing mask is at least this weight (Soft-CP's is soft).
OUTLINE_LEVEL = 0.5

#: Compare side by side: napari's grid with this (negative) stride groups our layers from the top
#: of the layer list, four per view: host (+ its label; the donor hidden) and synthetic (+ label, mask,
#: outline). Every other layer is hidden while comparing, so there are exactly two captioned views.
COMPARE_STRIDE = -4

COMPARE_ORDER = ("synthetic_image", "synthetic_label", "mixing_mask", "pasted_outline",
                 "host_image", "host_label", "donor_image", "donor_label")

NORMAL_ORDER = ("host_image", "host_label", "donor_image", "donor_label",
                "synthetic_image", "synthetic_label", "mixing_mask", "pasted_outline")

#: Role -> (layer name, layer type) of the layers a session manages; the name is followed by the case ids
#: it shows (:meth:`LayerDisplay.layer_name`).
ROLES: dict[str, tuple[str, str]] = {
    "host_image": ("host", "image"),
    "host_label": ("host label", "labels"),
    "donor_image": ("donor", "image"),
    "donor_label": ("donor label", "labels"),
    "synthetic_image": ("synthetic", "image"),
    "synthetic_label": ("synthetic label", "labels"),
    "mixing_mask": ("mixing mask", "image"),
    "pasted_outline": ("pasted region", "labels"),
}


def outline_colormap():
    """Label 1 in the mask's yellow, the rest transparent: the pasted region's outline."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: [0.0, 0.0, 0.0, 0.0], 0: [0.0, 0.0, 0.0, 0.0],
                                           1: [1.0, 0.85, 0.0, 1.0]})


def mask_colormap():
    """Transparent at 0, yellow at 1: a soft or binary mixing mask as a tint over the image."""
    from napari.utils.colormaps import Colormap

    return Colormap([[1.0, 0.85, 0.0, 0.0], [1.0, 0.85, 0.0, 0.7]], name="lesionmix mask")


class LayerDisplay:
    """The session's napari layers (see the module docstring)."""

    def layer(self, role: str, stale: bool = False):
        """The viewer layer this session manages for ``role``, or ``None``.

        A synthetic layer of a replaced pair (hidden until the next sample refills it) counts
        only with ``stale``.
        """
        if self.viewer is None:
            return None
        for lyr in self.viewer.layers:
            if lyr.metadata.get(ROLE_KEY) == role:
                return lyr if stale or not lyr.metadata.get(STALE_KEY) else None
        return None

    def show_layer(self, role: str, data: np.ndarray, keep_contrast: bool = False, **kwargs: Any):
        """Add or update (in place) the layer of ``role``; other layers are never touched.

        Labels are drawn as contours unless :attr:`filled_overlays`. With ``keep_contrast`` an
        existing layer keeps its contrast limits (the user's), the given ones only start a new layer.
        """
        if self.viewer is None or self.orientation is None:
            return None
        _, kind = ROLES[role]
        name = self.layer_name(role)
        o = self.orientation
        lyr = self.layer(role, stale=True)
        host = self.host
        geometry = geometry_metadata(host.affine, host.header, host.shape, None, kind)
        if lyr is not None:
            # Updated in place, on a new grid too (geometry first, then data): a layer removed and a
            # new one added on another grid crashed napari's canvas (see :meth:`_forget_pair`).
            if lyr.data.shape != data.shape:
                lyr.metadata["lesionmix"] = geometry
                lyr.scale, lyr.translate = o.scale, o.translate
                if "contrast_limits" in kwargs:
                    keep_contrast = False  # another case: the user's window was for the old one
            lyr.data = data
            if lyr.name != name:
                lyr.name = name
            if "contrast_limits" in kwargs and not keep_contrast:
                lyr.contrast_limits = kwargs["contrast_limits"]
            if lyr.metadata.pop(STALE_KEY, False):
                lyr.visible = kwargs.get("visible", True)
            return lyr
        meta = {ROLE_KEY: role, "lesionmix": geometry}
        common = {"name": name, "scale": o.scale, "translate": o.translate, "metadata": meta}
        if kind == "labels":
            lyr = self.viewer.add_labels(data, **common, **kwargs)
            lyr.contour = 0 if self.filled_overlays else 1  # contours keep the intensities visible
            return lyr
        kwargs.setdefault("colormap", "gray")
        return self.viewer.add_image(data, **common, **kwargs)

    def layer_name(self, role: str) -> str:
        """The name of the layer of ``role`` with the case ids it shows.

        ``"host sub-01"``, ``"donor label sub-07"``, ``"synthetic (sub-07 -> sub-01)"`` (a method without a
        donor names itself: ``"synthetic (lesionmix -> sub-01)"``), so two pairs in one viewer stay apart.
        """
        base = ROLES[role][0]
        if role.startswith("host") and self.host is not None:
            return f"{base} {self.host.case_id}"
        if role.startswith("donor") and self.donor is not None:
            return f"{base} {self.donor.case_id}"
        if role in SYNTHETIC_ROLES and self.synthetic is not None:
            p = self.synthetic.params
            return f"{base} ({getattr(p, 'donor_id', None) or p.method} -> {p.host_id})"
        return base

    def set_filled(self, filled: bool) -> None:
        """Labels filled and the mixing mask tinted (``True``), or contours and the pasted region outlined."""
        self.filled_overlays = bool(filled)
        for role, (_, kind) in ROLES.items():
            lyr = self.layer(role, stale=True)
            if lyr is None or role == "pasted_outline":
                continue
            if kind == "labels":
                lyr.contour = 0 if filled else 1
            elif role == "mixing_mask":
                lyr.opacity = MASK_OPACITY[self.filled_overlays]
        if not self.showing_host:
            self._show_synthetic(True)

    def _show_synthetic(self, show: bool) -> None:
        """Show the synthetic case (its label, its mask tint or outline; the host's label hidden) or the host
        alone (its label; every synthetic layer hidden)."""
        wanted = {"synthetic_image": show, "synthetic_label": show, "host_label": not show or self.compare,
                  "mixing_mask": show and self.filled_overlays, "pasted_outline": show and not self.filled_overlays}
        for role, on in wanted.items():
            lyr = self.layer(role)
            if lyr is not None and (role != "host_label" or self.synthetic is not None):
                lyr.visible = on

    def flip(self) -> bool:
        """Show exactly the host or exactly the synthetic case; returns whether the synthetic shows.

        The two share the slice, zoom and contrast, so flipping shows exactly what was pasted; the
        other case's label and mask are hidden, so neither is drawn over the wrong image.
        """
        syn = self.layer("synthetic_image")
        if syn is None or self.synthetic is None:
            raise LesionMixError("There is no synthetic case to compare yet; make a sample first.")
        show = self.showing_host or not syn.visible
        self.showing_host = not show
        host = self.layer("host_image")
        if host is not None:
            host.visible = True  # under the synthetic layer: what shows when it is hidden
            if host.contrast_limits != syn.contrast_limits:
                host.contrast_limits = syn.contrast_limits  # flip compares intensities, not windows
        self._show_synthetic(show)
        self.preview_changed.emit()  # the preview flips with the canvas
        return show

    def set_compare(self, on: bool) -> None:
        """Host and synthetic side by side in napari's grid mode (linked slice, zoom and cursor).

        Exactly two views, captioned with their layer names: every other visible layer (the donor's,
        the user's own) is hidden while comparing and shown again after. The session's layers are
        regrouped at the top of the layer list (:data:`COMPARE_ORDER`); off, they go back to the normal
        order with the synthetic on top.
        """
        self.compare = bool(on)
        viewer = self.viewer
        if viewer is None:
            return
        grid = viewer.grid if not hasattr(viewer, "canvas") else viewer.canvas.grid
        keep = {"host_image", "host_label", "synthetic_image", "synthetic_label", "mixing_mask", "pasted_outline"}
        if on:
            self._compare_hidden = [lyr for lyr in viewer.layers if lyr.visible
                                    and lyr.metadata.get(ROLE_KEY) not in keep]
            for lyr in self._compare_hidden:
                lyr.visible = False
            for role in ("host_image", "synthetic_image"):
                lyr = self.layer(role)
                if lyr is not None:
                    lyr.visible = True
            self.showing_host = False
            self._show_synthetic(True)
            host_label = self.layer("host_label")
            if host_label is not None:
                host_label.visible = True  # in the host's own view
        else:
            for lyr in self._compare_hidden:
                if lyr in viewer.layers:
                    lyr.visible = True
            self._compare_hidden = []
            self._show_synthetic(True)
        for role in ("host_image", "synthetic_image"):
            lyr = self.layer(role)
            if lyr is not None:
                lyr.name_overlay.visible = bool(on)  # the caption of its view
        self._arrange()
        grid.stride = COMPARE_STRIDE if on else 1
        grid.shape = (1, -1) if on else (-1, -1)
        grid.enabled = bool(on)

    def _arrange(self) -> None:
        """Move the session's layers to the top of the layer list in the order of the mode."""
        layers = self.viewer.layers
        for role in COMPARE_ORDER if self.compare else NORMAL_ORDER:
            lyr = self.layer(role)
            if lyr is not None:
                layers.move(layers.index(lyr), len(layers))

    def _show_cases(self) -> None:
        o = self.orientation
        for who, case in (("host", self.host), ("donor", self.donor)):
            self.show_layer(f"{who}_image", o.to_display(case.image[0]), contrast_limits=self.window,
                            visible=who == "host")
            self.show_layer(f"{who}_label", o.to_display(case.label), visible=False)
