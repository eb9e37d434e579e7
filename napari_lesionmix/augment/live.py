"""CarveMix on the preview's three planes: the studio's live path while the lambda slider moves (Qt-free).

While the slider is dragged only the three planes the preview shows are
computed: ``M = {D <= lambda}`` (Eq. 4) on each plane's intersection with the
donor's distance boxes, then Eqs. (1)-(2) pick donor or host pixels. The result
equals slicing the full :func:`~napari_lesionmix.augment.carvemix.carvemix`
volume pixel for pixel (the widget tests check it).
"""

from __future__ import annotations

import numpy as np

from napari_lesionmix.augment.carvemix import CarveField
from napari_lesionmix.augment.intensity import IntensityMap
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import DisplayOrientation, Plane
from napari_lesionmix.io.nifti import Case


class LiveArrays:
    """Display-order, C-contiguous copies of the pair and of the field's boxes.

    Built once per pair, field and intensity map (about 0.1 s at 1 mm) so that
    every slider move reads contiguous planes instead of gathering them from
    strided views. ``intensity_map`` (the donor's map that the full result
    applies, :func:`~napari_lesionmix.augment.registry.matched_inputs`) is
    applied here once, in the field's box (the only donor voxels CarveMix
    reads), so the planes equal the full result's.
    """

    def __init__(self, host: Case, donor: Case, orientation: DisplayOrientation, field: CarveField,
                 intensity_map: IntensityMap | None = None):
        o = orientation
        self.field, self.host, self.donor, self.intensity_map = field, host, donor, intensity_map
        self.display_shape = o.display_shape
        c = np.ascontiguousarray
        self.host_img = c(o.to_display(host.image[0]))
        donor_image = donor.image if intensity_map is None else intensity_map.apply(donor.image, field.box)
        self.donor_img = c(o.to_display(donor_image[0]))
        self.host_lab = c(o.to_display(host.label))
        self.donor_lab = c(o.to_display(donor.label))
        self.boxes = [(display_box(f.box, o), c(o.to_display(f.values)), f.max_lambda) for f in field.fields]

    def matches(self, host: Case, donor: Case, field: CarveField, intensity_map: IntensityMap | None = None) -> bool:
        return (self.field is field and self.host is host and self.donor is donor
                and self.intensity_map == intensity_map)


class CarveMixPlanes:
    """CarveMix on the three preview planes only (the slider's live path).

    For each display plane, ``M = {D <= lambda}`` (Eq. 4) is evaluated on the
    plane's intersection with each lesion's distance box, and Eqs. (1)-(2) pick
    donor or host pixels. Equal, pixel for pixel, to slicing the full
    :func:`carvemix` result (the widget tests check it).
    """

    def __init__(self, arrays: LiveArrays, lam):
        self.a = arrays
        self.display_shape = arrays.display_shape
        self.lams = arrays.field.lambdas(lam)
        for (_, _, max_lam), lam_k in zip(arrays.boxes, self.lams, strict=True):
            if lam_k > max_lam + 1e-9:
                raise LesionMixError(
                    f"lambda={lam_k:g} mm exceeds the {max_lam:g} mm the donor's field covers."
                )

    def roi_plane(self, axis: int, index: int) -> np.ndarray:
        shape = [n for a, n in enumerate(self.display_shape) if a != axis]
        out = np.zeros(shape, dtype=bool)
        for (box, values, _), lam in zip(self.a.boxes, self.lams, strict=True):
            b = box[axis]
            if not (b.start <= index < b.stop):
                continue
            idx = [slice(None)] * 3
            idx[axis] = index - b.start
            rest = tuple(s for a, s in enumerate(box) if a != axis)
            out[rest] |= values[tuple(idx)] <= lam
        return out

    def planes(self, zyx) -> dict[str, Plane]:
        a = self.a
        out = {}
        for axis, name in enumerate(("axial", "coronal", "sagittal")):
            idx = [slice(None)] * 3
            idx[axis] = int(zyx[axis])
            idx = tuple(idx)
            roi = self.roi_plane(axis, int(zyx[axis]))
            img = np.where(roi, a.donor_img[idx], a.host_img[idx])
            lab = np.where(roi, a.donor_lab[idx], a.host_lab[idx])
            out[name] = Plane(img, lab, roi)
        return out


def display_box(box: tuple[slice, ...], orientation: DisplayOrientation) -> tuple[slice, ...]:
    """A file-order box (tuple of slices) in display order."""
    out = [None, None, None]
    for a, (d, flip) in enumerate(orientation.transform):
        s, n = box[a], orientation.shape[a]
        out[int(d)] = slice(n - s.stop, n - s.start) if flip < 0 else slice(s.start, s.stop)
    return tuple(out)
