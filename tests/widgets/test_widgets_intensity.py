"""The studio's shared intensity matching: one toggle in Load, the medians label, every dock, replay."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from factories import write_case

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.live import CarveMixPlanes
from napari_lesionmix.io.display import VolumePlanes
from napari_lesionmix.widgets.carvemix import position_of_t
from napari_lesionmix.widgets.load import WARN_STYLE

pytestmark = pytest.mark.gui


@pytest.fixture
def bright_pair(tmp_path, host_case, donor_case):
    """A donor scanned at twice the host's gain (normal-brain medians about 100 and 200)."""
    donor = dataclasses.replace(donor_case, image=donor_case.image * 2.0)
    return {"host": write_case(host_case, tmp_path / "in", "host"),
            "donor": write_case(donor, tmp_path / "in", "donor")}


@pytest.fixture
def studio(studio, bright_pair):
    viewer, docks, session = studio("Load", "CarveMix", "Provenance", pair=bright_pair,
                                    until=lambda s, d: s.synthetic is not None and "medians" in
                                    d["Load"].medians.text() and "measuring" not in d["Load"].medians.text())
    return viewer, docks, session


def _wait(qtbot, session, check):
    qtbot.waitUntil(lambda: not session.busy and session.synthetic is not None and check(session.synthetic.params),
                    timeout=15000)


def _lesion_median(session, syn):
    return float(np.median(syn.image[0][(syn.mask != 0) & (session.donor.label != 0)]))


def test_toggle_defaults_to_brain_linear_and_the_label_warns_only_when_off(studio, qtbot):
    viewer, docks, session = studio
    load, cm = docks["Load"], docks["CarveMix"]
    assert session.intensity_match == "brain-linear" == load.intensity_match.currentData()
    text = load.medians.text()
    assert "host 'host' 99.8" in text and "donor 'donor' 200." in text and "differ by 101%" in text
    assert load.medians.styleSheet() != WARN_STYLE  # matched: nothing to warn about
    matched = session.synthetic
    assert matched.params.intensity[0].mode == "brain-linear"
    host_lesions = float(np.median(session.host.image[0][session.host.label != 0]))
    # Pasted in the host's scale: the donor's lesions near the host's own, not at twice their brightness.
    assert _lesion_median(session, matched) < 1.3 * host_lesions
    # Off: the label warns, the shown CarveMix sample is mixed again unmatched (same lambda).
    load.intensity_match.setCurrentIndex(load.intensity_match.findData("none"))
    assert session.intensity_match == "none"
    assert load.medians.styleSheet() == WARN_STYLE and "choose brain-linear" in load.medians.text()
    _wait(qtbot, session, lambda p: p.intensity[0].mode == "none")
    assert session.synthetic.params.lam == matched.params.lam
    assert _lesion_median(session, session.synthetic) > 1.6 * host_lesions
    np.testing.assert_array_equal(session.synthetic.image,
                                  registry.replay(session.synthetic.params, session.host, session.donor).image)
    # Set from elsewhere (the session), the combo follows.
    session.set_intensity_match("histogram")
    assert load.intensity_match.currentData() == "histogram" and load.medians.styleSheet() != WARN_STYLE
    _wait(qtbot, session, lambda p: p.intensity[0].mode == "histogram")
    assert cm.params is None or cm.params.intensity[0].mode == "histogram"


@pytest.mark.parametrize("mode", ["brain-linear", "histogram"])
def test_live_planes_equal_the_matched_full_volume(studio, qtbot, mode):
    viewer, docks, session = studio
    cm = docks["CarveMix"]
    session.set_intensity_match(mode)
    _wait(qtbot, session, lambda p: p.intensity[0].mode == mode)
    cm.slider.setSliderDown(True)
    cm.slider.setValue(position_of_t(0.6))
    live = session.preview
    assert isinstance(live, CarveMixPlanes)
    cm.slider.setSliderDown(False)
    cm.slider.sliderReleased.emit()
    _wait(qtbot, session, lambda p: p.lam == pytest.approx(0.6 * abs(cm.field.d_min), abs=2e-3 * abs(cm.field.d_min)))
    full = session.synthetic
    ref = VolumePlanes(full.image, full.label, full.mask, session.orientation)
    for zyx in [session.cursor, (3, 4, 5), (12, 14, 10)]:
        got, want = live.planes(zyx), ref.planes(zyx)
        for name in ("axial", "coronal", "sagittal"):
            np.testing.assert_array_equal(got[name].image, want[name].image)
            np.testing.assert_array_equal(got[name].mask, want[name].mask)


def test_provenance_replays_a_matched_sample_through_the_dock(studio, qtbot):
    viewer, docks, session = studio
    cm, prov = docks["CarveMix"], docks["Provenance"]
    cm.seed.setValue(4)
    p = cm.sample_lambda()
    _wait(qtbot, session, lambda q: q == p)
    first = session.synthetic
    text = json.dumps({"params": p.to_dict()})
    session.set_intensity_match("none")  # the recorded map replays whatever the toggle says now
    _wait(qtbot, session, lambda q: q.intensity[0].mode == "none")
    assert prov.replay(text)
    _wait(qtbot, session, lambda q: q == p)
    np.testing.assert_array_equal(session.synthetic.image, first.image)
    assert cm.t == pytest.approx(p.lam / abs(cm.field.d_min), abs=1.5 / 600)  # the dock's controls followed
    assert isinstance(session.preview, VolumePlanes)
