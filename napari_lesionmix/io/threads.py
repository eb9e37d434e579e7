"""Reading many files at once: a few threads, the results in order.

Decompressing a ``.nii.gz`` (ISA-L) and converting its voxels (NumPy) release
the GIL, so a dataset's labels read in threads run side by side: LESYMAP's 131
stroke labels took 8.3 s one after another and 2.7-3.1 s in two threads on a
2-core machine. The results come back in the order of the items, and an error
is raised for the first failing item in that order (after the items before it
were handed over), so what a caller computes, and which error it reports, do
not depend on the number of threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()

#: At most this many reading threads (each holds a decompressed volume while it works).
MAX_THREADS = 4


def read_threads() -> int:
    """Threads for :func:`map_in_threads`: the cores this process may use, at most :data:`MAX_THREADS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def map_in_threads(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` computed in a few threads, yielded in order.

    At most ``2 * threads`` results wait to be consumed (a caller summing
    volumes does not hold the whole dataset). With one thread, or one item,
    it is the plain ``map``. Stopping early cancels what has not started.
    """
    items = list(items)
    threads = read_threads() if threads is None else max(1, int(threads))
    if threads == 1 or len(items) < 2:
        yield from map(fn, items)
        return
    ex = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lesionmix-read")
    try:
        pending: deque = deque()
        it = iter(items)
        for item in it:
            pending.append(ex.submit(fn, item))
            if len(pending) >= 2 * threads:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(ex.submit(fn, nxt))
            yield result
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
