"""The wheel carries the sample data and the napari manifest, and finds them when installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
    )
    (whl,) = out.glob("napari_lesionmix-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "napari_lesionmix/napari.yaml" in names
    assert "napari_lesionmix/harmonize/weights/arhnet_sample.pt" in names  # harmonize works out of the box
    shipped = {n for n in names if n.startswith("napari_lesionmix/_data/sample_data/")}
    assert "napari_lesionmix/_data/sample_data/sub-01_seg.nii.gz" in shipped
    assert "napari_lesionmix/_data/sample_data/README.md" in shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "lesionmix = napari_lesionmix.cli:main" in text
    assert "napari_lesionmix:napari.yaml" in text


def test_installed_wheel_finds_its_sample_data(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import napari_lesionmix, napari_lesionmix.sample_data as s;"
        "print(napari_lesionmix.__file__); print(s.sample_data_dir()); print(len(s.sample_dataset()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    )
    module_file, data_dir, n = proc.stdout.split()
    assert module_file.startswith(str(site))
    assert data_dir == str(site / "napari_lesionmix" / "_data" / "sample_data")
    assert int(n) >= 8
