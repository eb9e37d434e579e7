"""Export throughput: CarveMix cases per minute vs plain ``nibabel.save`` of the same volumes.

Run: ``OMP_NUM_THREADS=1 python benchmarks/export_throughput.py [--n 24] [--workers 1 2]``

For each worker count, ``lesionmix export`` writes N CarveMix cases of the
shipped sample subjects (99x117x95, 2 mm) end to end: planning, loading,
the CarveMix sample, atomic writes with fsync, checksums, the manifest and
the final integrity check. The baseline, timed in the same run, writes the
same number of volumes (one image and one label per case, same dtypes) with
plain ``nibabel.save`` in one process, with no computation at all, right
before and right after each export (their mean is the reference: on a shared
machine the rate drifts). Goal (design section 6): export rate >= 0.8 of the
baseline rate. Printed too: the peak resident memory of each worker process
and the CPU time per case of both (which other load on the machine does not
inflate as much as wall time).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from napari_lesionmix.export import ExportConfig, export_dataset  # noqa: E402
from napari_lesionmix.sample_data import sample_data_dir, sample_dataset  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def baseline_rate(n: int, work: Path, run: int = 0) -> float:
    """Cases per minute for writing N (image, label) pairs with nibabel.save, arrays already in memory."""
    cases = [rec.load() for rec in sample_dataset().cases]
    folder = work / f"baseline{run}"
    folder.mkdir()
    t0, c0 = time.perf_counter(), cpu_seconds()
    for i in range(n):
        c = cases[i % len(cases)]
        nib.save(nib.Nifti1Image(c.image[0].astype(c.image_dtype), c.affine), folder / f"b{i:06d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(c.label.astype(np.uint8), c.affine), folder / f"b{i:06d}.nii.gz")
    dt = time.perf_counter() - t0
    CPU["baseline"] = (cpu_seconds() - c0) / n
    return 60.0 * n / dt


CPU: dict[str, float] = {}


def export_rate(n: int, workers: int, work: Path):
    out = work / f"export_w{workers}"
    cfg = ExportConfig(os.fspath(sample_data_dir()), os.fspath(out), n=n, seed=0, workers=workers)
    t0, c0 = time.perf_counter(), cpu_seconds()
    report = export_dataset(cfg)
    dt = time.perf_counter() - t0
    # Pool workers are children of the forkserver, not of this process: add what they report.
    workers_cpu = sum(v for pid, v in report.worker_cpu_s.items() if pid != os.getpid())
    CPU["export"] = (cpu_seconds() - c0 + workers_cpu) / n
    assert report.n_written == n
    return 60.0 * n / dt, report.peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="cases per measurement (default 24)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lmx_bench_"))
    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; n = {args.n} cases per run")
    try:
        k = 0
        for w in args.workers:
            # Baseline right before and right after each export: a busy machine drifts.
            b1 = baseline_rate(args.n, work, k)
            rate, rss = export_rate(args.n, w, work)
            cpu_export = CPU["export"]
            b2 = baseline_rate(args.n, work, k + 1)
            k += 2
            base = 0.5 * (b1 + b2)
            mem = ", ".join(f"{v:.0f}" for v in rss.values()) or "-"
            ratio = rate / base
            print(f"baseline nibabel.save (image + label, 1 process): {base:.1f} cases/min "
                  f"(before {b1:.1f}, after {b2:.1f})")
            print(f"export carvemix, {w} worker(s): {rate:.1f} cases/min = {ratio:.2f} x baseline "
                  f"({'meets' if ratio >= 0.8 else 'below'} the 0.8 goal); peak RSS per worker MiB: {mem}")
            print(f"  CPU per case (contention-free cost): export {1000 * cpu_export:.0f} ms vs "
                  f"nibabel.save {1000 * CPU['baseline']:.0f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
