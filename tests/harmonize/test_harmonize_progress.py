"""Feedback on long work: durations, the ETA, the training status line, and Stop inside validation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesionmix.errors import Cancelled, LesionMixError
from napari_lesionmix.harmonize.progress import (
    Eta,
    checked_progress,
    format_duration,
    training_status,
)


def test_format_duration_says_it_as_people_do():
    assert [format_duration(s) for s in (0, 44.6, 60, 130, 3600, 3900)] == [
        "0 s",
        "45 s",
        "1 min",
        "2 min 10 s",
        "1 h",
        "1 h 5 min",
    ]
    with pytest.raises(ValueError, match="finite number"):
        format_duration(float("nan"))


def test_eta_comes_from_the_measured_rate_after_the_first_report():
    eta = Eta(100)
    assert eta.remaining() is None and eta.text() == "estimating the time left"
    eta.update(1, now=50.0)  # the clock starts here: loading and warm-up say nothing about the rate
    assert eta.remaining() is None
    eta.update(11, now=70.0)  # 10 steps in 20 s
    assert eta.remaining() == pytest.approx(89 * 2.0)
    eta.update(21, now=80.0)  # faster now: 20 steps in 30 s overall
    assert eta.remaining() == pytest.approx(79 * 1.5)
    assert eta.text() == "about 1 min 58 s left"


def test_training_status_line():
    eta = Eta(400)
    eta.update(100, now=0.0)
    eta.update(164, now=83.2)  # 1.3 s a step, 236 steps left
    rec = {"epoch": 3, "epochs": 20, "step": 4, "n_steps": 20, "global_step": 164}
    assert training_status(rec, eta) == "epoch 3/20 · 41 % · about 5 min 7 s left"
    assert training_status(rec) == "epoch 3/20 · 41 %"


def test_checked_progress_raises_at_the_next_unit():
    seen, stop = [], [False]
    report = checked_progress(lambda d, t: seen.append(d), lambda: stop[0])
    report(1, 3)
    stop[0] = True
    with pytest.raises(Cancelled, match="cancelled after 2 of 3"):
        report(2, 3)
    report(3, 3)  # the work is done: nothing left to cancel
    assert seen == [1, 3] and issubclass(Cancelled, LesionMixError)
    assert checked_progress(None, None) is None


def test_hm_cancel_per_component_leaves_the_input_alone():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 10, (1, 24, 24, 24)).astype(np.float32)
    mask = np.zeros((24, 24, 24), bool)
    for k in range(4):  # four separate components
        mask[3 + 5 * k : 5 + 5 * k, 5:8, 5:8] = True
    img[0][mask] += 50
    original = img.copy()
    from napari_lesionmix.harmonize import harmonize

    calls = []
    with pytest.raises(Cancelled):
        harmonize(
            img,
            mask,
            "hm-ring",
            progress=lambda d, t: calls.append(d),
            should_stop=lambda: len(calls) >= 1,
        )
    assert calls == [1] and np.array_equal(img, original)
