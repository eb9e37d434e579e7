"""Online augmentation inside nnU-Net v2: the transform on its own, then real training runs on the CPU.

The training tests build a tiny dataset (six 24x28x20 cases exported by ``lesionmix export``, then
``nnUNetv2_plan_and_preprocess``), and run one epoch of two iterations with the ``_smoke`` trainers on the
CPU with data augmentation in the main process (``nnUNet_n_proc_DA=0``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed (pip install 'napari-lesionmix[nnunet]')")
torch = pytest.importorskip("torch")

from factories import make_case, write_case  # noqa: E402

from napari_lesionmix.errors import LesionMixError  # noqa: E402
from napari_lesionmix.integrations import nnunet  # noqa: E402

DATASET_ID = 986
SHAPE = (24, 28, 20)


class _FakeDataset:
    """nnU-Net's dataset interface over in-memory cases (``load_case`` -> data, seg, prev, properties)."""

    cases: dict = {}

    def __init__(self, folder, keys):
        self.keys = list(keys)

    def load_case(self, key):
        assert key in self.keys, f"{key} is not a training case of the fold"
        case = self.cases[key]
        seg = case.label[None].astype(np.int16)
        locs = {1: np.argwhere(seg == 1)}
        return case.image, seg, None, {"class_locations": locs}


@pytest.fixture
def fake_fold():
    _FakeDataset.cases = {f"c{i}": make_case(seed=i, n_lesions=3) for i in range(4)}
    return nnunet.DonorPatches("unused", ["c1", "c2"], _FakeDataset)


def _patch(seed=9):
    case = make_case(seed=seed, n_lesions=1)
    seg = case.label[None].astype(np.int16)
    seg[:, :2] = -1  # outside nnU-Net's nonzero region
    return torch.from_numpy(case.image.copy()), torch.from_numpy(seg)


def test_transform_mixes_donor_patches_of_training_cases_only_and_repeats(fake_fold):
    t = nnunet.OnlineLesionTransform("carvemix", {}, 1.0, 3, fake_fold, (1.2, 1.0, 1.5))
    image, seg = _patch()
    out = [t(image=image.clone(), segmentation=seg.clone()) for _ in range(3)]
    assert int(t.counts[0].value) == 3 and int(t.counts[1].value) == 0
    assert all(o["image"].shape == image.shape and o["segmentation"].dtype == seg.dtype for o in out)
    assert not torch.equal(out[0]["image"], image)  # the donor's lesion is pasted in
    assert (out[0]["segmentation"] == 1).sum() > (seg == 1).sum()
    assert torch.all(out[0]["segmentation"][:, :2][out[0]["segmentation"][:, :2] != 1] == -1)
    # Patch k is a function of (seed, k): a fresh transform repeats the same three patches.
    again = nnunet.OnlineLesionTransform("carvemix", {}, 1.0, 3, fake_fold, (1.2, 1.0, 1.5))
    for o in out:
        assert torch.equal(again(image=image.clone(), segmentation=seg.clone())["image"], o["image"])
    assert "carvemix" in repr(t) and "2 training cases" in repr(t)


def test_transform_prob_zero_leaves_patches_and_softcp_runs(fake_fold):
    image, seg = _patch()
    t = nnunet.OnlineLesionTransform("carvemix", {}, 0.0, 0, fake_fold, (1.2, 1.0, 1.5))
    o = t(image=image.clone(), segmentation=seg.clone())
    assert torch.equal(o["image"], image) and torch.equal(o["segmentation"], seg)
    s = nnunet.OnlineLesionTransform("softcp", {}, 1.0, 0, fake_fold, (1.2, 1.0, 1.5))
    for _ in range(2):
        s(image=image.clone(), segmentation=seg.clone())
    assert int(s.counts[0].value) + int(s.counts[1].value) == 2 and int(s.counts[0].value) >= 1


def test_settings_from_env_are_checked():
    opts, prob, seed = nnunet.settings_from_env("carvemix", {"LESIONMIX_OPTIONS": '{"per_lesion": true}',
                                                             "LESIONMIX_PROB": "1", "LESIONMIX_SEED": "4"})
    assert opts.per_lesion is True and (prob, seed) == (1.0, 4)
    with pytest.raises(LesionMixError, match="soft labels"):
        nnunet.settings_from_env("mixup", {})
    assert nnunet.settings_from_env("mixup", {"LESIONMIX_OPTIONS": '{"label": "hard"}'})[0].label == "hard"
    for bad in ({"LESIONMIX_OPTIONS": "[1]"}, {"LESIONMIX_PROB": "2"}, {"LESIONMIX_OPTIONS": '{"nope": 1}'}):
        with pytest.raises(LesionMixError):
            nnunet.settings_from_env("carvemix", bad)


# ----------------------------------------------------------------------------- real nnU-Net runs


@pytest.fixture(scope="module")
def tiny_nnunet(tmp_path_factory):
    """A tiny export, planned and preprocessed by nnU-Net (3d_fullres)."""
    root = tmp_path_factory.mktemp("nnunet_online")
    env = {k: os.fspath(root / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in env.values():
        os.makedirs(path)
    src = root / "source"
    for i in range(6):
        write_case(make_case(seed=20 + i, n_lesions=2, case_id=f"s{i}"), src)
    env = {**os.environ, **env, "OMP_NUM_THREADS": "1", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)}
    lesionmix = [sys.executable, "-m", "napari_lesionmix.cli"]
    proc = subprocess.run([*lesionmix, "export", "--dataset", os.fspath(src), "--dataset-id", str(DATASET_ID),
                           "--name", "Tiny", "--n", "2", "--include-real", "--folds", "2", "--seed", "0"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = [sys.executable, "-c",
            "import sys; from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import "
            "plan_and_preprocess_entry as main; sys.argv[0] = 'nnUNetv2_plan_and_preprocess'; sys.exit(main())",
            "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--no_pbar"]
    # nnU-Net 2.8's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which refuses 0: 0 is for training only
    proc = subprocess.run(plan, env={**env, "nnUNet_n_proc_DA": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env, root


def _fold_dir(env, trainer):
    return os.path.join(env["nnUNet_results"], f"Dataset{DATASET_ID}_Tiny", f"{trainer}__nnUNetPlans__3d_fullres",
                        "fold_0")


def test_lesionmix_nnunet_train_runs_carvemix_online(tiny_nnunet):
    env, _ = tiny_nnunet
    cmd = [sys.executable, "-m", "napari_lesionmix.cli", "nnunet-train", str(DATASET_ID), "3d_fullres", "0",
           "--method", "carvemix", "--prob", "1", "--seed", "0", "--smoke", "-device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = _fold_dir(env, "nnUNetTrainerCarveMix_smoke")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert os.path.isfile(os.path.join(out, "checkpoint_final.pth"))
    record = json.loads(open(os.path.join(out, "lesionmix_online.json")).read())
    splits = json.loads(open(os.path.join(env["nnUNet_preprocessed"], f"Dataset{DATASET_ID}_Tiny",
                                          "splits_final.json")).read())
    assert record["donors"] == sorted(splits[0]["train"])  # the fold's training cases, no validation case
    assert not set(record["donors"]) & set(splits[0]["val"])
    assert _changed(out, "CarveMix") >= nnunet.SMOKE_ITERATIONS[0]
    _assert_model_carries_the_export(env, out)


def _changed(fold_dir, label) -> int:
    """Patches the method changed, from the last LesionMix line of the training log."""
    log = "".join(open(os.path.join(fold_dir, f)).read() for f in os.listdir(fold_dir) if f.startswith("training_log"))
    changed = [int(line.split("changed ")[1].split()[0]) for line in log.splitlines() if f"{label} changed" in line]
    assert changed, log[-2000:]
    return changed[-1]


def _assert_model_carries_the_export(env, fold_dir):
    """The trained model's folder has the export's summary (dataset.json) and its manifest, hash checked."""
    import hashlib

    from napari_lesionmix.export.provenance import DATASET_JSON_KEY

    model = os.path.dirname(fold_dir)
    summary = json.loads(open(os.path.join(model, "dataset.json")).read())[DATASET_JSON_KEY]
    assert summary["seed"] == 0 and summary["methods"] == [["carvemix", 1.0]]
    assert summary["cases_by_method"] == {"carvemix": 2, "real": 6} and summary["source_cases_used"]
    manifest = open(os.path.join(model, nnunet.MANIFEST_COPY), "rb").read()
    assert hashlib.sha256(manifest).hexdigest() == summary["manifest_sha256"]
    raw = os.path.join(env["nnUNet_raw"], f"Dataset{DATASET_ID}_Tiny", "manifest.jsonl")
    assert manifest == open(raw, "rb").read()


def test_lesionmix_trainer_runs_through_nnunetv2_train(tiny_nnunet):
    """``nnUNetv2_train -tr nnUNetTrainerLesionMix_smoke`` (nnU-Net's own command and trainer search)."""
    env, _ = tiny_nnunet
    # Two data-augmentation worker processes (nnU-Net's NonDetMultiThreadedAugmenter), numbered for the draws.
    env = {**env, "nnUNet_extTrainer": nnunet.TRAINER_DIR, "LESIONMIX_PROB": "1", "LESIONMIX_SEED": "0",
           "LESIONMIX_OPTIONS": '{"mode": "populate", "load_dist": "high"}', "nnUNet_n_proc_DA": "2"}
    proc = subprocess.run(_nnunetv2_train("nnUNetTrainerLesionMix_smoke"), env=env, capture_output=True, text=True,
                          timeout=600)
    out = _fold_dir(env, "nnUNetTrainerLesionMix_smoke")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert os.path.isfile(os.path.join(out, "checkpoint_final.pth"))
    record = json.loads(open(os.path.join(out, "lesionmix_online.json")).read())
    splits = json.loads(open(os.path.join(env["nnUNet_preprocessed"], f"Dataset{DATASET_ID}_Tiny",
                                          "splits_final.json")).read())
    assert record["method"] == "lesionmix" and record["options"]["load_dist"] == "high"
    assert record["donors"] == sorted(splits[0]["train"]) and not set(record["donors"]) & set(splits[0]["val"])
    assert record["lesions"] > 0 and sorted(record["case_loads_ml"]) == record["donors"]
    assert _changed(out, "LesionMix") >= 1
    log = "".join(open(os.path.join(out, f)).read() for f in os.listdir(out) if f.startswith("training_log"))
    assert "NonDetMultiThreadedAugmenter over WorkerAwarennUNetDataLoader: each worker's draws keyed" in log
    _assert_model_carries_the_export(env, out)


def _torchvision_imports() -> bool:
    return subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0


#: nnU-Net's Primus trainers import timm -> torchvision; a torchvision of another torch build fails there.
PRIMUS = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"


def _entry(import_line: str) -> str:
    """``import_line`` as nnU-Net runs it, with only the Primus module stood in for when torchvision cannot load."""
    if _torchvision_imports():
        return import_line
    # nnUNetv2_train's trainer search imports every module nnU-Net ships; its Primus trainers need timm ->
    # torchvision, which here does not match torch ('operator torchvision::nms does not exist'). Only that
    # module is stood in for; the search, the extTrainer lookup and the training are nnU-Net's own.
    return f"import sys, types\nsys.modules[{PRIMUS!r}] = types.ModuleType('primus_stub')\n{import_line}"


def _nnunetv2_train(trainer: str) -> list[str]:
    """``nnUNetv2_train DATASET 3d_fullres 0 -tr TRAINER -device cpu`` (nnU-Net's entry point, run as a script)."""
    entry = _entry("from nnunetv2.run.run_training import run_training_entry as main")
    return [sys.executable, "-c", f"{entry}\nimport sys; sys.argv[0] = 'nnUNetv2_train'; sys.exit(main())",
            str(DATASET_ID), "3d_fullres", "0", "-tr", trainer, "-device", "cpu"]


def test_torchvision_matches_torch():
    """The README's install gives a torchvision that loads beside torch, so nnU-Net's search needs no stand-in."""
    if not _torchvision_imports():
        err = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True).stderr
        pytest.skip(f"torchvision does not load beside torch {torch.__version__} here ({err.strip().splitlines()[-1]}"
                    "); the -tr runs stand in for nnU-Net's Primus module. Install the pair as the README says.")
    proc = subprocess.run([sys.executable, "-c", f"import importlib; importlib.import_module({PRIMUS!r})"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_nnunet_trainer_search_finds_every_trainer():
    """nnU-Net's own search (its package first, then ``nnUNet_extTrainer``) finds each trainer as our class."""
    code = _entry("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find") + (
        "\nfrom napari_lesionmix.integrations import nnunet\n"
        "for name, cls in nnunet.TRAINERS.items():\n"
        "    got = find(name)\n"
        "    assert (got.__module__, got.__qualname__) == (cls.__module__, cls.__qualname__), (name, got)\n"
        "print(len(nnunet.TRAINERS))")
    env = {**os.environ, "nnUNet_extTrainer": nnunet.TRAINER_DIR,
           "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(len(nnunet.TRAINERS))


def test_plain_nnunetv2_train_runs_on_an_export(tiny_nnunet):
    env, _ = tiny_nnunet
    env = {**env, "nnUNet_extTrainer": nnunet.TRAINER_DIR}
    proc = subprocess.run(_nnunetv2_train("nnUNetTrainer_smoke"), env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = _fold_dir(env, "nnUNetTrainer_smoke")
    assert os.path.isfile(os.path.join(out, "checkpoint_final.pth"))
    _assert_model_carries_the_export(env, out)
