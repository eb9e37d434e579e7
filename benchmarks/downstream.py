"""Downstream benchmark: does synthetic data help a small 3D U-Net trained on K = 2 and 4 real MS-like cases?

Runs ``lesionmix evaluate`` with a preset sized for about 30 minutes on 2 CPU
cores (design.md section 9): the six MS-like sample subjects only (the
stroke-like ones are another task), two of them held out for testing by the
fixed draw, K = 2 and 4 training cases, 3 seeds, 16 synthetic cases per run at
a 50:50 real:synthetic patch ratio, 1000 iterations (AdamW 5e-3). Prints the
summary table; the report folder holds results.csv, summary.md and
downstream.png. Rerun to resume. Measured: 23.5 min wall for the 30 runs on 2
shared CPU cores (2 workers); results and their reading in docs/downstream.md.

    python benchmarks/downstream.py [REPORT_DIR] [--iterations N] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from napari_lesionmix.evaluate import EvalConfig, run_evaluation
from napari_lesionmix.sample_data import sample_data_dir


def ms_like_cases() -> tuple[str, ...]:
    subjects = json.loads((sample_data_dir() / "subjects.json").read_text())
    items = subjects.items() if isinstance(subjects, dict) else ((s["id"], s) for s in subjects)
    return tuple(sorted(sid for sid, s in items if s.get("kind") == "ms"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="downstream_report")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["none", "carvemix", "softcp", "lesionmix", "carvemix+arhnet"])
    args = ap.parse_args()
    cfg = EvalConfig(
        dataset=str(sample_data_dir()), out=args.out, conditions=tuple(args.methods), train_sizes=(2, 4),
        seeds=args.seeds, n_synthetic=16, synthetic_ratio=0.5, iterations=args.iterations, lr=args.lr, batch=2, patch=32,
        channels=(8, 16, 32), test_fraction=0.33, cases=ms_like_cases(), workers=args.workers, threads=1,
        device="cpu",
    )
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        el = time.perf_counter() - t0
        if done and (el - last[0] > 30 or done == total):
            last[0] = el
            eta = el / done * (total - done) if done else float("nan")
            print(f"[{el / 60:5.1f} min] {done}/{total} iterations, ETA {eta / 60:.1f} min", flush=True)

    report = run_evaluation(cfg, progress=progress, log=lambda s: print(s, flush=True))
    print(f"wall time {report.seconds / 60:.1f} min ({report.n_done_before} runs resumed)")
    print((report.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
