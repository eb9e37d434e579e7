"""Soft-CP widget under Xvfb on the shipped 2 mm sample pair: sample, click-to-place, errors, replay."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.softcp import SoftCPParams, sample_softcp, softcp
from napari_lesionmix.random import sample_rng
from napari_lesionmix.widgets.softcp import SoftCPWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def studio(studio):
    viewer, docks, session = studio("Load", "Soft-CP", pair=None)
    assert isinstance(docks["Soft-CP"], SoftCPWidget)
    return viewer, docks["Soft-CP"], session


def _wait_synthetic(qtbot, session, check=lambda p: True):
    qtbot.waitUntil(lambda: not session.busy and session.synthetic is not None
                    and isinstance(session.synthetic.params, SoftCPParams) and check(session.synthetic.params),
                    timeout=20000)


def test_sample_pastes_a_lesion_and_records_params(studio, qtbot):
    viewer, w, session = studio
    assert w.reference.currentData() == "brain_mask"  # the sample cases ship brain masks
    assert w.sample_btn.isEnabled()
    host_before = session.layer("host_image").data.copy()
    w.seed.setValue(3)
    w.a.setValue(0.4)
    w.k_dilate.setValue(3)
    w.image_ops["none"].setChecked(True)
    for name in ("crop_resize", "gamma", "noise"):
        w.image_ops[name].setChecked(False)
    w.sample_btn.click()
    _wait_synthetic(qtbot, session)
    p = session.synthetic.params
    assert (p.host_id, p.donor_id) == (session.host.case_id, session.donor.case_id)
    assert p.a == pytest.approx(0.4) and p.k_dilate == 3 and p.reference == "brain_mask"
    assert (p.seed, p.sample_index) == (3, 0) and len(p.lesions) == 1
    # Exactly the core's sample for the same seed and settings.
    want = sample_softcp(sample_rng(3, 0), session.host, session.donor, session.host_brain_mask,
                         seed=3, sample_index=0, **w.sample_kwargs())
    # The same draw, then the registry's brain record and shared intensity step.
    assert dataclasses.replace(p, intensity=(), brain=None) == want
    assert p.intensity[0].mode == session.intensity_match == "brain-linear"
    syn = session.synthetic
    # The studio is a face of the registry: the Python (and CLI) face's bytes for the same options.
    masks = {session.host.case_id: session.host_brain_mask, session.donor.case_id: session.donor_brain_mask}
    same = registry.generate("softcp", session.host, session.donor, seed=3, index=0, options=w.options(),
                             brain_mask=session.host_brain_mask,
                             sources=registry.LocalSources([session.host, session.donor], masks))
    assert same.params == p and np.array_equal(same.image, syn.image) and np.array_equal(same.label, syn.label)
    ref = registry.replay(p, session.host, session.donor, brain_mask=session.host_brain_mask)
    np.testing.assert_array_equal(syn.image, ref.image)
    unmatched = softcp(session.host, session.donor, want, session.host_brain_mask)
    assert not np.array_equal(syn.image, unmatched.image)  # the donor was mapped into the host's scale
    # The viewer's synthetic layers changed; the host layer did not.
    data = session.layer("synthetic_image").data
    assert not np.array_equal(data, session.orientation.to_display(session.host.image[0]))
    assert session.layer("mixing_mask").data.max() > 0.9
    np.testing.assert_array_equal(session.layer("host_image").data, host_before)
    assert "Pasted 1 lesion" in w.status.text()
    w.sample_btn.click()  # the index advances
    _wait_synthetic(qtbot, session, lambda q: q.sample_index == 1)


def test_place_at_cursor_and_points_layer(studio, qtbot):
    viewer, w, session = studio
    brain = session.host_brain_mask
    # A voxel deep inside the brain, away from host lesions: the brain mask's centre of mass.
    ijk = tuple(int(round(v)) for v in np.argwhere(brain).mean(axis=0))
    zyx = session.orientation.display_index(ijk)
    session.set_cursor(zyx)
    w.delta1.setValue(0.5)
    w.delta2.setValue(1.0)
    assert w.target_voxel() == ijk
    w.place_btn.click()
    _wait_synthetic(qtbot, session)
    p = session.synthetic.params
    assert len(p.lesions) == 1 and p.delta1 == 0.5
    # The pasted lesion is centred on the clicked voxel (label changed around it).
    changed = np.argwhere(session.synthetic.label != session.host.label)
    assert np.abs(changed.mean(axis=0) - np.array(ijk)).max() < 6
    # A Points layer wins over the crosshair.
    target = (ijk[0] + 3, ijk[1], ijk[2])
    world = session.world_point(session.orientation.display_index(target))
    viewer.add_points([world], name="place")
    assert w.target_voxel() == target


def test_impossible_constraints_become_notifications(studio, qtbot):
    viewer, w, session = studio
    w.sample_btn.click()
    _wait_synthetic(qtbot, session)
    before = session.synthetic
    n_layers = len(viewer.layers)
    # delta1 = 1 with the whole volume... at a corner: the lesion cannot fit.
    session.set_cursor((0, 0, 0))
    n = len(notification_manager.records)
    w.place_btn.click()
    qtbot.waitUntil(lambda: len(notification_manager.records) > n and not session.busy, timeout=20000)
    refusal = notification_manager.records[-1].message
    assert "does not fit" in refusal
    # The clicked position as the preview's caption prints it: the file's voxel and its mm.
    from napari_lesionmix.io.position import format_position

    ijk = tuple(int(round(v)) for v in session.orientation.original_index((0, 0, 0)))
    assert format_position(ijk, session.host.affine) in refusal
    # Impossible delta1 for sampling: a label value that is not in the host.
    w.reference.setCurrentIndex(1)
    w.label_value.setValue(77)
    n = len(notification_manager.records)
    w.sample_btn.click()
    qtbot.waitUntil(lambda: len(notification_manager.records) > n and not session.busy, timeout=20000)
    assert "reference region 'label:77'" in notification_manager.records[-1].message
    assert session.synthetic is before and len(viewer.layers) == n_layers  # nothing dropped or changed
    assert "label:77" in w.status.text()
    # No transform ticked.
    for b in w.rigid.values():
        b.setChecked(False)
    w.sample()
    assert "Tick at least one rigid transform" in notification_manager.records[-1].message


def test_replay_through_provenance_hook(studio, qtbot):
    viewer, w, session = studio
    w.seed.setValue(11)
    w.sample_btn.click()
    _wait_synthetic(qtbot, session)
    first = session.synthetic
    w.sample_btn.click()
    _wait_synthetic(qtbot, session, lambda p: p.sample_index == 1)
    session.replayers["softcp"](first.params)
    _wait_synthetic(qtbot, session, lambda p: p == first.params)
    np.testing.assert_array_equal(session.synthetic.image, first.image)  # its recorded map, exactly
    # A recorded map replays as recorded, whatever the studio's mode is now.
    session.set_intensity_match("none")
    session.replayers["softcp"](first.params)
    _wait_synthetic(qtbot, session, lambda p: p == first.params)
    np.testing.assert_array_equal(session.synthetic.image, first.image)


def test_no_pair_is_a_notification(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    w = SoftCPWidget(viewer)
    assert not w.sample_btn.isEnabled()
    w.sample()
    assert "No host/donor pair is loaded" in notification_manager.records[-1].message
