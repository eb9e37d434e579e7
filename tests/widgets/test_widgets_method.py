"""The generic method dock under Xvfb: Mixup and CutMix from the manifest with no widget code, history, cache."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_lesionmix.augment import registry
from napari_lesionmix.widgets import method as method_module
from napari_lesionmix.widgets.method import MethodDock
from napari_lesionmix.widgets.state import CACHE_ENTRIES, DATASET_KEY, StudioSession

pytestmark = pytest.mark.gui


def _wait(qtbot, session, name, check=lambda p: True, dock=None):
    """Until the shown sample is ``name``'s and passes ``check`` (and ``dock``'s work is over).

    A dock's buttons come back when its worker's ``finished`` signal arrives, a moment after the
    sample is shown: a click before that hits a disabled button (that made a flaky test).
    """
    qtbot.waitUntil(lambda: not session.busy and session.synthetic is not None
                    and session.synthetic.params.method == name and check(session.synthetic.params)
                    and (dock is None or not dock.work.running), timeout=20000)


@pytest.mark.parametrize("name, label", [("mixup", "Mixup"), ("cutmix", "CutMix")])
def test_a_registered_method_gets_a_dock_from_its_options(studio, qtbot, name, label):
    viewer, docks, session = studio("Load", label, pair=None)
    w = docks[label]
    # No widget code of its own: the generic dock with only its method's name set.
    assert type(w).__bases__ == (MethodDock,) and set(vars(type(w))) <= {"METHOD", "__module__", "__doc__"}
    assert w.method.name == name
    # One control per option (the session holds the shared intensity step).
    names = {f.name for f in dataclasses.fields(w.method.Options)} - {"intensity_match"}
    assert set(w.controls) == names
    w.controls["label"].widget.setCurrentText("hard")
    w.seed.setValue(4)
    w.index.setValue(2)
    w.sample_btn.click()
    _wait(qtbot, session, name)
    p = session.synthetic.params
    assert (p.seed, p.sample_index, p.label) == (4, 2, "hard") and w.index.value() == 3
    masks = {session.host.case_id: session.host_brain_mask, session.donor.case_id: session.donor_brain_mask}
    same = registry.generate(name, session.host, session.donor, seed=4, index=2, options=w.options(),
                             brain_mask=session.host_brain_mask,
                             sources=registry.LocalSources([session.host, session.donor], masks))
    assert same.params == p and np.array_equal(same.image, session.synthetic.image)
    assert w.status.text() == w.method.describe(session.synthetic)
    # Provenance replays through the dock.
    session.replayers[name](p)
    qtbot.waitUntil(lambda: not session.busy, timeout=20000)
    assert session.synthetic.params == p


def test_history_back_and_forward_with_keys(studio, qtbot):
    viewer, docks, session = studio("Load", "Mixup", pair=None)
    w = docks["Mixup"]
    assert not w.back_btn.isEnabled() and not w.forward_btn.isEnabled()
    for i in range(3):
        qtbot.waitUntil(w.sample_btn.isEnabled, timeout=20000)  # the pair's start-up work, or the last sample
        w.sample_btn.click()
        _wait(qtbot, session, "mixup", lambda p, i=i: p.sample_index == i, dock=w)
    assert [p.sample_index for p in w.history] == [0, 1, 2] and w.history_label.text() == "3/3"
    images = session.synthetic.image.copy()
    qtbot.keyClick(w.sample_btn, "z", modifier=qtbot_ctrl())  # Ctrl+Z: one back
    _wait(qtbot, session, "mixup", lambda p: p.sample_index == 1, dock=w)
    assert w.history_label.text() == "2/3" and w.forward_btn.isEnabled()
    w.back_btn.click()
    _wait(qtbot, session, "mixup", lambda p: p.sample_index == 0, dock=w)
    assert not w.back_btn.isEnabled()
    w.forward_btn.click()
    _wait(qtbot, session, "mixup", lambda p: p.sample_index == 1, dock=w)
    qtbot.keyClick(w.sample_btn, "z", modifier=qtbot_ctrl() | qtbot_shift())  # Ctrl+Shift+Z: one forward
    _wait(qtbot, session, "mixup", lambda p: p.sample_index == 2, dock=w)
    np.testing.assert_array_equal(session.synthetic.image, images)  # the same bytes again
    # A new sample after a step back drops the samples ahead of it.
    w.back_btn.click()
    _wait(qtbot, session, "mixup", lambda p: p.sample_index == 1, dock=w)
    qtbot.waitUntil(w.sample_btn.isEnabled, timeout=20000)
    w.sample_btn.click()
    _wait(qtbot, session, "mixup", lambda p: p.sample_index == 3, dock=w)
    assert [p.sample_index for p in w.history] == [0, 1, 3]


def qtbot_ctrl():
    from qtpy.QtCore import Qt

    return Qt.KeyboardModifier.ControlModifier


def qtbot_shift():
    from qtpy.QtCore import Qt

    return Qt.KeyboardModifier.ShiftModifier


def test_invalid_text_and_no_pair_are_notifications(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    w = method_module.cutmix_dock(viewer)
    assert not w.sample_btn.isEnabled()
    w.sample()
    assert "No host/donor pair is loaded" in notification_manager.records[-1].message
    with pytest.raises(AttributeError):
        method_module.nosuch_dock  # noqa: B018


def test_session_cache_is_locked_and_bounded():
    s = StudioSession()
    calls = []
    for i in range(CACHE_ENTRIES + 5):
        assert s.cached(("big", i), lambda i=i: calls.append(i) or i) == i
    assert len(s.cache_keys()) == CACHE_ENTRIES and ("big", 0) not in s.cache_keys()
    # Normal-brain statistics do not count against the bound.
    s.cached((registry.BRAIN_STATS_KEY, "c", True), lambda: 1.0)
    s.cached(("big", "new"), lambda: 0)
    assert (registry.BRAIN_STATS_KEY, "c", True) in s.cache_keys()
    # A dataset's work (a lesion bank) outlives the pair's entries made after it: they go first.
    s.cached((DATASET_KEY, "bank"), lambda: "bank")
    for i in range(CACHE_ENTRIES + 5):
        s.cached(("case", i), lambda i=i: i)
    assert (DATASET_KEY, "bank") in s.cache_keys() and ("case", CACHE_ENTRIES + 4) in s.cache_keys()
    assert len([k for k in s.cache_keys() if k[0] != registry.BRAIN_STATS_KEY]) == CACHE_ENTRIES
    # Many threads asking for one key get one object.
    out, barrier = [], threading.Barrier(8)

    def ask():
        barrier.wait()
        out.append(s.cached(("shared",), object))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(o) for o in out}) == 1
    # Work started before another pair was loaded is handed back but not kept.
    gen = s._generation

    def slow():
        s._generation = gen + 1  # as _forget_pair does meanwhile
        return "old pair"

    assert s.cached(("late",), slow) == "old pair" and ("late",) not in s.cache_keys()
