"""The core (library, CLI, export) works with no Qt, napari or torch installed.

Each test runs a child Python in which a meta-path finder makes ``import napari``,
``qtpy``, the Qt bindings, ``magicgui`` and ``npe2`` (and, where said, torch and
the training libraries) fail as they do when the package is missing: cheaper
than a fresh virtualenv, and it catches an import at any depth. The wheel in a
real clean virtualenv is tests/test_packaging.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "npe2", "vispy", "superqt",
       "app_model", "pytestqt")
TRAINING = ("torch", "torchvision", "monai", "torchio", "nnunetv2")

# Installed first in the child: ``find_spec`` of a blocked top-level name raises ModuleNotFoundError,
# exactly what Python raises for a package that is not installed.
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set({blocked!r})
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, f"loaded before the blocker: {{loaded}}"
    class _Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, _Absent())
""")


def run_without(blocked, code: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python where the top-level packages ``blocked`` cannot be imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def pair_args(host="sub-01", donor="sub-07") -> list[str]:
    return ["--host-image", f"{SAMPLE}/{host}.nii.gz", "--host-label", f"{SAMPLE}/{host}_seg.nii.gz",
            "--donor-image", f"{SAMPLE}/{donor}.nii.gz", "--donor-label", f"{SAMPLE}/{donor}_seg.nii.gz"]


def test_the_blocker_blocks(tmp_path):
    # The test is only worth something if the child really cannot import napari (installed here).
    proc = run_without(GUI, "import napari", tmp_path, check=False)
    assert proc.returncode == 1 and "No module named 'napari' (blocked by the test)" in proc.stderr


def test_every_core_module_and_npe2_hook_imports_without_qt_or_napari(tmp_path):
    proc = run_without(GUI, """
        import importlib, pkgutil, sys
        import napari_lesionmix
        names = [m.name for m in pkgutil.walk_packages(napari_lesionmix.__path__, "napari_lesionmix.")
                 if not m.name.startswith("napari_lesionmix.widgets") and not m.name.endswith("__main__")]
        for name in names:
            importlib.import_module(name)
        # the manifest's hooks do their work without napari too
        from napari_lesionmix._sample_data import load_pair
        from napari_lesionmix._reader import napari_get_reader
        layers = load_pair()
        path = str(napari_lesionmix.sample_data.sample_data_dir() / "sub-01.nii.gz")
        print(len(names), len(layers), len(napari_get_reader(path)(path)))
    """, tmp_path)
    n_modules, n_layers, n_read = map(int, proc.stdout.split())
    assert n_modules > 50 and n_layers == 4 and n_read == 1


def test_carvemix_cli_library_and_export_without_qt_napari_or_torch(tmp_path):
    args = ["carvemix", *pair_args(), "--seed", "3", "--out", str(tmp_path / "cm")]
    proc = run_without(GUI + TRAINING, f"""
        import sys
        from napari_lesionmix.cli import main
        assert main({args!r}) == 0
        assert main(["export", "--dataset", {str(SAMPLE)!r}, "--out", "Dataset502_Slim", "--n", "2",
                     "--seed", "0", "--folds", "0", "--no-progress"]) == 0
        from napari_lesionmix.augment import registry
        from napari_lesionmix.io import load_case
        host = load_case({str(SAMPLE / "sub-01.nii.gz")!r}, {str(SAMPLE / "sub-01_seg.nii.gz")!r})
        donor = load_case({str(SAMPLE / "sub-07.nii.gz")!r}, {str(SAMPLE / "sub-07_seg.nii.gz")!r})
        import numpy as np
        syn = registry.generate("carvemix", host, donor, seed=3, index=0)
        np.save("library_label.npy", syn.label)
        print(sorted(m for m in sys.modules if m.split(".")[0] in {set(GUI + TRAINING)!r}))
    """, tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    cli_label = np.asanyarray(nib.load(tmp_path / "cm" / "label.nii.gz").dataobj)
    library_label = np.load(tmp_path / "library_label.npy")
    assert cli_label.any() and np.array_equal(cli_label, library_label)  # the same sample in both faces
    meta = json.loads((tmp_path / "Dataset502_Slim" / "dataset.json").read_text())
    assert meta["numTraining"] == 2
    assert len(list((tmp_path / "Dataset502_Slim" / "labelsTr").glob("*.nii.gz"))) == 2


def test_harmonize_without_torch_names_the_extra_and_hm_still_works(tmp_path):
    made = run_without(GUI + TRAINING, f"""
        from napari_lesionmix.cli import main
        assert main({["carvemix", *pair_args(), "--seed", "3", "--out", "cm"]!r}) == 0
        assert main(["harmonize", "--image", "cm/image_0000.nii.gz", "--mask", "cm/mask.nii.gz",
                     "--label", "cm/label.nii.gz", "--method", "hm", "--out", "hm"]) == 0
        code = main(["harmonize", "--image", "cm/image_0000.nii.gz", "--mask", "cm/mask.nii.gz",
                     "--method", "arhnet", "--out", "arh"])
        print("exit", code)
        import napari_lesionmix.harmonize as h
        try:
            h.ARHNetHarmonizer
        except Exception as exc:
            print(type(exc).__name__)
    """, tmp_path)
    assert (tmp_path / "hm" / "image_0000.nii.gz").is_file()
    assert made.stdout.split()[-3:] == ["exit", "2", "LesionMixError"]
    (line,) = [ln for ln in made.stderr.splitlines() if "error" in ln]
    assert "needs PyTorch" in line and "napari-lesionmix[harmonize]" in line


def test_the_studio_without_napari_says_which_extra(tmp_path):
    proc = run_without(GUI, """
        from napari_lesionmix.studio import main
        main([])
    """, tmp_path, check=False)
    assert proc.returncode == 1
    assert "napari-lesionmix[qt]" in proc.stderr and "napari" in proc.stderr.splitlines()[-1]
