"""The manifest validates (with imports) and the studio opens with every widget and the sample pair."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManifest

import napari_lesionmix
from napari_lesionmix.widgets.state import get_session

MANIFEST = Path(napari_lesionmix.__file__).parent / "napari.yaml"


def test_manifest_validates_with_imports():
    pm = PluginManifest.from_file(MANIFEST)
    pm.validate_imports()  # every python_name resolves to a callable
    assert pm.name == "napari-lesionmix"
    c = pm.contributions
    assert {w.display_name for w in c.widgets} >= {"Load", "CarveMix", "Preview", "Provenance"}
    assert set(c.readers[0].filename_patterns) == {"*.nii", "*.nii.gz"}
    assert {tuple(w.layer_types) for w in c.writers} == {("image",), ("labels",)}
    keys = {s.key for s in c.sample_data}
    assert "pair" in keys and {f"sub-{i:02d}" for i in range(1, 11)} <= keys
    assert any(cmd.python_name == "napari_lesionmix.widgets.studio:studio_command" for cmd in c.commands)


def test_npe2_cli_validate():
    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-lesionmix", "--imports"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


@pytest.mark.gui
def test_open_studio_docks_everything_and_loads_the_sample_pair(make_napari_viewer, qtbot):
    from napari_lesionmix._sample_data import PAIR
    from napari_lesionmix.widgets.studio import open_studio, widget_names

    viewer = make_napari_viewer()
    assert open_studio(viewer) is viewer
    session = get_session(viewer)
    qtbot.waitUntil(lambda: session.synthetic is not None and not session.busy, timeout=30000)
    docked = " ".join(viewer.window.dock_widgets.keys())
    for name in widget_names():
        assert name in docked
    assert (session.host.case_id, session.donor.case_id) == PAIR
    names = {layer.name for layer in viewer.layers}
    roles = {layer.metadata.get("lesionmix_role") for layer in viewer.layers}
    assert {"host_image", "donor_image", "synthetic_image", "synthetic_label", "mixing_mask"} <= roles
    # Layers are named with their case ids, so two pairs in one viewer stay apart.
    host_id, donor_id = PAIR
    assert {f"host {host_id}", f"donor {donor_id}", f"synthetic ({donor_id} -> {host_id})"} <= names
    np.testing.assert_array_equal(session.synthetic.mask, session.donor.label != 0)  # lambda 0
    # The menu command (File > IO utilities) reuses the docked widgets and keeps the layers.
    from napari._app_model import get_app_model

    n_docks = len(viewer.window.dock_widgets)
    get_app_model().commands.execute_command("napari-lesionmix.open_studio").result()
    qtbot.waitUntil(lambda: not session.busy and session.synthetic is not None, timeout=30000)
    assert len(viewer.window.dock_widgets) == n_docks
    assert names <= {layer.name for layer in viewer.layers}


def test_studio_module_runs():
    proc = subprocess.run([sys.executable, "-m", "napari_lesionmix.studio", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--no-sample" in proc.stdout
