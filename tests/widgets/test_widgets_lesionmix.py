"""LesionMix widget under Xvfb on the shipped 2 mm sample data: distribution, heat map, populate, inpaint."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_lesionmix.augment.lesion_load import lesion_load_ml
from napari_lesionmix.augment.lesionmix import LesionMixParams
from napari_lesionmix.io.dataset import Dataset
from napari_lesionmix.widgets.lesionmix import LIKELIHOOD_NAME, LesionMixWidget
from napari_lesionmix.widgets.state import get_session

pytestmark = pytest.mark.gui


@pytest.fixture
def studio(studio):
    viewer, docks, session = studio("Load", "LesionMix", pair=None, until=lambda s, d: d["LesionMix"].loads is not None)
    assert isinstance(docks["LesionMix"], LesionMixWidget)
    return viewer, docks["LesionMix"], session


def _wait(qtbot, session, check=lambda p: True):
    qtbot.waitUntil(lambda: not session.busy and session.synthetic is not None
                    and isinstance(session.synthetic.params, LesionMixParams) and check(session.synthetic.params),
                    timeout=30000)


def test_distribution_defaults_and_histogram(studio):
    viewer, w, session = studio
    assert len(w.loads) == len(session.dataset)
    w.distribution.setCurrentText("uniform")
    loads = np.array(list(w.loads.values()))
    assert w.dist_params["low"].value() == pytest.approx(loads.min(), abs=1e-3)
    assert w.dist_params["high"].value() == pytest.approx(loads.max(), abs=1e-3)
    assert not w.dist_params["mean"].isEnabled()
    assert w.hist.hist is not None and w.hist.hist.dataset_counts.sum() == len(loads)
    w.distribution.setCurrentText("gaussian")
    assert w.dist_params["sd"].isEnabled() and not w.dist_params["low"].isEnabled()
    w.dist_params["mean"].setValue(4.0)
    assert w.current_distribution().mean == 4.0  # edited parameters are used


def test_populate_to_a_high_load_and_show_the_heat_map(studio, qtbot):
    viewer, w, session = studio
    host = session.host
    host_load = lesion_load_ml(host.label, host.spacing)
    w.distribution.setCurrentText("uniform")
    w.dist_params["low"].setValue(host_load + 2.0)
    w.dist_params["high"].setValue(host_load + 3.0)
    w.mode.setCurrentText("populate")
    w.seed.setValue(5)
    w.sample_btn.click()
    _wait(qtbot, session)
    p = session.synthetic.params
    assert p.mode == "populate" and p.insertions and (p.seed, p.sample_index) == (5, 0)
    assert host_load + 2.0 <= p.target_load_ml <= host_load + 3.0
    d = p.distribution
    assert d.name == "uniform" and d.dataset_loads == tuple(w.loads.values())
    assert (d.low, d.high) == (pytest.approx(host_load + 2.0, abs=1e-3), pytest.approx(host_load + 3.0, abs=1e-3))
    assert lesion_load_ml(session.synthetic.label, host.spacing) == pytest.approx(p.reached_load_ml)
    assert p.reached_load_ml > host_load + 1.0
    assert not np.array_equal(session.layer("synthetic_image").data, session.orientation.to_display(host.image[0]))
    assert w.hist.target == pytest.approx(p.target_load_ml) and w.hist.reached == pytest.approx(p.reached_load_ml)
    assert "populate" in w.status.text()
    # The shared intensity step: one brain-linear map per pasted case (the studio's default).
    sources = {ins.case_id for ins in p.insertions} - {p.host_id}
    assert {m.case_id for m in p.intensity} == sources and {m.mode for m in p.intensity} == {"brain-linear"}
    # Replay through the provenance hook reproduces it.
    first = session.synthetic
    session.replayers["lesionmix"](p)
    qtbot.waitUntil(lambda: session.synthetic is not first and not session.busy, timeout=30000)
    np.testing.assert_array_equal(session.synthetic.image, first.image)
    # The likelihood heat map, in display orientation, additive, inferno.
    w.show_map_btn.click()
    qtbot.waitUntil(lambda: LIKELIHOOD_NAME in viewer.layers and not session.busy, timeout=30000)
    layer = viewer.layers[LIKELIHOOD_NAME]
    assert layer.blending == "additive" and layer.colormap.name == "inferno"
    values = session.orientation.to_original(layer.data)
    assert values.shape == host.shape and values.sum() == pytest.approx(1.0, rel=1e-4)
    assert tuple(layer.scale) == tuple(session.orientation.scale)


def test_inpaint_lowers_the_load(studio, qtbot):
    viewer, w, session = studio
    host = session.host
    host_load = lesion_load_ml(host.label, host.spacing)
    w.distribution.setCurrentText("uniform")
    w.dist_params["low"].setValue(0.0)
    w.dist_params["high"].setValue(host_load * 0.5)
    w.mode.setCurrentText("inpaint")
    w.sample_btn.click()
    _wait(qtbot, session)
    p = session.synthetic.params
    assert p.mode == "inpaint" and p.removals
    assert p.reached_load_ml < host_load
    assert lesion_load_ml(session.synthetic.label, host.spacing) == pytest.approx(p.reached_load_ml)


def test_empty_dataset_and_bad_params_are_notifications(studio, qtbot, tmp_path):
    viewer, w, session = studio
    n_layers = len(viewer.layers)
    w.distribution.setCurrentText("uniform")
    w.dist_params["low"].setValue(5.0)
    w.dist_params["high"].setValue(1.0)
    w.sample()
    assert "needs 0 <= low <= high" in notification_manager.records[-1].message
    n = len(notification_manager.records)
    session.set_dataset(Dataset(str(tmp_path), "pairs", []))
    qtbot.waitUntil(lambda: len(notification_manager.records) > n and not session.busy, timeout=20000)
    assert "has no labelled case" in notification_manager.records[-1].message
    w.sample()
    assert "lesion loads are not read yet" in notification_manager.records[-1].message
    assert len(viewer.layers) == n_layers and session.synthetic is None


def test_without_a_dataset_it_says_what_to_load(make_napari_viewer_proxy, qtbot):
    """The lesion bank reads what the user loaded: with nothing loaded, Sample is off and says so."""
    viewer = make_napari_viewer_proxy()
    w = LesionMixWidget(viewer)
    assert "Load a pair or scan a dataset folder" in w.dataset_label.text()
    assert not w.sample_btn.isEnabled() and w.loads is None


def test_direct_target_load(studio, qtbot):
    viewer, w, session = studio
    host_load = lesion_load_ml(session.host.label, session.host.spacing)
    w.direct.setChecked(True)
    assert w.target.isEnabled() and not w.distribution.isEnabled()
    w.target.setValue(host_load + 1.5)
    w.mode.setCurrentText("populate")
    w.sample_btn.click()
    _wait(qtbot, session)
    p = session.synthetic.params
    assert p.target_load_ml == pytest.approx(host_load + 1.5, abs=1e-3) and p.distribution is None
    assert w.hist.target == pytest.approx(p.target_load_ml)
    w.direct.setChecked(False)
    assert w.distribution.isEnabled() and not w.target.isEnabled()


def test_a_dock_closed_while_its_work_runs_gets_no_result(make_napari_viewer_proxy, qtbot, monkeypatch):
    """The dataset loads finish after the dock is gone: nothing touches its deleted Qt objects (CI saw it)."""
    import threading

    release = threading.Event()
    real = LesionMixWidget._read_loads

    def slow(ds):
        release.wait(30)
        return real(ds)

    monkeypatch.setattr(LesionMixWidget, "_read_loads", staticmethod(slow))
    from napari_lesionmix.sample_data import sample_dataset

    viewer = make_napari_viewer_proxy()
    session = get_session(viewer)
    session.set_dataset(sample_dataset())  # a scanned folder: the dock reads its loads
    dock, w = viewer.window.add_plugin_dock_widget("napari-lesionmix", "LesionMix")
    qtbot.waitUntil(lambda: session.busy, timeout=10000)
    destroyed = []
    w.destroyed.connect(lambda *_: destroyed.append(True))
    viewer.window.remove_dock_widget(dock)
    w.deleteLater()
    qtbot.waitUntil(lambda: bool(destroyed), timeout=10000)
    release.set()
    qtbot.waitUntil(lambda: not session.busy, timeout=30000)  # the result arrives and is dropped
