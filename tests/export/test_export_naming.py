"""The export's nnU-Net names: DatasetXXX_Name folders, $nnUNet_raw, channel and label names in dataset.json."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from factories import make_case, write_case

from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export.naming import dataset_folder_name, folder_warning, resolve_output

SMALL = (20, 22, 18)


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    root = tmp_path / "src"
    for k in range(3):
        write_case(make_case(seed=30 + k, n_lesions=2, case_id=f"c{k}", shape=SMALL), root)
    return root


def export(src, *args) -> list[str]:
    return ["export", "--dataset", os.fspath(src), "--n", "2", "--seed", "0", "--folds", "0", "--no-progress", *args]


def test_folder_name_from_id_and_name_under_nnunet_raw(tmp_path):
    raw = tmp_path / "raw"
    got = resolve_output(None, 7, "MSsyn", environ={"nnUNet_raw": os.fspath(raw)})
    assert got.out == raw / "Dataset007_MSsyn" and got.name == "MSsyn" and got.warning is None
    # Without $nnUNet_raw: the current folder; without --name: LesionMix.
    assert resolve_output(None, 501, environ={}).out == Path("Dataset501_LesionMix")
    # --out named DatasetXXX_Name gives dataset.json its name and no warning.
    assert resolve_output(tmp_path / "Dataset502_Lungs", environ={}).name == "Lungs"
    assert resolve_output(tmp_path / "Dataset502_Lungs", 502, environ={}).warning is None


@pytest.mark.parametrize("out, dataset_id, name, match", [
    (None, None, None, "Give the output folder"),
    (None, 0, None, "from 1 to 999"),
    (None, 1000, None, "from 1 to 999"),
    (None, 501, "my data", "no spaces"),
    ("Dataset501_A", 502, None, "names another dataset than --dataset-id/--name \\(Dataset502_A\\)"),
    ("Dataset501_A", 501, "B", "Dataset501_B"),
])
def test_bad_names_are_one_sentence(out, dataset_id, name, match):
    with pytest.raises(LesionMixError, match=match):
        resolve_output(out, dataset_id, name, environ={})


def test_warning_for_a_folder_nnunet_cannot_find():
    for bad in ("synthetic", "Dataset51_Syn", "Dataset501-Syn", "dataset501_Syn", "Dataset501_"):
        text = folder_warning(f"/x/{bad}")
        assert text and text.endswith("--out.") and "\n" not in text and f"'{bad}'" in text
    assert folder_warning("/x/Dataset501_MS-syn_2") is None
    assert dataset_folder_name(42, "Syn") == "Dataset042_Syn"


def test_cli_export_names_channels_labels_and_folder(tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", os.fspath(tmp_path / "raw"))
    code = main(export(tiny_dataset, "--dataset-id", "503", "--name", "MSsyn", "--channel-names", "FLAIR",
                       "--label-names", "lesion"))
    assert code == 0 and "warning" not in capsys.readouterr().err
    meta = json.loads((tmp_path / "raw" / "Dataset503_MSsyn" / "dataset.json").read_text())
    assert meta["name"] == "MSsyn" and meta["channel_names"] == {"0": "FLAIR"}
    assert meta["labels"] == {"background": 0, "lesion": 1}


def test_rerun_renames_a_finished_export_without_overwrite(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "Dataset504_Renamed"
    assert main(export(tiny_dataset, "--out", os.fspath(out))) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (out / "imagesTr").iterdir()}
    # The names live in dataset.json only: a rerun rewrites it and keeps every case.
    assert main(export(tiny_dataset, "--out", os.fspath(out), "--channel-names", "CT",
                       "--label-names", "edema", "tumour")) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["name"] == "Renamed"
    assert meta["labels"] == {"background": 0, "edema": 1, "tumour": 2}
    assert {p.name: p.stat().st_mtime_ns for p in (out / "imagesTr").iterdir()} == before
    assert "(0 made, 2 already done)" in capsys.readouterr().out


def test_cli_warns_once_for_a_folder_not_named_for_nnunet(tiny_dataset, tmp_path, capsys):
    assert main(export(tiny_dataset, "--out", os.fspath(tmp_path / "synthetic"))) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and "is not named DatasetXXX_Name" in err[0]
    assert (tmp_path / "synthetic" / "dataset.json").is_file()  # a warning, not a refusal


@pytest.mark.parametrize("args, match", [
    (["--channel-names", "FLAIR", "T1"], "2 channel name\\(s\\) given .* 1 channel\\(s\\)"),
    (["--channel-names", "T1 w"], "no spaces"),
    (["--label-names", "background"], "background is 0"),
    (["--name", "a/b"], "no spaces"),
])
def test_bad_dataset_json_names_stop_before_anything_is_written(tiny_dataset, tmp_path, capsys, args, match):
    import re

    out = tmp_path / "Dataset505_Bad"
    assert main(export(tiny_dataset, "--out", os.fspath(out), *args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not (out / "imagesTr").exists()


@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None,
                    reason="nnU-Net v2 is not installed (pip install 'napari-lesionmix[nnunet]')")
def test_nnunet_finds_the_folder_by_id_and_normalises_ct(tiny_dataset, tmp_path):
    raw = tmp_path / "raw"
    env = {**os.environ, "nnUNet_raw": os.fspath(raw), "nnUNet_preprocessed": os.fspath(tmp_path / "pre"),
           "nnUNet_results": os.fspath(tmp_path / "res")}
    subprocess.run([sys.executable, "-m", "napari_lesionmix.cli", *export(tiny_dataset, "--dataset-id", "506",
                    "--name", "CTsyn", "--channel-names", "CT")], check=True, env=env, capture_output=True)
    code = ("import json, os\n"
            "from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name\n"
            "from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import "
            "get_normalization_scheme\n"
            "name = maybe_convert_to_dataset_name(506)\n"
            "meta = json.load(open(os.path.join(os.environ['nnUNet_raw'], name, 'dataset.json')))\n"
            "print(name, get_normalization_scheme(meta['channel_names']['0']).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout.split() == ["Dataset506_CTsyn", "CTNormalization"]
