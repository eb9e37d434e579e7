"""The wheel carries the sample data and the napari manifest, and finds them when installed."""

from __future__ import annotations

import os
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


#: The packages a core install must not bring (the studio's and harmonization's extras do).
NOT_IN_CORE = ("napari", "pyqt6", "pyqt5", "pyside6", "qtpy", "magicgui", "npe2", "vispy", "torch", "monai", "torchio")


def test_core_metadata_leaves_qt_napari_and_torch_to_extras(wheel):
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))
    requires = [ln.split(":", 1)[1].strip() for ln in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if ln.startswith("Requires-Dist:")]
    core = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().lower() for r in requires if ";" not in r}
    assert core and not core & set(NOT_IN_CORE), core
    extras = {r.split("extra ==")[1].strip(" '\""): r.split(";")[0] for r in requires if "extra ==" in r}
    for extra in ("studio", "qt", "harmonize", "monai", "torchio", "nnunet", "all", "test"):
        assert extra in extras, f"extra {extra!r} missing"
    studio = [r.split(";")[0] for r in requires if r.endswith("extra == 'studio'")]
    assert {"napari>=0.5", "magicgui>=0.8", "qtpy>=2.4", "npe2>=0.7", "torch>=2.2"} <= set(studio)


@pytest.mark.skipif(os.environ.get("LESIONMIX_CLEAN_VENV") != "1",
                    reason="installs the wheel and its dependencies into a new venv (about 30 s from a local "
                           "index): set LESIONMIX_CLEAN_VENV=1 (.ci/run does)")
def test_wheel_installs_in_a_clean_venv_and_runs_carvemix(wheel, tmp_path):
    venv = tmp_path / "venv"
    # Nothing of this checkout or of the test venv may leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                         timeout=900, env=env)
    assert pip.returncode == 0, pip.stderr[-2000:]
    installed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                               check=True, env=env).stdout.lower()
    names = {ln.split("==")[0] for ln in installed.split()}
    assert "napari-lesionmix" in names and not names & set(NOT_IN_CORE), names & set(NOT_IN_CORE)
    s = "import napari_lesionmix.sample_data as s; print(s.sample_data_dir())"
    data = Path(subprocess.run([str(py), "-c", s], capture_output=True, text=True, check=True,
                               cwd=tmp_path, env=env).stdout.strip())
    assert data.is_relative_to(venv) and (data / "sub-07_seg.nii.gz").is_file()
    pair = [f"--host-image={data}/sub-01.nii.gz", f"--host-label={data}/sub-01_seg.nii.gz",
            f"--donor-image={data}/sub-07.nii.gz", f"--donor-label={data}/sub-07_seg.nii.gz"]
    proc = subprocess.run([str(venv / "bin" / "lesionmix"), "carvemix", *pair, "--seed", "3", "--out", "cm"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cm" / "label.nii.gz").is_file() and (tmp_path / "cm" / "params.json").is_file()


def test_license_and_citation_match_the_package(wheel):
    import tomllib

    import yaml

    import napari_lesionmix

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "BSD-3-Clause"
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    assert any(n.endswith("licenses/LICENSE") for n in zipfile.ZipFile(wheel).namelist())  # ships with the wheel
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "BSD-3-Clause"
    assert str(cff["version"]) == napari_lesionmix.__version__ == project["version"]
    titles = {ref["title"].split(":")[0]: ref for ref in cff["references"]}
    assert {"CarveMix", "Soft-CP", "LesionMix", "ARHNet", "mixup", "CutMix"} <= set(titles)
    for ref in cff["references"]:
        assert ref["authors"] and all(a.get("family-names") for a in ref["authors"]) and int(ref["year"]) > 2000
