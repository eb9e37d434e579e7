"""CarveMix widget under Xvfb: slider (live planes == full volume), sample lambda, per-lesion, swap."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import PLUGIN
from napari.utils.notifications import notification_manager

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.carvemix import carvemix, sample_carvemix
from napari_lesionmix.augment.live import CarveMixPlanes
from napari_lesionmix.io.display import VolumePlanes
from napari_lesionmix.random import sample_rng
from napari_lesionmix.widgets.carvemix import position_of_t

pytestmark = pytest.mark.gui


@pytest.fixture
def studio(studio, pair_on_disk):
    viewer, docks, session = studio("CarveMix", "Load", pair=pair_on_disk,
                                    until=lambda s, d: s.synthetic is not None)
    return viewer, docks["CarveMix"], session


def _wait_params(qtbot, session, check):
    qtbot.waitUntil(lambda: session.synthetic is not None and check(session.synthetic.params)
                    and not session.busy, timeout=10000)


def test_lambda_zero_carves_the_donor_lesions(studio):
    viewer, cm, session = studio
    syn = session.synthetic
    assert syn.params.lam == 0.0
    np.testing.assert_array_equal(syn.mask, session.donor.label != 0)  # lambda = 0: M = lesion mask
    lo, hi = cm.field.lambda_range
    assert lo == pytest.approx(-abs(cm.field.d_min) / 2) and hi == pytest.approx(abs(cm.field.d_min))
    assert "range" in cm.lam_label.text()
    # The viewer's synthetic layers show it, in display order.
    np.testing.assert_array_equal(session.layer("mixing_mask").data > 0.5,
                                  session.orientation.to_display(syn.mask))


def test_drag_shows_live_planes_equal_to_full_volume_then_release_mixes(studio, qtbot):
    viewer, cm, session = studio
    cm.slider.setSliderDown(True)
    cm.slider.setValue(position_of_t(0.8))
    live = session.preview
    assert isinstance(live, CarveMixPlanes)  # only the planes while dragging
    lam = 0.8 * abs(cm.field.d_min)
    params = cm.current_params()
    assert params.lam == pytest.approx(lam) and params.intensity[0].mode == "brain-linear"  # the studio's default
    # The full volume as every face makes it: the registry's replay, donor in the host's scale.
    full = registry.replay(params, session.host, session.donor)
    ref = VolumePlanes(full.image, full.label, full.mask, session.orientation)
    for zyx in [session.cursor, (3, 4, 5), (10, 20, 15)]:
        got, want = live.planes(zyx), ref.planes(zyx)
        for name in ("axial", "coronal", "sagittal"):
            np.testing.assert_array_equal(got[name].image, want[name].image)
            np.testing.assert_array_equal(got[name].label, want[name].label)
            np.testing.assert_array_equal(got[name].mask, want[name].mask)
    assert session.synthetic.params.lam == 0.0  # the full volume waits for the release
    cm.slider.setSliderDown(False)
    cm.slider.sliderReleased.emit()
    _wait_params(qtbot, session, lambda p: p.lam == pytest.approx(lam, abs=1e-9))
    np.testing.assert_array_equal(session.synthetic.mask, full.mask)
    np.testing.assert_array_equal(session.synthetic.image, full.image)
    assert isinstance(session.preview, VolumePlanes)


def test_keyboard_step_settles_into_a_full_volume(studio, qtbot):
    viewer, cm, session = studio
    cm.slider.setValue(position_of_t(-0.5))
    _wait_params(qtbot, session, lambda p: p.lam < 0)
    assert session.synthetic.mask.sum() < (session.donor.label != 0).sum()  # negative lambda shrinks


def test_sample_lambda_is_seeded_and_replayable(studio, qtbot):
    viewer, cm, session = studio
    cm.seed.setValue(7)
    p0 = cm.sample_lambda()
    want = sample_carvemix(sample_rng(7, 0), cm.field, "host", "donor", seed=7, sample_index=0)
    assert dataclasses.replace(p0, intensity=(), brain=None) == want  # the registry's draw: the same lambda
    assert p0.intensity and p0.intensity[0].mode == session.intensity_match
    lo, hi = cm.field.lambda_range
    assert lo <= p0.lam <= hi
    _wait_params(qtbot, session, lambda p: p == p0)
    p1 = cm.sample_lambda()
    assert p1.sample_index == 1 and p1.lam != p0.lam
    _wait_params(qtbot, session, lambda p: p == p1)
    assert "sampled" in cm.lam_label.text()


def test_per_lesion_toggle(studio, qtbot):
    viewer, cm, session = studio
    cm.per_lesion.setChecked(True)
    qtbot.waitUntil(lambda: cm.field is not None and cm.field.per_lesion, timeout=10000)
    n = cm.field.n_lesions
    assert n >= 2
    _wait_params(qtbot, session, lambda p: p.per_lesion)
    cm.seed.setValue(3)
    p = cm.sample_lambda()
    assert p.per_lesion and len(p.lesion_lams) == n
    _wait_params(qtbot, session, lambda q: q == p)
    ref = carvemix(session.host, session.donor, p)
    np.testing.assert_array_equal(session.synthetic.mask, ref.mask)
    np.testing.assert_array_equal(session.synthetic.image, registry.replay(p, session.host, session.donor).image)


def test_swap_donor_and_host(studio, qtbot):
    viewer, cm, session = studio
    p = cm.sample_lambda()  # sampled params must not outlive their pair
    _wait_params(qtbot, session, lambda q: q == p)
    cm.swap_btn.click()
    assert (session.host.case_id, session.donor.case_id) == ("donor", "host")
    _wait_params(qtbot, session, lambda q: (q.host_id, q.donor_id) == ("donor", "host"))
    assert session.layer("host_image").metadata["lesionmix_role"] == "host_image"
    np.testing.assert_allclose(session.orientation.to_original(session.layer("host_image").data),
                               session.host.image[0])


def test_errors_become_notifications(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, cm = viewer.window.add_plugin_dock_widget(PLUGIN, "CarveMix")
    assert not cm.slider.isEnabled()
    n = len(notification_manager.records)
    assert cm.sample_lambda() is None
    assert len(notification_manager.records) == n + 1
    assert "No host/donor pair is loaded" in notification_manager.records[-1].message
    cm.swap()
    assert "Load a host/donor pair before swapping" in notification_manager.records[-1].message


def test_a_sample_that_equals_its_host_is_said_to(studio, qtbot):  # the module's studio: (viewer, dock, session)
    """As the CLI warns: a CarveMix lambda that carves nothing leaves a copy of the host, and the studio says so."""
    import dataclasses

    from napari_lesionmix.augment import registry

    viewer, cm, session = studio
    qtbot.waitUntil(lambda: session.synthetic is not None and not session.busy, timeout=20000)
    syn = session.synthetic
    copy = dataclasses.replace(syn, image=session.host.image.copy(), label=session.host.label.copy(),
                               mask=np.zeros_like(syn.mask))
    assert registry.unchanged_host(registry.get_method("carvemix"), copy.params, copy)
    n = len(notification_manager.records)
    session.set_synthetic(copy)
    assert any("it is a copy of the host, not a synthetic case" in str(r.message)
               for r in notification_manager.records[n:])
    n = len(notification_manager.records)
    session.set_synthetic(syn)  # a real sample: no such note
    assert not any("copy of the host" in str(r.message) for r in notification_manager.records[n:])
