"""Provenance widget under Xvfb: shows params, copies JSON, replays JSON bit for bit, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtWidgets import QApplication

from napari_lesionmix.augment.carvemix import CarveMixParams, carvemix

pytestmark = pytest.mark.gui


@pytest.fixture
def studio(studio, pair_on_disk):
    viewer, docks, session = studio("Provenance", "CarveMix", "Load", pair=pair_on_disk,
                                    until=lambda s, d: s.synthetic is not None)
    return viewer, docks["Provenance"], docks["CarveMix"], session


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


def test_the_studio_seed_is_the_cli_seed(studio, qtbot, pair_on_disk, tmp_path):
    """The n-th sample of seed s in the studio is `lesionmix carvemix --seed s --index n-1`, byte for byte
    (with the studio's intensity matching, brain-linear, given to the CLI)."""
    from napari_lesionmix.cli import main
    from napari_lesionmix.io.synthetic import write_synthetic

    viewer, prov, cm, session = studio
    cm.seed.setValue(3)
    for index in range(2):
        p = cm.sample_lambda()
        qtbot.waitUntil(lambda p=p: session.synthetic.params == p and not session.busy, timeout=10000)
        assert (p.seed, p.sample_index) == (3, index)
        write_synthetic(tmp_path / f"studio{index}", session.synthetic, session.host)
        pair = pair_on_disk
        assert main(["carvemix", "--host-image", str(pair["host"]["images"][0]), "--host-label",
                     str(pair["host"]["label"]), "--donor-image", str(pair["donor"]["images"][0]),
                     "--donor-label", str(pair["donor"]["label"]), "--seed", "3", "--index", str(index),
                     "--intensity-match", session.intensity_match, "--out", str(tmp_path / f"cli{index}")]) == 0
        for f in ("image_0000.nii.gz", "label.nii.gz", "mask.nii.gz"):
            assert (tmp_path / f"studio{index}" / f).read_bytes() == (tmp_path / f"cli{index}" / f).read_bytes()


def test_methods_without_a_dock_replay_through_the_registry(studio, qtbot):
    from napari_lesionmix.augment.registry import generate

    viewer, prov, cm, session = studio
    for name in ("mixup", "cutmix"):
        ref = generate(name, session.host, session.donor, seed=2, index=4)
        assert prov.replay(ref.params.to_json())
        qtbot.waitUntil(lambda ref=ref: session.synthetic.params == ref.params and not session.busy, timeout=10000)
        np.testing.assert_array_equal(session.synthetic.image, ref.image)
        np.testing.assert_array_equal(session.synthetic.label, ref.label)
        assert prov.status.text() == f"Current case: {name} of donor 'donor' into host 'host'."


BAD_REPLAYS = [
    ("{not json", "Params are not valid JSON"),
    ("", "There is no params JSON to replay"),
    ('{"method": "nosuch"}', "Unknown augmentation method 'nosuch'"),
    (CarveMixParams("other", "donor", 0.5).to_json(),
     "were drawn for other cases than the given host 'host' (recorded: 'other')"),
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
    assert {"host host", "donor donor", "synthetic (donor -> host)", "mixing mask (donor -> host)"} <= {
        layer.name for layer in viewer.layers}


def test_params_of_other_cases_replay_only_when_chosen(studio, qtbot):
    viewer, prov, cm, session = studio
    before = session.synthetic
    params = CarveMixParams("sub-07", "sub-26", 0.4 * abs(cm.field.d_min))
    prov.text.setPlainText(json.dumps({"params": params.to_dict()}))
    assert not prov.replay()
    msg = prov.status.text()
    assert "Recorded on host 'sub-07', donor 'sub-26'; loaded: host 'host', donor 'donor'" in msg
    assert "Replay anyway" in notification_manager.records[-1].message
    assert session.synthetic is before and prov.anyway_btn.isVisibleTo(prov)
    prov.anyway_btn.click()
    qtbot.waitUntil(lambda: session.synthetic.params == params and not session.busy, timeout=10000)
    np.testing.assert_array_equal(session.synthetic.mask, carvemix(session.host, session.donor, params).mask)
    assert not prov.anyway_btn.isVisibleTo(prov)  # the new case's JSON replaced the box


def test_a_harmonized_sample_is_recorded_and_replays_whole(studio, qtbot):
    from napari_lesionmix.augment.params import Synthetic
    from napari_lesionmix.harmonize import load_harmonizer

    viewer, prov, cm, session = studio
    cm.seed.setValue(6)
    p = cm.sample_lambda()
    qtbot.waitUntil(lambda: session.synthetic.params == p and not session.busy, timeout=10000)
    syn = session.synthetic
    h = load_harmonizer("hm")
    image = h.harmonize(syn.image, syn.mask, label=syn.label)
    session.set_synthetic(Synthetic(image, syn.label, syn.mask, p), harmonization={**h.params(), "device": "cpu"})
    rec = json.loads(prov.text.toPlainText())
    assert rec["harmonization"]["method"] == "hm" and rec["harmonization"]["device"] == "cpu"
    text = prov.text.toPlainText()
    cm.sample_lambda()  # another sample, unharmonized: the record loses its harmonization
    qtbot.waitUntil(lambda: session.synthetic.params != p and not session.busy, timeout=10000)
    assert session.harmonization is None and "harmonization" not in json.loads(prov.text.toPlainText())
    assert prov.replay(text)
    qtbot.waitUntil(lambda: session.synthetic.params == p and session.harmonization is not None
                    and not session.busy, timeout=20000)
    np.testing.assert_array_equal(session.synthetic.image, image)
    assert "harmonized with hm" in prov.status.text()
