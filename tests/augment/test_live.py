"""augment/live.py without Qt: CarveMix on the three preview planes equals slicing the full volume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from factories import make_affine, make_case

from napari_lesionmix.augment.carvemix import CarveField, CarveMixParams, carvemix
from napari_lesionmix.augment.intensity import brain_stats, fit_map
from napari_lesionmix.augment.live import CarveMixPlanes, LiveArrays
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import DisplayOrientation


@pytest.mark.parametrize("oblique", [False, True])
@pytest.mark.parametrize("matched", [False, True])
def test_the_planes_are_slices_of_the_full_result(oblique, matched):
    host = make_case(seed=1, n_lesions=2, case_id="h")
    donor = make_case(seed=2, n_lesions=4, case_id="d")
    host.affine = donor.affine = make_affine(oblique=oblique)
    field = CarveField.from_case(donor)
    imap = fit_map("brain-linear", brain_stats(donor.image, donor.label), brain_stats(host.image, host.label), "d") \
        if matched else None
    o = DisplayOrientation(host.affine, host.shape)
    arrays = LiveArrays(host, donor, o, field, imap)
    assert arrays.matches(host, donor, field, imap)
    for lam in (-1.0, 0.0, 2.5):
        full_donor = donor if imap is None else dataclasses.replace(donor, image=imap.apply(donor.image))
        full = carvemix(host, full_donor, CarveMixParams("h", "d", lam), field=field)
        planes = CarveMixPlanes(arrays, lam)
        zyx = tuple(n // 2 for n in o.display_shape)
        image, label, roi = (o.to_display(full.image[0]), o.to_display(full.label), o.to_display(full.mask))
        for axis, name in enumerate(("axial", "coronal", "sagittal")):
            idx = [slice(None)] * 3
            idx[axis] = zyx[axis]
            p = planes.planes(zyx)[name]
            np.testing.assert_array_equal(p.image, image[tuple(idx)])
            np.testing.assert_array_equal(p.label, label[tuple(idx)])
            np.testing.assert_array_equal(p.mask, roi[tuple(idx)] != 0)


def test_a_lambda_beyond_the_field_is_refused():
    donor = make_case(seed=2, n_lesions=4, case_id="d")
    field = CarveField.from_case(donor)
    arrays = LiveArrays(donor, donor, DisplayOrientation(donor.affine, donor.shape), field)
    with pytest.raises(LesionMixError, match="exceeds the .* mm the donor's field covers"):
        CarveMixPlanes(arrays, 1e6)
