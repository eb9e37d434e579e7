"""Harmonization quality and speed: Composite vs histogram matching (HM) vs ARHNet (ours).

Table-1-style comparison on the held-out sample cases: every lesion of a case
is perturbed by Eq. 1 with (alpha, lambda) ~ U(-0.3, 0.3) drawn from fixed
seeds, the image scaled to [0, 1]; each method harmonizes the whole volume
inside the lesion mask; MAE and PSNR are over the volume, fMAE and fPSNR over
the lesions (the paper's metrics). Then the generator's size and the time of
one 64^3 patch on the CPU (and on CUDA where present), and training
iterations per second at batch 16.

Usage::

    python benchmarks/harmonization.py [--model PATH] [--trials 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_lesionmix.harmonize import load_harmonizer  # noqa: E402
from napari_lesionmix.harmonize.data import minmax_scale, perturb, sample_perturbation  # noqa: E402
from napari_lesionmix.harmonize.metrics import all_metrics  # noqa: E402
from napari_lesionmix.random import sample_rng  # noqa: E402
from napari_lesionmix.sample_data import sample_dataset  # noqa: E402

BENCH_SEED = 2024


def quality(model: str, case_ids: list[str], trials: int) -> dict[str, list[dict]]:
    ds = sample_dataset()
    methods = {"Composite": load_harmonizer("composite"), "HM": load_harmonizer("hm"),
               "Ours (ARHNet)": load_harmonizer(model, device="cpu")}
    rows: dict[str, list[dict]] = {name: [] for name in methods}
    times = {name: 0.0 for name in methods}
    for ci, cid in enumerate(case_ids):
        case = ds[cid].load()
        mask = case.label > 0
        real, _, _ = minmax_scale(case.image)
        for t in range(trials):
            alpha, lam = sample_perturbation(sample_rng(BENCH_SEED, ci * 1000 + t))
            composite = perturb(real, mask, alpha, lam)
            for name, h in methods.items():
                t0 = time.perf_counter()
                out = h.harmonize(composite, mask)
                times[name] += time.perf_counter() - t0
                assert np.array_equal(out[:, ~mask], composite[:, ~mask])
                rows[name].append(all_metrics(out, real, np.broadcast_to(mask, out.shape)))
    n = len(case_ids) * trials
    print(f"\nHeld-out cases {', '.join(case_ids)}; {trials} Eq. 1 perturbations each (seed {BENCH_SEED}); "
          "images scaled to [0, 1]")
    print(f"{'Method':<16}{'MAE':>10}{'fMAE':>9}{'PSNR':>9}{'fPSNR':>9}{'s/volume':>10}")
    for name, r in rows.items():
        m = {k: float(np.mean([x[k] for x in r])) for k in r[0]}
        print(f"{name:<16}{m['mae']:>10.5f}{m['fmae']:>9.4f}{m['psnr']:>9.2f}{m['fpsnr']:>9.2f}{times[name] / n:>10.2f}")
    return rows


def speed(model: str, threads: int) -> None:
    import torch

    from napari_lesionmix.harmonize import losses
    from napari_lesionmix.harmonize.inference import ARHNetHarmonizer
    from napari_lesionmix.harmonize.model import Discriminator, Generator, count_parameters

    torch.set_num_threads(threads)
    h = ARHNetHarmonizer(model, device="cpu")
    gen = h.generator
    cfg = h.model_config
    print(f"\nGenerator {count_parameters(gen):,} parameters ({cfg.base_channels} base channels, depth {cfg.depth}); "
          f"discriminator {count_parameters(Discriminator(cfg)):,}; checkpoint {Path(model).stat().st_size / 1e6:.2f} MB")

    def patch_ms(device, size, reps):
        g = gen.to(device)
        x = torch.rand(1, cfg.in_channels, size, size, size, device=device)
        m = torch.zeros(1, 1, size, size, size, device=device)
        m[..., size // 3: 2 * size // 3, size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 1
        with torch.no_grad():
            g.difference(x, m)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                g.difference(x, m)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps * 1e3

    def train_its(device, size, batch, reps):
        torch.manual_seed(0)
        g, d = Generator(cfg).to(device), Discriminator(cfg).to(device)
        og, od = torch.optim.AdamW(g.parameters(), 1e-4), torch.optim.AdamW(d.parameters(), 5e-5)
        real = torch.rand(batch, cfg.in_channels, size, size, size, device=device)
        m = (torch.rand(batch, 1, size, size, size, device=device) > 0.9).float()
        comp = real * 1.2 * m + real * (1 - m)
        band = losses.boundary_band(m)

        def step():
            with torch.no_grad():
                fake = g(comp, m)
            ld = losses.d_hinge_loss(d(real, comp, m), d(fake, comp, m))
            od.zero_grad()
            ld.backward()
            od.step()
            fake = g(comp, m)
            lg = 100 * losses.reconstruction_loss(fake, real) + 10 * losses.btv_loss(fake, band) + losses.g_hinge_loss(d(fake, comp, m))
            og.zero_grad()
            lg.backward()
            og.step()

        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return reps / (time.perf_counter() - t0)

    cpu = torch.device("cpu")
    cpu_name = platform.processor() or platform.machine()
    print(f"CPU ({cpu_name}, {threads} thread(s)): {patch_ms(cpu, 64, 3):.0f} ms per 64^3 patch, "
          f"{patch_ms(cpu, h.patch_size, 5):.0f} ms per {h.patch_size}^3 patch (the shipped patch size); "
          f"training {train_its(cpu, h.patch_size, 16, 2):.2f} it/s at batch 16 of {h.patch_size}^3")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        print(f"GPU ({torch.cuda.get_device_name(0)}): {patch_ms(dev, 64, 50):.1f} ms per 64^3 patch; "
              f"training {train_its(dev, 64, 16, 10):.2f} it/s at batch 16 of 64^3")
    else:
        print("GPU: no CUDA device on this machine; GPU timings not measured.")


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped one)")
    parser.add_argument("--cases", nargs="*", default=None, help="held-out case ids (default: the checkpoint's validation split)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from napari_lesionmix.harmonize import shipped_checkpoint
    from napari_lesionmix.harmonize.checkpoint import load_checkpoint

    model = args.model or str(shipped_checkpoint())
    state = load_checkpoint(model)
    cases = args.cases or list(state.get("split", {}).get("val") or ["sub-09", "sub-10"])
    print(f"checkpoint {model}: trained {state.get('epoch')} epoch(s) on {', '.join(state.get('split', {}).get('train', []))}")
    quality(model, cases, args.trials)
    speed(model, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
