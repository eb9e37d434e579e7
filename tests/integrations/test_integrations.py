"""The training-loop faces: LesionMixDataset, MONAI and TorchIO transforms, through real DataLoaders.

Each face must give the same samples for 0, 1 and 2 workers, keep the affine,
and record params that replay offline (Python and the CLI) to the same bytes.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment import registry
from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.integrations import LesionMixDataset, spawn_index

torch = pytest.importorskip("torch", reason="the training-loop integrations are tested through torch's DataLoader")

N_CASES = 4


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for s in range(N_CASES):
        write_case(make_case(seed=60 + s, n_lesions=3, case_id=f"c{s}"), root)
    return root


def _files(root):
    return [{"image": str(root / f"c{s}.nii.gz"), "label": str(root / f"c{s}_seg.nii.gz")} for s in range(N_CASES)]


def _loader_items(dataset, workers: int, collate=None):
    """Every item of one pass through a real DataLoader (one item per batch, in order)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         **({"collate_fn": collate} if collate else {}))
    return list(loader)


def _as_np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _cli_replay(params_json: str, root, tmp_path, name: str) -> dict:
    """Replay recorded params with ``lesionmix METHOD --params`` and read back what it wrote."""
    params = json.loads(params_json)
    path = tmp_path / f"{name}.json"
    path.write_text(params_json)
    host = params["host_id"]
    if params.get("donor_id"):
        donor = params["donor_id"]
        args = ["--host-image", str(root / f"{host}.nii.gz"), "--host-label", str(root / f"{host}_seg.nii.gz"),
                "--donor-image", str(root / f"{donor}.nii.gz"), "--donor-label", str(root / f"{donor}_seg.nii.gz")]
    else:
        args = ["--host", host, "--dataset", str(root)]
    out = tmp_path / f"replay-{name}"
    assert main([params["method"], *args, "--params", str(path), "--out", str(out)]) == 0
    return {"image": np.asanyarray(nib.load(out / "image_0000.nii.gz").dataobj)[None],
            "label": np.asanyarray(nib.load(out / "label.nii.gz").dataobj)}


# ----------------------------------------------------------------------------- the spawn rule and the dataset


def test_spawn_rule_gives_each_epoch_and_item_its_own_index():
    assert [spawn_index(e, i, 3) for e in range(2) for i in range(3)] == list(range(6))
    with pytest.raises(LesionMixError, match="outside a dataset of 3 items"):
        spawn_index(0, 3, 3)


def test_dataset_items_are_the_same_for_0_1_and_2_workers(dataset_dir):
    ds = LesionMixDataset(dataset_dir, methods=registry.method_names(), seed=5, length=6)
    runs = [_loader_items(ds, w) for w in (0, 1, 2)]
    methods = {it["method"] for it in runs[0]}
    assert len(methods) >= 3  # several methods are really drawn
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert a["params"] == b["params"]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert np.array_equal(_as_np(runs[0][0]["affine"]), nib.load(dataset_dir / "c0.nii.gz").affine)
    assert [int(it["index"]) for it in runs[0]] == list(range(6))
    ds.set_epoch(1)
    second = _loader_items(ds, 2)
    assert [int(it["index"]) for it in second] == list(range(6, 12))
    assert all(a["params"] != b["params"] for a, b in zip(runs[0], second, strict=True))


@pytest.mark.parametrize("method", ["carvemix", "lesionmix"])
def test_dataset_params_replay_offline_to_the_same_bytes(dataset_dir, tmp_path, method):
    logged = []
    ds = LesionMixDataset(dataset_dir, methods=method, seed=2, on_sample=lambda i, p: logged.append((i, p)))
    item = ds[1]
    assert logged == [(1, item["params"])]
    syn = ds.replay(item["params"])
    assert np.array_equal(syn.image, item["image"]) and np.array_equal(syn.label, item["label"][0])
    out = _cli_replay(item["params"], dataset_dir, tmp_path, method)
    assert np.array_equal(out["image"], item["image"])
    assert np.array_equal(out["label"], item["label"][0])


def test_dataset_mixes_real_and_synthetic_items(dataset_dir):
    ds = LesionMixDataset(dataset_dir, methods="carvemix", seed=0, p_synthetic=0.5, length=12)
    items = [ds[i] for i in range(12)]
    real = [it for it in items if not it["params"]]
    assert 0 < len(real) < 12
    host = make_case(seed=60 + int(real[0]["case_id"][1:]), n_lesions=3)
    assert np.array_equal(real[0]["image"], host.image)


def test_dataset_items_without_the_mask_are_the_same_items(dataset_dir):
    full = LesionMixDataset(dataset_dir, methods="carvemix", seed=1, p_synthetic=0.5, length=6)
    slim = LesionMixDataset(dataset_dir, methods="carvemix", seed=1, p_synthetic=0.5, length=6, with_mask=False)
    for i in range(6):
        a, b = full[i], slim[i]
        assert "mask" in a and "mask" not in b and set(a) - set(b) == {"mask"}
        for key in b:
            assert np.array_equal(a[key], b[key]) if isinstance(b[key], np.ndarray) else a[key] == b[key]


def test_dataset_rejects_bad_settings(dataset_dir):
    with pytest.raises(LesionMixError, match="Unknown augmentation method 'nope'"):
        LesionMixDataset(dataset_dir, methods="nope")
    with pytest.raises(LesionMixError, match="not among the methods"):
        LesionMixDataset(dataset_dir, methods="carvemix", options={"softcp": {"a": 0.5}})
    with pytest.raises(LesionMixError, match=r"prob must lie in \[0, 1\]"):
        LesionMixDataset(dataset_dir, p_synthetic=1.5)
    with pytest.raises(LesionMixError, match="Option carvemix.connectivity must be one of"):
        LesionMixDataset(dataset_dir, options={"carvemix": {"connectivity": 5}})


# ----------------------------------------------------------------------------- MONAI


def _monai_pipeline(transform):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    return Compose([LoadImaged(("image", "label")), EnsureChannelFirstd(("image", "label")), transform])


@pytest.mark.parametrize("cache", [False, True])
def test_monai_samples_are_the_same_for_0_1_and_2_workers(dataset_dir, cache):
    monai = pytest.importorskip("monai", reason="MONAI is not installed (pip install 'napari-lesionmix[monai]')")
    from napari_lesionmix.integrations.monai_transforms import RandCarveMixd, with_sample_index

    files = _files(dataset_dir)
    rand = RandCarveMixd(keys=("image", "label"), donors=dataset_dir, prob=1.0, seed=3, mask_key="mask")
    kind = monai.data.CacheDataset if cache else monai.data.Dataset
    kwargs = {"progress": False} if cache else {}
    ds = kind(data=with_sample_index(files), transform=_monai_pipeline(rand), **kwargs)
    runs = [list(monai.data.DataLoader(ds, batch_size=1, num_workers=w)) for w in (0, 1, 2)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert a["lesionmix_params"] == b["lesionmix_params"]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    first = runs[0][0]
    assert isinstance(first["image"], monai.data.MetaTensor)
    assert np.array_equal(_as_np(first["image"].affine[0]), nib.load(files[0]["image"]).affine)
    assert first["image"].shape == (1, 1, 24, 28, 20) and first["mask"].shape == (1, 1, 24, 28, 20)
    assert json.loads(first["lesionmix_params"][0])["sample_index"] == 0
    rand.set_epoch(1, len(files))
    again = list(monai.data.DataLoader(ds, batch_size=1, num_workers=2))
    assert [json.loads(b["lesionmix_params"][0])["sample_index"] for b in again] == [4, 5, 6, 7]


def test_monai_transform_keeps_meta_and_replays_through_the_cli(dataset_dir, tmp_path):
    monai = pytest.importorskip("monai", reason="MONAI is not installed (pip install 'napari-lesionmix[monai]')")
    from napari_lesionmix.integrations import RandSoftCPd

    files = _files(dataset_dir)
    pipeline = _monai_pipeline(RandSoftCPd(donors=files, prob=1.0))
    pipeline.set_random_state(11)  # MONAI's own seeding drives samples without an index
    d = pipeline(files[0])
    pipeline.set_random_state(11)
    assert d["lesionmix_params"] == pipeline(files[0])["lesionmix_params"]
    assert isinstance(d["image"], monai.data.MetaTensor) and isinstance(d["label"], monai.data.MetaTensor)
    assert d["image"].meta["filename_or_obj"] == files[0]["image"]
    assert np.array_equal(_as_np(d["label"].affine), nib.load(files[0]["label"]).affine)
    params = json.loads(d["lesionmix_params"])
    assert params["method"] == "softcp" and params["host_id"] == "c0"
    out = _cli_replay(d["lesionmix_params"], dataset_dir, tmp_path, "softcp")
    assert np.array_equal(out["image"], _as_np(d["image"]))
    assert np.array_equal(out["label"], _as_np(d["label"])[0])


def test_monai_transform_with_prob_0_leaves_the_sample(dataset_dir):
    pytest.importorskip("monai", reason="MONAI is not installed (pip install 'napari-lesionmix[monai]')")
    from napari_lesionmix.integrations import RandLesionMixd

    files = _files(dataset_dir)
    plain = _monai_pipeline(RandLesionMixd(donors=files, prob=0.0))(files[1])
    loaded = nib.load(files[1]["image"]).get_fdata(dtype=np.float32)
    assert np.array_equal(_as_np(plain["image"])[0], loaded) and plain["lesionmix_params"] == ""
    with pytest.raises(LesionMixError, match="takes lesions from a training set"):
        RandLesionMixd(donors=[{"image": np.zeros((1, 4, 4, 4)), "label": np.zeros((4, 4, 4))}])


# ----------------------------------------------------------------------------- TorchIO


def _subject(tio, root, s: int, **extra):
    return tio.Subject(image=tio.ScalarImage(root / f"c{s}.nii.gz"), label=tio.LabelMap(root / f"c{s}_seg.nii.gz"),
                       **extra)


def test_torchio_history_replays_exactly_in_torchio_and_the_cli(dataset_dir, tmp_path):
    tio = pytest.importorskip("torchio", reason="TorchIO is not installed (pip install 'napari-lesionmix[torchio]')")
    from napari_lesionmix.integrations import RandomCarveMix

    subject = _subject(tio, dataset_dir, 0)
    transform = tio.Compose([tio.RandomFlip(axes=(0,), flip_probability=0.0), RandomCarveMix(donors=dataset_dir)])
    torch.manual_seed(4)  # TorchIO's own seeding drives samples without an index
    out = transform(subject)
    name, args = out.applied_transforms[-1]
    assert name == "LesionAugment" and args["params"]["method"] == "carvemix" and args["params"]["host_id"] == "c0"
    assert not torch.equal(out["image"].data, subject["image"].data)
    assert np.array_equal(out["image"].affine, subject["image"].affine)
    replayed = out.get_composed_history()(subject)
    assert torch.equal(replayed["image"].data, out["image"].data)
    assert torch.equal(replayed["label"].data, out["label"].data)
    cli = _cli_replay(json.dumps(args["params"]), dataset_dir, tmp_path, "tio")
    assert np.array_equal(cli["image"], out["image"].data.numpy())
    assert np.array_equal(cli["label"], out["label"].data.numpy()[0])


def test_torchio_samples_are_the_same_for_0_1_and_2_workers(dataset_dir):
    tio = pytest.importorskip("torchio", reason="TorchIO is not installed (pip install 'napari-lesionmix[torchio]')")
    from napari_lesionmix.integrations import RandomLesionMix, RandomSoftCP

    subjects = [_subject(tio, dataset_dir, s, lesionmix_index=s) for s in range(N_CASES)]
    donors = [_subject(tio, dataset_dir, s) for s in range(N_CASES)]
    transform = tio.Compose([RandomSoftCP(donors=donors, seed=1), RandomLesionMix(donors=dataset_dir, seed=1)])
    ds = tio.SubjectsDataset(subjects, transform=transform)
    runs = [list(tio.SubjectsLoader(ds, batch_size=1, num_workers=w)) for w in (0, 1, 2)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(a["image"]["data"], b["image"]["data"])
            assert torch.equal(a["label"]["data"], b["label"]["data"])
    one = ds[2]
    assert [n for n, _ in one.applied_transforms] == ["LesionAugment", "LesionAugment"]
    assert [a["params"]["sample_index"] for _, a in one.applied_transforms] == [2, 2]
    assert torch.equal(one["image"].data, runs[0][2]["image"]["data"][0])
    assert not torch.equal(one["image"].data, subjects[2]["image"].data)
