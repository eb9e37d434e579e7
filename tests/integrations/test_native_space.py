"""Native-space online augmentation: donors through the host's pre-transforms, resampled onto its grid.

Cases of different shapes, spacings and orientations (one physical space) go through MONAI's
``Orientationd`` and ``Spacingd`` before the lesion transform; the epoch reaches persistent workers; the
MONAI trace, the TorchIO history and the reprs say what ran.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.integrations.online import (
    DonorPool,
    HostGridPool,
    resample_case,
)

monai = pytest.importorskip("monai", reason="MONAI is not installed (pip install 'napari-lesionmix[monai]')")
from monai.transforms import (  # noqa: E402
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    Spacingd,
)

from napari_lesionmix.integrations.monai_transforms import (  # noqa: E402
    RandCarveMixd,
    RandSoftCPd,
    with_sample_index,
)

GRIDS = [((24, 28, 20), (1.2, 1.0, 1.5), False), ((30, 26, 22), (1.0, 1.1, 1.3), False),
         ((26, 30, 18), (1.1, 0.9, 1.6), True)]


@pytest.fixture(scope="module")
def native_cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("native")
    items = []
    for i, (shape, spacing, flip) in enumerate(GRIDS):
        case = make_case(seed=40 + i, n_lesions=3, shape=shape, spacing=spacing, case_id=f"n{i}")
        if flip:  # stored in another orientation (LAS): Orientationd brings it back
            flip_x = np.diag([-1.0, 1, 1, 1])
            flip_x[0, 3] = shape[0] - 1
            case.affine = case.affine @ flip_x
            case.image, case.label = case.image[:, ::-1].copy(), case.label[::-1].copy()
        paths = write_case(case, folder)
        items.append({"image": str(paths["images"][0]), "label": str(paths["label"]), "case_id": f"n{i}"})
    return items


def _pre():
    return Compose([LoadImaged(("image", "label")), EnsureChannelFirstd(("image", "label")),
                    Orientationd(("image", "label"), axcodes="RAS"),
                    Spacingd(("image", "label"), pixdim=(1.5, 1.5, 1.5), mode=("bilinear", "nearest"))])


@pytest.mark.parametrize("transform", [RandCarveMixd, RandSoftCPd])
def test_monai_orientation_and_spacing_before_the_lesion_transform_on_different_grids(native_cases, transform):
    pre = _pre()
    t = transform(("image", "label"), donors=native_cases, prob=1.0, seed=1, donor_transform=_pre(),
                  resample=True)
    data = with_sample_index(native_cases)
    outs = []
    for d in data:
        host = pre(dict(d))
        out = t(dict(host))
        params = json.loads(out["lesionmix_params"])
        assert out["image"].shape == host["image"].shape  # the host's grid after its pre-transforms
        assert np.allclose(out["image"].affine, host["image"].affine)
        donor = params["donor_id"]
        assert donor.split("@")[0] != d["case_id"] and donor.split("@")[0] in {c["case_id"] for c in native_cases}
        # The donor's lesion voxels land in the host's label.
        assert int((out["label"] > 0).sum()) > int((host["label"] > 0).sum())
        op = out["image"].applied_operations[-1]
        assert op["class"] == transform.__name__ and json.loads(op["extra_info"]["params"]) == params
        outs.append(out)
    # The trace does not break inverting the pre-transforms: the mix's entry is removed, Spacingd's undone.
    back = pre.inverse(t.inverse(outs[0]))
    assert tuple(back["image"].shape[1:]) == GRIDS[0][0]
    # Repeats for the same keyed sample.
    again = t(dict(pre(dict(data[1]))))
    assert again["lesionmix_params"] == outs[1]["lesionmix_params"]
    assert "resample=True" in repr(t) and "donor_transform=Compose" in repr(t) and transform.__name__ in repr(t)


def test_without_resample_donors_off_the_grid_are_refused(native_cases):
    t = RandCarveMixd(("image", "label"), donors=native_cases, prob=1.0, donor_transform=_pre())
    with pytest.raises(Exception, match="grid"):
        t(dict(_pre()(dict(with_sample_index(native_cases)[0]))))


def test_a_brain_mask_path_the_donor_transform_did_not_load_is_named(native_cases):
    """Donor dicts often carry a mask path the pre-transforms leave as it is: say so, not 'shape ()'."""
    from napari_lesionmix.errors import LesionMixError

    items = [{**d, "brain_mask": d["label"]} for d in native_cases]
    t = RandCarveMixd(("image", "label"), donors=items, prob=1.0, donor_transform=_pre(), resample=True)
    with pytest.raises(LesionMixError, match="'brain_mask' is still a file path after donor_transform .*LoadImaged"):
        t(dict(_pre()(dict(with_sample_index(native_cases)[0]))))


def test_resample_case_is_exact_on_its_own_grid_and_maps_world_positions():
    case = make_case(seed=3, n_lesions=2)
    same = resample_case(case, case.shape, case.affine)
    assert np.array_equal(same.label, case.label) and np.allclose(same.image, case.image, atol=1e-4)
    # Half the spacing, same origin: voxel 2v of the fine grid is voxel v of the case.
    fine = case.affine.copy()
    fine[:3, :3] /= 2
    up = resample_case(case, tuple(2 * s for s in case.shape), fine)
    assert np.array_equal(up.label[::2, ::2, ::2], case.label)
    pool = HostGridPool(DonorPool([case, make_case(seed=4, case_id="other")]), up)
    assert all("@" in c for c in pool.on_grid_of(up))


def test_the_epoch_reaches_persistent_workers(native_cases):
    torch = pytest.importorskip("torch")
    from monai.data import DataLoader, Dataset

    host = make_case(seed=7, n_lesions=2, case_id="h")
    donors = [make_case(seed=8 + i, n_lesions=2, case_id=f"d{i}") for i in range(2)]
    items = with_sample_index([{"image": host.image, "label": host.label[None].astype(np.float32),
                                "case_id": f"h{i}"} for i in range(2)])
    t = RandCarveMixd(("image", "label"), donors=[{"image": d.image, "label": d.label, "case_id": d.case_id}
                                                  for d in donors], prob=1.0, seed=5)
    loader = DataLoader(Dataset(items, transform=t), batch_size=1, num_workers=1, persistent_workers=True,
                        collate_fn=lambda b: b[0]["lesionmix_params"])
    seen = []
    for epoch in range(2):
        t.set_epoch(epoch, len(items))
        seen.append([json.loads(p)["sample_index"] for p in loader])
    assert seen == [[0, 1], [2, 3]]  # a persistent worker that missed set_epoch would give [0, 1] twice
    del torch


def test_torchio_history_is_json_and_replays_across_grids(native_cases):
    tio = pytest.importorskip("torchio")
    from napari_lesionmix.integrations.torchio_transforms import RandomCarveMix

    host = tio.Subject(image=tio.ScalarImage(native_cases[1]["image"]), label=tio.LabelMap(native_cases[1]["label"]))
    t = RandomCarveMix(donors=native_cases, p=1.0, resample=True)  # donors on other grids, resampled
    out = t(host)
    name, args = out.applied_transforms[-1]
    text = json.dumps(args)  # JSON, with no live pool in it
    assert name == "LesionAugment" and "DonorPool" not in text and args["resample"] is True
    assert "@" in args["params"]["donor_id"]
    replayed = out.get_composed_history()(host)
    assert np.array_equal(replayed["label"].data.numpy(), out["label"].data.numpy())
    assert int((out["label"].data > 0).sum()) > int((host["label"].data > 0).sum())
    assert "RandomCarveMix" in repr(t) and "resample=True" in repr(t)
    # In-memory donors are named by a pool of this process, still JSON.
    mem = RandomCarveMix(donors=[make_case(seed=50 + i, case_id=f"m{i}") for i in range(2)], p=1.0)
    h = make_case(seed=52, case_id="mh")
    subj = tio.Subject(image=tio.ScalarImage(tensor=h.image, affine=h.affine),
                       label=tio.LabelMap(tensor=h.label[None], affine=h.affine))
    args = mem(subj).applied_transforms[-1][1]
    assert json.dumps(args) and args["donors"].startswith("lesionmix-pool:")


def test_lesionmix_takes_its_training_set_through_the_donor_transform(tmp_path):
    # Stored LAS and RAS: after Orientationd all three share one RAS grid, but the files do not, so
    # a bank and likelihood map built from the files would not fit the reoriented host.
    from napari_lesionmix.integrations.monai_transforms import RandLesionMixd

    items = []
    for i in range(3):
        shape = (26, 24, 20)
        case = make_case(seed=60 + i, n_lesions=3, shape=shape, spacing=(1.0, 1.0, 1.0), case_id=f"t{i}")
        if i != 1:
            flip_x = np.diag([-1.0, 1, 1, 1])
            flip_x[0, 3] = shape[0] - 1
            case.affine = case.affine @ flip_x
            case.image, case.label = case.image[:, ::-1].copy(), case.label[::-1].copy()
        paths = write_case(case, tmp_path)
        items.append({"image": str(paths["images"][0]), "label": str(paths["label"]), "case_id": f"t{i}"})
    pre = Compose([LoadImaged(("image", "label")), EnsureChannelFirstd(("image", "label")),
                   Orientationd(("image", "label"), axcodes="RAS")])
    options = {"mode": "populate", "target_load": 3.0, "p_elastic": 0.0}
    t = RandLesionMixd(("image", "label"), donors=items, prob=1.0, seed=3, options=options, donor_transform=pre)
    for d in with_sample_index(items):
        host = pre(dict(d))
        out = t(dict(host))
        params = json.loads(out["lesionmix_params"])
        assert params["mode"] == "populate" and params["insertions"]
        assert {ins["case_id"] for ins in params["insertions"]} <= {"t0", "t1", "t2"}
        assert out["image"].shape == host["image"].shape
        assert np.allclose(out["image"].affine, host["image"].affine)
        assert int((out["label"] > 0).sum()) > int((host["label"] > 0).sum())
        # The pasted lesion voxels come from reoriented donors: they lie inside the host's grid as drawn.
        again = t(dict(host))
        assert out["lesionmix_params"] == again["lesionmix_params"]
        assert np.array_equal(np.asarray(out["label"]), np.asarray(again["label"]))
    # Without the transform, the files' grids are not the reoriented host's: LesionMix says so.
    plain = RandLesionMixd(("image", "label"), donors=items, prob=1.0, seed=3, options=options)
    with pytest.raises(Exception, match="grid|affine|orientation"):
        plain(dict(pre(dict(items[0]))))
    # Donors given as a mix of transformed dicts and in-memory cases are not a training set.
    with pytest.raises(Exception, match="all through a donor_transform"):
        RandLesionMixd(("image", "label"), donors=items + [make_case(seed=70, case_id="mem")], donor_transform=pre)
