"""nnU-Net v2 itself accepts an export: its dataset check passes and it trains on the export's splits.

Runs ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres --verify_dataset_integrity`` with the
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` variables pointing into a temporary
folder, then asks nnU-Net's own trainer which cases fold 0 trains and validates on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed (pip install 'napari-lesionmix[nnunet]')")

from napari_lesionmix.evaluate.protocol import link_cases  # noqa: E402
from napari_lesionmix.export import ExportConfig, export_dataset  # noqa: E402
from napari_lesionmix.sample_data import sample_dataset  # noqa: E402

DATASET_ID = 987
CASES = ("sub-01", "sub-02", "sub-04", "sub-06")


@pytest.fixture(scope="module")
def nnunet_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    env = {k: os.fspath(root / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in env.values():
        os.makedirs(path)
    src = link_cases([sample_dataset()[c] for c in CASES], root / "source")
    out = root / "nnUNet_raw" / f"Dataset{DATASET_ID}_LesionMixTest"
    # Real cases copied, one held out, synthetic cases from both CarveMix and Soft-CP, 2 folds.
    export_dataset(ExportConfig(os.fspath(src), os.fspath(out), n=3, methods=(("carvemix", 1.0), ("softcp", 1.0)),
                                seed=0, include_real=True, holdout_fraction=0.25, n_folds=2))
    full_env = {**os.environ, **env, "OMP_NUM_THREADS": "1", "nnUNet_n_proc_DA": "1",
                "nnUNet_def_n_proc": "1"}
    cmd = [sys.executable, "-c",
           "import sys; from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import "
           "plan_and_preprocess_entry as main; sys.argv[0] = 'nnUNetv2_plan_and_preprocess'; sys.exit(main())",
           "-d", str(DATASET_ID), "-c", "3d_fullres", "--verify_dataset_integrity", "-np", "1", "-npfp", "1",
           "--no_pbar"]
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=900)
    return env, out, proc


def test_nnunet_plan_and_preprocess_with_integrity_check_passes(nnunet_env):
    env, out, proc = nnunet_env
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pre = os.path.join(env["nnUNet_preprocessed"], out.name)
    assert os.path.isfile(os.path.join(pre, "nnUNetPlans.json"))
    assert os.path.isdir(os.path.join(pre, "nnUNetPlans_3d_fullres"))


def test_nnunet_trains_on_the_exports_splits(nnunet_env):
    env, out, proc = nnunet_env
    assert proc.returncode == 0, proc.stderr[-3000:]
    pre = os.path.join(env["nnUNet_preprocessed"], out.name)
    ours = json.loads((out / "splits_final.json").read_text())
    assert json.loads(open(os.path.join(pre, "splits_final.json")).read()) == ours
    # nnU-Net's own trainer, asked for fold 0, returns our fold 0 (it reads the file in a fresh process,
    # where the nnUNet_* variables are set before nnunetv2 is imported).
    script = (
        "import json, sys, torch\n"
        "from batchgenerators.utilities.file_and_folder_operations import load_json\n"
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        f"pre = {pre!r}\n"
        "plans = load_json(pre + '/nnUNetPlans.json')\n"
        "plans['continue_training'] = False  # what nnUNetv2_train passes for a new training\n"
        "t = nnUNetTrainer(plans, '3d_fullres', 0, load_json(pre + '/dataset.json'), device=torch.device('cpu'))\n"
        "tr, val = t.do_split()\n"
        "print(json.dumps({'train': sorted(tr), 'val': sorted(val)}))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    used = json.loads(res.stdout.strip().splitlines()[-1])
    assert used == {"train": sorted(ours[0]["train"]), "val": sorted(ours[0]["val"])}
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    # No synthetic case that nnU-Net trains on in fold 0 was made from a fold-0 validation case.
    sources = {r["id"]: set(r["sources"]) for r in manifest}
    for case in used["train"]:
        assert not sources[case] & set(used["val"]), case
