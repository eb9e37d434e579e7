"""The library faces run the CLI's input checks: one sentence, never a NaN passed through or a broadcast error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment import registry
from napari_lesionmix.errors import LesionMixError, LesionMixWarning
from napari_lesionmix.integrations.online import OnlineMethod, case_from_arrays


@pytest.fixture(scope="module")
def donors(tmp_path_factory):
    root = tmp_path_factory.mktemp("donors")
    for s in range(2):
        write_case(make_case(seed=80 + s, n_lesions=3, case_id=f"d{s}"), root)
    return [{"image": str(root / f"d{s}.nii.gz"), "label": str(root / f"d{s}_seg.nii.gz")} for s in range(2)]


def _host(**change):
    case = make_case(seed=90, n_lesions=2, case_id="h")
    return dataclasses.replace(case, **change)


def _bad_hosts():
    base = _host()
    nan = base.image.copy()
    nan[0, 3, 4, 5] = np.nan
    soft = base.label.astype(np.float32) * 0.5
    return {
        "NaN image": (dataclasses.replace(base, image=nan), r"Host 'h' has 1 NaN or infinite image voxels \(first at voxel \(i, j, k\) = \(3, 4, 5\) · "
                                                                  r"\(x, y, z\) = \([-\d., ]+\) mm\)\."),
        "soft label": (dataclasses.replace(base, label=soft), r"The label of host 'h' has non-integer values"),
        "label of another shape": (dataclasses.replace(base, label=base.label[:-2]),
                                   r"Host 'h' has a label of shape \(22, 28, 20\) but an image of shape \(24, 28, 20\)"),
    }


@pytest.mark.parametrize("what", sorted(_bad_hosts()))
def test_online_faces_refuse_bad_hosts_in_one_sentence(donors, what):
    host, message = _bad_hosts()[what]
    engine = OnlineMethod("carvemix", donors)
    with pytest.raises(LesionMixError, match=message):
        engine(0, 0, host)


@pytest.mark.parametrize("what", sorted(_bad_hosts()))
def test_monai_transform_refuses_bad_hosts_in_one_sentence(donors, what):
    pytest.importorskip("monai")
    from napari_lesionmix.integrations.monai_transforms import RandCarveMixd

    host, message = _bad_hosts()[what]
    t = RandCarveMixd(keys=("image", "label"), donors=donors, prob=1.0, seed=0)
    with pytest.raises(LesionMixError, match=message):
        t({"image": host.image, "label": host.label[None], "case_id": "h"})


def test_a_host_that_is_its_own_donor_under_another_name_is_refused():
    host = _host()
    twin = dataclasses.replace(host, case_id="twin", image=host.image.copy(), label=host.label.copy())
    with pytest.raises(LesionMixError, match="Host 'h' and donor 'twin' are the same scan"):
        registry.generate("carvemix", host, twin)


def test_a_scale_gap_is_warned_about_once_per_sampler(donors):
    host = _host(image=_host().image / 100.0)  # as after NormalizeIntensityd: the donors stay in raw units
    engine = OnlineMethod("carvemix", donors)
    with pytest.warns(LesionMixWarning, match="differ by") as caught:
        for i in range(3):
            engine(0, i, case_from_arrays(host.image, host.label, affine=host.affine, case_id="h"))
    assert sum(issubclass(w.category, LesionMixWarning) for w in caught) == 1
