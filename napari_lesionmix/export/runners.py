"""Run export tasks serially, on a local process pool, or on a dask.distributed cluster.

A task is ``("syn", i)`` (make synthetic sample ``i``) or ``("real", case_id)``
(copy a real case). It loads its inputs from paths, writes its own files
atomically and returns the manifest record, so the three runners give the
same files: what a task writes depends only on the plan and the task.

Workers keep an :class:`~napari_lesionmix.export.context.ExportContext`
(loaded cases, donor CarveFields, the harmonizer) between tasks. Pools use
the ``spawn`` start method whenever Qt or torch is loaded in the parent
(forking either is unsafe), ``forkserver`` otherwise, and run their BLAS /
OpenMP with one thread (``OMP_NUM_THREADS=1`` set before the workers start),
so N workers use N cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import resource
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from napari_lesionmix.errors import LesionMixError

Task = tuple[str, Any]
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

#: How long ``--scheduler`` waits for the scheduler to answer.
DASK_CONNECT_TIMEOUT = "20s"

_CONTEXTS: dict[str, Any] = {}
_CONTEXTS_LOCK = threading.Lock()


def plan_key(plan) -> str:
    """A short fingerprint of a plan (workers key their cached context by it)."""
    text = json.dumps([plan.config.identity(), plan.config.out], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _context(plan):
    from napari_lesionmix.export.context import ExportContext

    key = plan_key(plan)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            _CONTEXTS.clear()  # one export at a time per worker: free the previous one's cache
            ctx = _CONTEXTS[key] = ExportContext(plan)
    return ctx


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def run_task(plan, task: Task) -> dict[str, Any]:
    """Make and write one case; return its manifest record.

    Keys starting with ``_`` (worker pid, peak memory) describe the run, not
    the case: the caller strips them before writing the manifest.
    """
    from napari_lesionmix.export.writer import commit_case

    rec, blobs = prepare_task(plan, task)
    commit_case(blobs)
    return rec


def prepare_task(plan, task: Task) -> tuple[dict[str, Any], list]:
    """Make and encode one case: its manifest record and the ``(path, bytes)`` of its files, unwritten.

    :func:`~napari_lesionmix.export.writer.commit_case` writes them.
    """
    import numpy as np

    from napari_lesionmix import __version__
    from napari_lesionmix.export.writer import encode_case

    ctx = _context(plan)
    kind, key = task
    out = plan.config.out
    if kind == "real":
        case = ctx.case(key)
        blobs, files = encode_case(out, key, case.image, case.label, case, plan.config.gzip)
        rec = {"id": key, "method": "real", "sources": [key], "index": None,
               "source_files": list(case.image_paths) + [case.label_path],
               "channels": case.n_channels, "label_values": _values(case.label)}
    elif kind == "syn":
        from napari_lesionmix.export.context import make_sample

        a, result = make_sample(ctx, int(key))
        syn, host = result.synthetic, result.host
        # nnU-Net refuses NaN; never write one. min and max propagate NaN and reach +-inf,
        # so two reductions check the volume without a voxel-sized temporary.
        if not (np.isfinite(syn.image.min()) and np.isfinite(syn.image.max())):
            raise LesionMixError(f"Sample {a.case_id} ({a.method}) has NaN or infinite voxels; nothing was written.")
        blobs, files = encode_case(out, a.case_id, syn.image, syn.label, host, plan.config.gzip)
        h = ctx.harmonizer
        rec = {"id": a.case_id, "method": a.method, "index": a.index, "seed": plan.config.seed,
               "sources": list(result.sources), "host": syn.params.host_id,
               # the cases used: after a redraw they are not the assigned ones
               "donor": getattr(syn.params, "donor_id", a.donor_id),
               "params": syn.params.to_dict(),
               "harmonize": h.params(spacing=host.spacing) if h is not None and hasattr(h, "params")
               else plan.config.harmonize,
               "channels": int(syn.image.shape[0]), "label_values": _values(syn.label)}
        if result.redraws:
            rec["redrawn"] = list(result.redraws)
    else:
        raise ValueError(f"unknown export task {task!r}")
    rec["version"] = __version__
    rec["files"] = files
    rec["_pid"] = os.getpid()
    rec["_peak_rss_mb"] = round(peak_rss_mb(), 1)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rec["_cpu_s"] = ru.ru_utime + ru.ru_stime
    return rec, blobs


def _values(label) -> list[int]:
    """Label values present, sorted (counting the few foreground voxels only: faster than ``np.unique``)."""
    import numpy as np

    lo, hi = int(label.min()), int(label.max())
    if hi - lo <= 1:  # background and one class (or one value): the two reductions say it all
        return sorted({lo, hi})
    flat = label.ravel()
    fg = flat[flat != 0]  # lesions are a small fraction of the volume
    values = [0] if fg.size < flat.size else []
    if fg.size and fg.dtype.kind in "iu" and int(fg.max()) < 65536:
        return values + [int(v) for v in np.flatnonzero(np.bincount(fg))]
    return values + [int(v) for v in np.unique(fg)]


# ------------------------------------------------------------------ runners
Stop = Callable[[], bool] | None


def run_serial(plan, tasks: list[Task], should_stop: Stop = None) -> Iterator[dict[str, Any]]:
    """Run tasks one after the other in this process, each case's writes overlapping the next case's making.

    One I/O thread writes case ``i`` (temporary files, fsync, renames: mostly
    waiting on the disk, without the GIL) while this thread makes and encodes
    case ``i + 1``; case ``i``'s record is yielded only once its files are in
    place, so a manifest line never precedes its files. A failed write raises
    here, after the case being made is encoded but before anything of it is written.
    """
    from concurrent.futures import ThreadPoolExecutor

    from napari_lesionmix.export.writer import commit_case

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lesionmix-export-io") as io:
        pending = None
        for task in tasks:
            if should_stop is not None and should_stop():
                break
            try:
                rec, blobs = prepare_task(plan, task)
            except BaseException:
                if pending is not None:  # the case before is complete: record it, then fail
                    pending[0].result()
                    yield pending[1]
                raise
            if pending is not None:
                pending[0].result()
                yield pending[1]
                if should_stop is not None and should_stop():
                    return  # as if polled before this case: it is made again by a rerun, never half-written
            pending = (io.submit(commit_case, blobs), rec)
        if pending is not None:
            pending[0].result()
            yield pending[1]


def _start_method() -> str:
    heavy = any(m in sys.modules for m in ("torch", "PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy"))
    methods = mp.get_all_start_methods()
    if heavy or "forkserver" not in methods:
        return "spawn"
    return "forkserver"


@contextlib.contextmanager
def single_threaded_env():
    """Set ``OMP_NUM_THREADS=1`` (and BLAS twins) while worker processes start, then restore."""
    old = {k: os.environ.get(k) for k in THREAD_ENV}
    for k in THREAD_ENV:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: glibc ``mallopt`` parameters (``malloc.h``) and the values :func:`keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_ARRAYS_UP_TO = 32 << 20  # glibc's own ceiling for the mmap threshold on 64-bit
KEEP_FREE_HEAP = 256 << 20


def keep_freed_memory() -> bool:
    """Let this process keep freed heap memory for the next case (glibc only); True if set.

    One 2 mm case allocates about 10 MB of short-lived arrays (eight times
    that at 1 mm). With glibc's adaptive defaults the free top of the heap is
    handed back to the kernel after every case, and the next case takes page
    faults on all of it again: 3-4 ms of a 10-15 ms case on this project's
    2-core VMs (``benchmarks/export_throughput.py``). Arrays below 32 MiB then
    come from the heap, and up to 256 MiB of freed heap stays in the process.
    Called only in processes that exist to export: pool workers and the
    ``lesionmix export`` command, never in a caller's own process.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc without a visible mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_ARRAYS_UP_TO) and mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_HEAP))


_WORKER_PLAN = None


def _init_worker(plan, parent_pid: int) -> None:
    # torch, if a harmonizer loads it later, reads OMP_NUM_THREADS=1 from the environment.
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    keep_freed_memory()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(pid: int, period_s: float = 0.5) -> None:
    """Exit when the export process is gone (kill -9): an orphan worker must not write on.

    Workers of a forkserver pool are not children of the export process, so
    the kernel's parent-death signal cannot be used; polling the pid is.
    """
    import time

    while True:
        time.sleep(period_s)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # pragma: no cover - pid reused by another user's process
            os._exit(1)


def _pool_task(task: Task) -> dict[str, Any]:
    return run_task(_WORKER_PLAN, task)


def run_pool(plan, tasks: list[Task], workers: int, should_stop: Stop = None) -> Iterator[dict[str, Any]]:
    """Run tasks on ``workers`` local processes; yield records as they finish.

    On ``should_stop`` or an error, pending tasks are cancelled and running
    ones finish (their records are still yielded before the error is raised).
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    method = _start_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        # The server imports these once (single-threaded env); each worker forks from it ready to work.
        ctx.set_forkserver_preload(["napari_lesionmix.export.runners", "napari_lesionmix.export.context",
                                    "napari_lesionmix.augment.carvemix", "nibabel"])
    with single_threaded_env():
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(plan, os.getpid()))
        # Keep at most 2 tasks per worker in flight: cancelling stays quick and
        # the pool spawns all its workers now, while the environment is single-threaded.
        pending_tasks = list(tasks)
        running = set()
        try:
            while pending_tasks and len(running) < 2 * workers:
                running.add(ex.submit(_pool_task, pending_tasks.pop(0)))
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
    error = None
    try:
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                exc = fut.exception()
                if exc is not None:
                    error = error or exc
                    continue
                yield fut.result()
            stop = error is not None or (should_stop is not None and should_stop())
            if stop:
                pending_tasks.clear()
            while pending_tasks and len(running) < 2 * workers:
                running.add(ex.submit(_pool_task, pending_tasks.pop(0)))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    if error is not None:
        if isinstance(error, LesionMixError):
            raise LesionMixError(str(error)) from None
        raise error


def run_dask(plan, tasks: list[Task], scheduler, should_stop: Stop = None) -> Iterator[dict[str, Any]]:
    """Submit the tasks to a dask.distributed cluster; yield records as they finish.

    ``scheduler`` is an address (``tcp://HOST:PORT``) or a ``Client``. The
    plan is scattered once (broadcast); each task gets it and its index and
    writes its own files, so the output folder must be reachable from every
    worker under the same path. Tasks are submitted with ``pure=False``.
    """
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - dask[distributed] is a dependency
        raise LesionMixError(f"dask.distributed is not available ({exc}).") from None
    own = not isinstance(scheduler, Client)
    if own:
        try:
            client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise LesionMixError(f"Could not connect to the Dask scheduler at '{scheduler}' ({exc}).") from None
    else:
        client = scheduler
    futures = []
    try:
        plan_future = client.scatter(plan, broadcast=True, hash=False)
        futures = [client.submit(run_task, plan_future, t, pure=False) for t in tasks]
        error = None
        for fut in as_completed(futures):
            if fut.status == "error":
                error = error or fut.exception()
                client.cancel([f for f in futures if not f.done()])
                continue
            if fut.status == "cancelled":
                continue
            yield fut.result()
            if should_stop is not None and should_stop():
                client.cancel([f for f in futures if not f.done()])
        if error is not None:
            if isinstance(error, LesionMixError):
                raise LesionMixError(str(error)) from None
            raise error
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        if own:
            client.close()


def run_tasks(plan, tasks: list[Task], should_stop: Stop = None, client=None) -> Iterable[dict[str, Any]]:
    """Pick the runner from the plan's settings (or the given Dask ``client``)."""
    cfg = plan.config
    if client is not None or cfg.scheduler:
        return run_dask(plan, tasks, client if client is not None else cfg.scheduler, should_stop)
    if cfg.workers > 1 and len(tasks) > 1:
        return run_pool(plan, tasks, min(cfg.workers, len(tasks)), should_stop)
    return run_serial(plan, tasks, should_stop)
