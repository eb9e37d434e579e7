"""Feedback on long work without Qt or torch: time left from measured rates, and cancel checks.

The studio and the CLI show the same words: :func:`training_status` gives
"epoch 3/20 · 41 % · about 2 min 10 s left" from a training callback's record
and an :class:`Eta`; :func:`checked_progress` turns a ``should_stop`` flag into
:class:`~napari_lesionmix.errors.Cancelled` at the next ``progress`` call of a
core function that reports progress but has no cancel check of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from napari_lesionmix.errors import Cancelled


def format_duration(seconds: float) -> str:
    """``seconds`` as people say it: "45 s", "2 min 10 s", "1 h 5 min" (rounded to whole seconds)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"A duration must be a finite number of seconds >= 0, got {seconds!r}.")
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, s = divmod(s, 60)
        return f"{m} min {s} s" if s else f"{m} min"
    h, rest = divmod(s, 3600)
    m = rest // 60
    return f"{h} h {m} min" if m else f"{h} h"


class Eta:
    """Time left of a run of ``total`` units, from the rate measured since the first report.

    The first report only starts the clock (the work before it, loading and the first
    step's warm-up, says nothing about the rate); each later one refines the rate, so
    slow validations between steps are counted once they have happened.

    Parameters
    ----------
    total : int
        Units (steps, patches) in the whole run.
    clock : callable, optional
        Seconds as a float (default :func:`time.perf_counter`); tests pass their own.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.perf_counter):
        if total < 0:
            raise ValueError(f"An ETA needs a total of units >= 0, got {total}.")
        self.total, self.clock = int(total), clock
        self._first: tuple[int, float] | None = None
        self._last: tuple[int, float] | None = None

    def update(self, done: int, now: float | None = None) -> None:
        """Record that ``done`` units are finished at ``now`` (default: the clock)."""
        now = self.clock() if now is None else float(now)
        if self._first is None or done < self._first[0]:
            self._first = (int(done), now)
        self._last = (int(done), now)

    def remaining(self) -> float | None:
        """Seconds left at the measured rate, or None before two reports with progress between them."""
        if self._first is None or self._last is None:
            return None
        (d0, t0), (d1, t1) = self._first, self._last
        if d1 <= d0:
            return None
        return max(self.total - d1, 0) * (t1 - t0) / (d1 - d0)

    def text(self) -> str:
        """ "about 2 min 10 s left", or "estimating the time left" before the rate is known."""
        left = self.remaining()
        return "estimating the time left" if left is None else f"about {format_duration(left)} left"


def training_status(record: dict, eta: Eta | None = None) -> str:
    """ "epoch 3/20 · 41 % · about 2 min 10 s left" for a training callback's ``record``."""
    total = max(int(record["epochs"]) * int(record["n_steps"]), 1)
    pct = int(100 * min(int(record["global_step"]), total) / total)
    epoch = record.get(
        "epoch", math.ceil(int(record["global_step"]) / max(int(record["n_steps"]), 1))
    )
    parts = [f"epoch {int(epoch)}/{int(record['epochs'])}", f"{pct} %"]
    if eta is not None:
        parts.append(eta.text())
    return " · ".join(parts)


def checked_progress(
    progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
    what: str = "Harmonization",
) -> Callable[[int, int], None] | None:
    """``progress`` that first raises :class:`Cancelled` once ``should_stop()`` is true.

    For core functions that call ``progress(done, total)`` after each unit of work
    (component, case) but take no cancel flag: the work stops at the next unit.
    """
    if should_stop is None:
        return progress

    def report(done: int, total: int) -> None:
        if done < total and should_stop():
            raise Cancelled(
                f"{what} cancelled after {done} of {total} step(s); nothing was changed."
            )
        if progress is not None:
            progress(done, total)

    return report
