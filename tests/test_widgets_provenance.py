"""Provenance widget under Xvfb: shows params, copies JSON, replays JSON bit for bit, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_pair
from napari.utils.notifications import notification_manager
from qtpy.QtWidgets import QApplication

from napari_lesionmix.augment.carvemix import CarveMixParams, carvemix
from napari_lesionmix.widgets.state import get_session

pytestmark = pytest.mark.gui
PLUGIN = "napari-lesionmix"


@pytest.fixture
def studio(make_napari_viewer_proxy, qtbot, pair_on_disk):
    viewer = make_napari_viewer_proxy()
    _, prov = viewer.window.add_plugin_dock_widget(PLUGIN, "Provenance")
    _, cm = viewer.window.add_plugin_dock_widget(PLUGIN, "CarveMix", tabify=True)
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "Load", tabify=True)
    session = get_session(viewer)
    load_pair(qtbot, load, session, pair_on_disk, until=lambda: session.synthetic is not None)
    yield viewer, prov, cm, session
    qtbot.waitUntil(lambda: not session.busy, timeout=10000)


def test_shows_and_copies_current_params(studio, qtbot):
    viewer, prov, cm, session = studio
    cm.seed.setValue(11)
    p = cm.sample_lambda()
    qtbot.waitUntil(lambda: session.synthetic.params == p and not session.busy, timeout=10000)
    rec = json.loads(prov.text.toPlainText())
    assert rec["params"] == p.to_dict()
    assert rec["inputs"]["host"]["case_id"] == "host"
    assert rec["inputs"]["donor"]["label"].endswith("donor_seg.nii.gz")
    text = prov.copy_json()
    assert QApplication.clipboard().text() == text
    assert json.loads(text)["params"]["seed"] == 11


def test_replay_from_json_is_bit_identical(studio, qtbot):
    viewer, prov, cm, session = studio
    lam = 0.37 * abs(cm.field.d_min)
    params = CarveMixParams("host", "donor", lam, seed=5, sample_index=2)
    text = json.dumps({"version": "x", "inputs": {}, "params": params.to_dict()})
    assert prov.replay(text)
    qtbot.waitUntil(lambda: session.synthetic.params == params and not session.busy, timeout=10000)
    ref = carvemix(session.host, session.donor, params)
    np.testing.assert_array_equal(session.synthetic.image, ref.image)
    np.testing.assert_array_equal(session.synthetic.label, ref.label)
    np.testing.assert_array_equal(session.synthetic.mask, ref.mask)
    # The slider followed the replayed lambda.
    assert cm.t == pytest.approx(0.37, abs=1.5 / 600)
    # Replay also accepts the bare params dict (as in params.json's "params").
    assert prov.replay(params.to_json())


BAD_REPLAYS = [
    ("{not json", "Params are not valid JSON"),
    ("", "There is no params JSON to replay"),
    ('{"method": "nosuch"}', "Unknown augmentation method 'nosuch'"),
    (CarveMixParams("other", "donor", 0.5).to_json(), "load that pair first"),
    (CarveMixParams("host", "donor", 1e6).to_json(), "do not fit the loaded donor"),
]


def test_replay_errors_become_notifications(studio, qtbot):
    viewer, prov, cm, session = studio
    before = session.synthetic
    for text, fragment in BAD_REPLAYS:
        n = len(notification_manager.records)
        assert not prov.replay(text)
        assert len(notification_manager.records) == n + 1
        assert fragment in notification_manager.records[-1].message
        assert fragment in prov.status.text()
        assert session.synthetic is before
    assert {"host", "donor", "synthetic", "mixing mask"} <= {layer.name for layer in viewer.layers}
