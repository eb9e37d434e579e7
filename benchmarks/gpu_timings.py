"""GPU-machine timings (issue 27): ARHNet on CUDA against the machine's CPUs, and export on those CPUs.

One prepared run for a lent GPU machine (docs/performance.md gives the exact command, the carried
wheels and the expected minutes); ``--device cpu --quick`` is the CPU smoke run the tests make.

1. ``inference``: the shipped ARHNet generator's patches/s (fp32: inference has no mixed
   precision; ``torch.cuda.synchronize`` around timed, warmed-up calls) at its own patch size
   and at the paper's 64^3, batch 4 (the harmonizer's default) and larger; and the seconds of
   ``harmonize`` on a CarveMix paste of a 2 mm sample subject and of the same subjects at 1 mm
   (197 x 233 x 189, ``benchmarks/_volumes.load_1mm``; run on the model's 2 mm grid as the CLI
   does). The same on the machine's CPUs (all cores) for the ratio.
2. ``training``: ``train_harmonizer``'s own loop at the paper's settings (Sec. 3.1.2 of
   papers/arhnet.txt: batch 16, 64^3 patches, AdamW at 1e-4 (G) and 5e-5 (D), loss weights
   100 / 10 / 1; the paper's generator input, no anchoring) on sample subjects at 1 mm, a
   fixed number of steps after warm-up, with mixed precision (``TrainConfig.amp``: bfloat16)
   and without; it/s from the median step, the CPU's share (patch sampling, ``make_batch``)
   and peak GPU memory.
3. ``export``: end-to-end ``export_dataset`` (what ``lesionmix export`` runs) of CarveMix and
   of LesionMix cases with 1 and N local workers and on a local dask.distributed cluster of N
   worker processes, in cases/s, against plain ``nibabel.save`` of that export's own volumes
   in one process, in the same run (``benchmarks/export_throughput.py``'s code).
4. ``training-cpu`` (CUDA runs only, last): the paper-settings loop on the CPUs, for the ratio.

``--budget-s`` bounds the whole run: a part (or item) that would not fit in what is left is
skipped and the table says so. Results: ``gpu_timings.json`` and ``gpu_timings.md`` (the
Markdown table, also printed) in ``--out`` (default ``$OUT``, else the current folder).

Usage::

    python benchmarks/gpu_timings.py [--device cuda|cpu] [--quick] [--budget-s 400] [--out DIR]
                                     [--parts inference,training,export,training-cpu] [--workers N]
    python benchmarks/gpu_timings.py --fetch-wheels .whl   # here, before a GPU run (docs/performance.md)
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

#: Modules the run imports, by the distribution that provides them.
NEEDS = {"torch": "torch", "numpy": "numpy", "scipy": "scipy", "nibabel": "nibabel", "isal": "isal",
         "edt": "edt", "cc3d": "connected-components-3d", "cv2": "opencv-python-headless", "tqdm": "tqdm", "matplotlib": "matplotlib"}
#: Only for the Dask row of the export (skipped without them).
NEEDS_DASK = {"dask": "dask", "distributed": "distributed"}
#: What the GPU machine's image lacks (its package list: /work/.library/device/KINDS.md): carried as
#: wheels of the versions this environment has, with the dependencies it does not hold either.
CARRIED = ("nibabel", "isal", "edt", "connected-components-3d", "dask", "distributed", "partd", "locket", "tblib", "zict", "tornado")
#: Where --fetch-wheels puts them: `.whl/` at the repository root (ignored by git, named in `carry`).
WHEEL_DIR = ".whl"
PARTS = ("inference", "training", "export", "training-cpu")
#: Seconds each part needs at least (full size, quick size): a part is skipped below this.
NEED_S = {"inference": (60, 2), "training": (60, 2), "export": (60, 2), "training-cpu": (40, 2)}
#: Every size of the run, full (the GPU machine's run) and quick (the CPU smoke run). ``gen``: generator
#: (patch, batch) pairs (``None``: the checkpoint's own patch); ``grids``: pastes timed; ``train``: subjects,
#: batch, patch, warm-up and timed steps, grid; ``export``: cases per 1-worker and N-worker export,
#: volumes held for the baseline and cases it writes, Dask worker processes (else threads);
#: ``train_cpu_steps``: warm-up and timed steps of ``training-cpu`` (seconds each at the paper's size).
SIZES = {
    "full": {"gen": [(None, 4), (None, 32), (64, 4), (64, 16)], "gen_reps": (50, 2.0, 5, 4.0), "grids": ("2 mm", "1 mm"),
             "train": (("sub-01", "sub-02", "sub-03", "sub-04"), 16, 64, 3, 20, "1 mm"),
             "train_cpu_steps": (1, 2), "export": (96, 16, 32, 32, True)},
    "quick": {"gen": [(16, 2), (16, 4)], "gen_reps": (1, 0.0, 1, 0.0), "grids": ("2 mm",),
              "train": (("sub-01", "sub-02"), 2, 16, 1, 2, "2 mm"), "train_cpu_steps": (1, 1),
              "export": (12, 6, 12, 4, False)},
}


def fail(msg: str) -> SystemExit:
    """Print ``msg`` (one sentence) and give the exit that says the run could not start."""
    print(f"gpu_timings: {msg}", file=sys.stderr)
    return SystemExit(2)


def missing(needs: dict[str, str]) -> list[str]:
    """Distributions of ``needs`` whose module cannot be imported here."""
    out = []
    for module, dist in needs.items():
        try:
            importlib.import_module(module)
        except ImportError:
            out.append(dist)
    return out


def check_requirements(device: str) -> None:
    """Refuse to start, in one sentence, without the packages or the device the run needs."""
    gone = missing(NEEDS)
    if "torch" in gone:
        raise fail("PyTorch is not installed here; run with the python that holds it (on the GPU machine "
                   "the plain python3).")
    if gone:
        raise fail(f"{', '.join(gone)} not installed here: carry them as wheels ({WHEEL_DIR}/ from "
                   f"`python benchmarks/gpu_timings.py --fetch-wheels {WHEEL_DIR}` on a machine with pip access, "
                   "installed as docs/performance.md says).")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        raise fail(f"--device {device} was asked for but torch {torch.__version__} ({build}) sees no CUDA device; "
                   "use --device cpu for a CPU run.")


def fetch_wheels(dest: str) -> int:
    """Download the CARRIED wheels (the versions installed here) for the GPU machine's Python 3.12."""
    import subprocess

    pins = []
    for name in CARRIED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise fail(f"{name} is not installed in this environment, so its version to carry is unknown; "
                       "run this with the project's venv.") from None
    plats = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_5_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in plats for a in ("--platform", p)], "-d", dest, *pins]
    print(" ".join(cmd))
    return subprocess.call(cmd)


class Budget:
    """Seconds left of ``--budget-s``; parts ask before they start and record what they skip."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = float(seconds), time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, need_s: float) -> bool:
        return self.left() >= need_s

    def why_not(self, need_s: float) -> str:
        return f"skipped: {max(self.left(), 0):.0f} s left of --budget-s {self.seconds:g}, it needs about {need_s:.0f} s"


def row(part: str, what: str, result: str, compared: str = "", ratio: float | None = None, **data) -> dict:
    """One line of the table; ``data`` holds its numbers for the JSON."""
    return {"part": part, "measurement": what, "result": result, "compared_with": compared,
            "ratio": None if ratio is None or not math.isfinite(ratio) else round(float(ratio), 3), **data}


def timed_reps(fn: Callable[[], object], sync: Callable[[], None], warm: int, max_reps: int, max_s: float,
               min_reps: int = 1) -> list[float]:
    """Seconds of each timed call of ``fn`` after ``warm`` untimed ones; stops at ``max_reps`` or ``max_s``."""
    for _ in range(warm):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < max_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def syncer(device) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def environment(device: str, cpu_threads: int) -> dict:
    import torch

    env = {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "cpu_threads": cpu_threads, "load_average": round(os.getloadavg()[0], 2), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "device": device, "cuda_available": torch.cuda.is_available(),
           "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32), "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    env["commit"] = git_commit()
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    return env


def git_commit() -> str | None:
    """The checkout's commit, or ``None`` where the copy has no git metadata (a device machine's copy)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# ---------------------------------------------------------------------------------------- inference


def inference(device, quick: bool, budget: Budget, cpu_threads: int) -> list[dict]:
    """Generator patches/s and whole-paste ``harmonize`` seconds on ``device`` and on the CPUs."""
    import torch
    from _volumes import load_1mm, load_2mm

    from napari_lesionmix.harmonize import shipped_checkpoint
    from napari_lesionmix.harmonize.criterion import cross_subject_pastes
    from napari_lesionmix.harmonize.inference import ARHNetHarmonizer

    model = shipped_checkpoint()
    cpu = torch.device("cpu")
    hs = {"dev": ARHNetHarmonizer(model, device=str(device)), "cpu": ARHNetHarmonizer(model, device="cpu")}
    p0 = hs["dev"].patch_size
    rows = []
    size = SIZES["quick" if quick else "full"]
    gpu_reps, gpu_s, cpu_reps, cpu_s = size["gen_reps"]
    for patch, batch in size["gen"]:
        patch = patch or p0
        if not budget.allows(2 if quick else 10):
            rows.append(row("inference", f"generator {patch}^3 x {batch}", budget.why_not(10)))
            continue
        res = {}
        for key, dev in (("dev", device), ("cpu", cpu)):
            gen, cfg = hs[key].generator, hs[key].model_config
            x = torch.rand(batch, cfg.in_channels, patch, patch, patch, device=dev)
            m = torch.zeros(batch, 1, patch, patch, patch, device=dev)
            q = patch // 4
            m[..., q:3 * q, q:3 * q, q:3 * q] = 1

            def call(gen=gen, x=x, m=m):
                with torch.no_grad():
                    gen.difference(x, m)

            gpu = dev.type == "cuda"
            t = timed_reps(call, syncer(dev), warm=3 if gpu else 1, max_reps=gpu_reps if gpu else cpu_reps,
                           max_s=gpu_s if gpu else cpu_s)
            res[key] = batch / statistics.median(t)
        rows.append(row("inference", f"generator {patch}^3 x {batch}, fp32", f"{res['dev']:.1f} patches/s ({device})",
                        f"{res['cpu']:.1f} patches/s (CPU, {cpu_threads} threads)", res["dev"] / res["cpu"],
                        patch=patch, batch=batch, patches_per_s=res["dev"], cpu_patches_per_s=res["cpu"]))
    for grid in size["grids"]:
        load = {"2 mm": load_2mm, "1 mm": load_1mm}[grid]
        if not budget.allows(2 if quick else 20):
            rows.append(row("inference", f"harmonize a {grid} paste", budget.why_not(20)))
            continue
        paste = cross_subject_pastes([load(c) for c in ("sub-09", "sub-10")], None, ("as is",), ("carvemix",))[0]
        res, patches = {}, {}
        for key, dev in (("dev", device), ("cpu", cpu)):
            h, gpu = hs[key], dev.type == "cuda"
            total = [0]

            def call(h=h, total=total, paste=paste):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h.harmonize(paste.image, paste.mask, label=paste.label, spacing=paste.spacing,
                                progress=lambda done, n: total.__setitem__(0, n))

            t = timed_reps(call, syncer(dev), warm=1, max_reps=1 if quick or not gpu else 3, max_s=0)
            res[key], patches[key] = statistics.median(t), total[0]
        shape = "x".join(map(str, paste.image.shape[1:]))
        rows.append(row("inference", f"harmonize a {grid} paste ({shape}, {patches['dev']} patches), fp32",
                        f"{res['dev']:.2f} s ({patches['dev'] / res['dev']:.0f} patches/s)",
                        f"{res['cpu']:.2f} s (CPU)", res["cpu"] / res["dev"], grid=grid, seconds=res["dev"],
                        cpu_seconds=res["cpu"], patches=patches["dev"], paste=paste.name,
                        ran_at_spacing=hs["dev"].run_spacing(paste.spacing)))
    return rows


# ---------------------------------------------------------------------------------------- training


def training(device, quick: bool, budget: Budget, amps=(True, False), steps: tuple[int, int] | None = None,
             part: str = "training") -> list[dict]:
    """``train_harmonizer``'s loop at the paper's settings: it/s of the median step, data share, peak memory.

    ``steps``: (warm-up >= 1, timed) steps instead of the size's; ``part``: the rows' part.
    """
    import numpy as np
    import torch
    from _volumes import load_1mm, load_2mm

    from napari_lesionmix.harmonize.config import TrainConfig
    from napari_lesionmix.harmonize.data import load_training_cases, make_batch
    from napari_lesionmix.harmonize.train import train_harmonizer
    from napari_lesionmix.random import sample_rng

    ids, batch, patch, warm, timed, grid = SIZES["quick" if quick else "full"]["train"]
    warm, timed = steps or (warm, timed)
    cases = [{"2 mm": load_2mm, "1 mm": load_1mm}[grid](c) for c in ids]
    # The paper's settings (TrainConfig's defaults are its values), its generator input (no anchoring)
    # and Eq. 1 law; one epoch of exactly warm + steps steps, no validation.
    base = TrainConfig(epochs=1, batch_size=batch, patch_size=patch, anchor="none", gain_range=0.0, n_val=0,
                       cross_val_every=0, patches_per_case=math.ceil((warm + timed) * batch / len(cases)),
                       device=str(device), seed=0)
    tcs = load_training_cases(cases, normalisation=base.normalisation)
    rng = sample_rng(0, 0)
    t = timed_reps(lambda: make_batch(rng, tcs, batch, patch, base.alpha_range, base.lam_range), lambda: None,
                   warm=1, max_reps=3, max_s=0)
    data_ms = 1e3 * statistics.median(t)
    rows = []
    gpu = device.type == "cuda"
    for amp in amps if gpu else (False,):
        label = ("bf16 AMP" if torch.cuda.is_bf16_supported() else "fp16 AMP") if amp and gpu else "fp32"
        what = f"train ARHNet, {'paper settings' if not quick else 'tiny'} ({batch} x {patch}^3 at {grid}), {label}"
        if not budget.allows(2 if quick else 30):
            rows.append(row(part, what, budget.why_not(30)))
            continue
        stamps: list[float] = []

        def on_step(info, stamps=stamps):
            if "val" not in info:
                stamps.append(time.perf_counter())

        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        with tempfile.TemporaryDirectory(prefix="lmx_gpu_train_") as tmp:
            t0 = time.perf_counter()
            out = train_harmonizer(cases, Path(tmp) / "t.pt", base.replace(amp=amp), callback=on_step)
            wall = time.perf_counter() - t0
        step_s = np.diff(stamps)[warm - 1:] if len(stamps) > warm else np.array([math.nan])
        med = float(np.median(step_s))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None
        mem = f", peak {peak:.2f} GiB" if peak is not None else ""
        rows.append(row(part, what, f"{1 / med:.2f} it/s ({1e3 * med:.0f} ms/step{mem})",
                        f"of which patch sampling {data_ms:.1f} ms (CPU)", None, it_per_s=1 / med,
                        step_ms_median=1e3 * med, step_ms=[round(1e3 * s, 2) for s in step_s.tolist()],
                        data_ms=data_ms, peak_gpu_gib=peak, amp=label, timed_steps=len(step_s), warmup_steps=warm,
                        loop_wall_s=wall, epochs_done=out["epochs_done"], batch=batch, patch=patch, grid=grid))
    return rows


# ---------------------------------------------------------------------------------------- export


def export_rows(quick: bool, budget: Budget, workers: int) -> list[dict]:
    """CarveMix and LesionMix ``export_dataset`` with 1 and ``workers`` processes and on Dask, vs nibabel.save."""
    import export_throughput as et

    from napari_lesionmix.io.nifti import DEFAULT_GZIP

    # Cases per export, volumes held for the baseline and cases it writes. LesionMix needs >= 12 cases
    # for 5 folds (fewer fail its fold check, after the export).
    n1, per_worker, n_vol, n_base, processes = SIZES["quick" if quick else "full"]["export"]
    nw = per_worker * workers
    dask_missing = missing(NEEDS_DASK)
    rows = []
    tuned = et.keep_freed_memory()
    work = Path(tempfile.mkdtemp(prefix="lmx_gpu_export_"))
    cluster, held = None, None
    try:
        for method in ("carvemix", "lesionmix"):
            methods = ((method, 1.0),)
            if not budget.allows(4 if quick else 30):
                rows.append(row("export", f"{method}", budget.why_not(30)))
                continue
            if quick and held is not None:
                volumes, of = held  # the smoke run writes LesionMix's baseline from CarveMix's volumes
            else:
                volumes, of = et.export_volumes(n_vol, work / f"v-{method}", methods, workers=1 if quick else workers), method
                held = volumes, of
            ref1, cpu1 = et.baseline(volumes, n_base, work / f"b1-{method}")
            runs = [(f"{method}, 1 worker", 1, None, n1), (f"{method}, {workers} workers", workers, None, nw)]
            if quick and method != "carvemix":
                # The smoke run: the pool and Dask paths are CarveMix's; LesionMix runs serially.
                rows.append(row("export", f"{method}, {workers} workers and Dask", "skipped: --quick"))
                runs = runs[:1]
            elif dask_missing:
                rows.append(row("export", f"{method}, Dask ({workers} workers)",
                                f"skipped: {', '.join(dask_missing)} not installed"))
            else:
                runs.append((f"{method}, Dask ({workers} workers)", workers, "dask", nw))
            done = []
            for what, w, how, n in runs:
                if not budget.allows(3 if quick else 15):
                    rows.append(row("export", what, budget.why_not(15)))
                    continue
                scheduler = None
                if how == "dask":
                    if cluster is None:
                        cluster, start_s = local_cluster(workers, processes)
                    scheduler = cluster.scheduler_address
                k = len(done)
                rate, cpu, rss = et.export(n, w, DEFAULT_GZIP, work / f"e-{method}-{k}", methods, scheduler)
                done.append((what, w, how, n, rate / 60.0, cpu, rss))
            ref2, cpu2 = et.baseline(volumes, n_base, work / f"b2-{method}")
            ref, ref_cpu = (ref1 + ref2) / 120.0, (cpu1 + cpu2) / 2
            for what, w, how, n, rate, cpu, rss in done:
                extra = {"dask_cluster_start_s": start_s} if how == "dask" else {}
                rows.append(row("export", f"{what}, {n} cases", f"{rate:.2f} cases/s", f"nibabel.save {ref:.2f} cases/s "
                                f"(1 process{'' if of == method else f', {of} volumes'})", rate / ref, method=method,
                                baseline_volumes=of, workers=w, scheduler=how, n=n,
                                cases_per_s=rate, baseline_cases_per_s=ref, cpu_ms_per_case=1e3 * cpu,
                                baseline_cpu_ms_per_case=1e3 * ref_cpu, peak_rss_mib=sorted(rss.values()),
                                gzip=DEFAULT_GZIP, freed_heap_kept=tuned, **extra))
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def local_cluster(workers: int, processes: bool):
    """A dask.distributed LocalCluster of ``workers`` one-thread workers (processes, or threads for --quick),
    its workers warmed, and the seconds that took."""
    import distributed

    # Worker processes import the package from this checkout, as this process does.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                       dashboard_address=None)
    # A user's cluster is up before the export: every worker imports the export and the methods
    # untimed (the local pool, by contrast, starts cold in every export, as `lesionmix export` does).
    with distributed.Client(cluster) as client:
        client.run(exec, WARM_WORKER, {})
    return cluster, time.perf_counter() - t0


#: What a Dask worker imports before the timed exports.
WARM_WORKER = ("import napari_lesionmix.export.run, napari_lesionmix.export.runners\n"
               "from napari_lesionmix.augment.registry import method_names\nmethod_names()")


# ---------------------------------------------------------------------------------------- the run


def compare_training(rows: list[dict], device: str) -> None:
    """Give the CPUs' training row the GPU's fp32 it/s and their ratio (in place), when both were measured."""
    gpu_fp32 = [r for r in rows if r["part"] == "training" and r.get("amp") == "fp32" and "it_per_s" in r]
    for r in rows:
        if r["part"] == "training-cpu" and "it_per_s" in r and gpu_fp32:
            r["compared_with"] = f"{gpu_fp32[0]['it_per_s']:.2f} it/s fp32 on {device}"
            r["ratio"] = round(gpu_fp32[0]["it_per_s"] / r["it_per_s"], 3)


def markdown(result: dict) -> str:
    env = result["environment"]
    where = env.get("gpu") or f"{env['machine']} CPU"
    head = (f"ARHNet and export timings on {where} ({env['cpu_count']} CPU cores, torch {env['torch']}, "
            f"CUDA {env['torch_cuda']}, load average {env['load_average']} at the start, commit "
            f"{(env['commit'] or 'unknown')[:10]}); {'--quick, ' if result['quick'] else ''}"
            f"{result['elapsed_s']:.0f} s of --budget-s {result['budget_s']:g}.\n\n")
    lines = ["| part | measurement | result | compared with | ratio |", "| --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f} x"
        lines.append(f"| {r['part']} | {r['measurement']} | {r['result']} | {r['compared_with']} | {ratio} |")
    notes = "".join(f"\n- {n}" for n in result["notes"])
    return head + "\n".join(lines) + "\n" + (f"\nNotes:{notes}\n" if notes else "")


def run(args) -> dict:
    import torch

    budget = Budget(args.budget_s)
    torch.set_num_threads(args.cpu_threads)
    device = torch.device(args.device)
    parts = [p for p in PARTS if p in args.parts]
    if device.type != "cuda" and "training-cpu" in parts:
        parts.remove("training-cpu")  # the CPU run's training part is already on the CPU
    result = {"script": "benchmarks/gpu_timings.py", "argv": sys.argv[1:], "quick": args.quick,
              "budget_s": args.budget_s, "environment": environment(args.device, args.cpu_threads),
              "parts": {}, "rows": [], "notes": [
                  "fp32 inference: the harmonizer has no mixed precision; cuDNN convolutions may use TF32 "
                  "(torch's default, cudnn_allow_tf32 in the JSON).",
                  "Ratios: the GPU's rate over the CPUs' (inference; training-cpu: the GPU's fp32 it/s over "
                  "the CPUs'), the export's cases/s over nibabel.save's in one process, whatever the export's workers.",
              ]}
    jobs = {"inference": lambda: inference(device, args.quick, budget, args.cpu_threads),
            "training": lambda: training(device, args.quick, budget),
            "export": lambda: export_rows(args.quick, budget, args.workers),
            "training-cpu": lambda: training(torch.device("cpu"), args.quick, budget,
                                             steps=SIZES["quick" if args.quick else "full"]["train_cpu_steps"],
                                             part="training-cpu")}
    for part in parts:
        need = NEED_S[part][1 if args.quick else 0]
        t0 = time.perf_counter()
        if not budget.allows(need):
            status, rows = budget.why_not(need), [row(part, "(whole part)", budget.why_not(need))]
        else:
            print(f"[{budget.elapsed():5.0f} s] {part} ...", flush=True)
            try:
                rows, status = jobs[part](), "done"
            except Exception as exc:  # one part's failure must not lose the others' numbers
                traceback.print_exc()
                msg = " ".join(str(exc).split()) or type(exc).__name__
                rows, status = [row(part, "(whole part)", f"failed: {type(exc).__name__}: {msg}")], "failed"
        for r in rows:
            print(f"  {r['measurement']}: {r['result']}" + (f" | {r['compared_with']}" if r["compared_with"] else "")
                  + ("" if r["ratio"] is None else f" | {r['ratio']:.2f} x"), flush=True)
        result["parts"][part] = {"status": status, "seconds": round(time.perf_counter() - t0, 2)}
        result["rows"] += rows
    compare_training(result["rows"], args.device)
    result["elapsed_s"] = round(budget.elapsed(), 2)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default; cuda:N) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the CPU smoke run of the tests")
    ap.add_argument("--budget-s", type=float, default=400.0, help="seconds for the whole run (default 400)")
    ap.add_argument("--out", default=None, help="folder for gpu_timings.json/.md (default $OUT, else .)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--workers", type=int, default=None, help="export workers (default: the CPU count; 2 --quick)")
    ap.add_argument("--cpu-threads", type=int, default=None, help="torch CPU threads (default: the CPU count)")
    ap.add_argument("--fetch-wheels", metavar="DIR", default=None,
                    help="download the wheels the GPU machine lacks into DIR and exit")
    args = ap.parse_args(argv)
    if args.fetch_wheels:
        return fetch_wheels(args.fetch_wheels)
    kind = args.device.split(":")[0]
    if kind not in ("cuda", "cpu"):
        raise fail(f"--device must be cuda, cuda:N or cpu, not {args.device!r}.")
    unknown = sorted(set(args.parts.split(",")) - set(PARTS))
    if unknown:
        raise fail(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}.")
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        raise fail(f"--budget-s must be a positive number of seconds, not {args.budget_s}.")
    args.workers = args.workers or (2 if args.quick else os.cpu_count() or 1)
    args.cpu_threads = args.cpu_threads or os.cpu_count() or 1
    if args.workers < 1 or args.cpu_threads < 1:
        raise fail("--workers and --cpu-threads must be >= 1.")
    check_requirements(args.device)
    out = Path(args.out or os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    table = markdown(result)
    (out / "gpu_timings.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "gpu_timings.md").write_text(table)
    print("\n" + table)
    print(f"written: {out / 'gpu_timings.json'}, {out / 'gpu_timings.md'}")
    return 1 if any(p["status"] == "failed" for p in result["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
