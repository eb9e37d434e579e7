"""Soft-CP speed: per-sample time (sample + apply) and where it goes.

Cases: a pair of shipped 2 mm sample subjects (99x117x95) and the same pair
upsampled to 1 mm on a 197x233x189 grid (``_volumes.load_1mm``), each with the
host's brain mask as the reference of Eq. (3). For each case, N samples with
seeds 0..N-1 and the default settings (one lesion, two rigid and two intensity
object transforms, one image-level transform), then the same without
image-level transforms. Each figure is the fastest of three runs (the
machine may be shared). The donor's components (``DonorLesions``) are built
once per donor, as the export does, and timed apart.

The breakdown attributes *exclusive* time to: soft mask (``soft_mask_box``),
placement search (``_place``), object transforms (crop warps and intensity
ops), image-level transforms of the host, and the rest (crops, reference
region, label union and the Eq. (1) paste itself).

Baselines measured in the same run, on the same volumes:

* ``blend``: the plain full-volume Eq. (1), ``S*I + (1-S)*I_host`` with a
  full-volume float32 S -- the least any full-volume implementation pays;
* ``naive``: the paper's algorithm done literally on the full volume
  (``binary_erosion``/``binary_dilation`` iterated k times, a ring weight
  a**i per dilation step, then the full-volume blend), for one lesion.

Run: ``.venv/bin/python benchmarks/softcp_speed.py [N]``
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _volumes import load_1mm, load_1mm_brain_mask, load_2mm  # noqa: E402

import napari_lesionmix.augment.softcp as sc  # noqa: E402
from napari_lesionmix.sample_data import sample_dataset  # noqa: E402

HOST, DONOR = "sub-01", "sub-02"

# --------------------------------------------------------------------------- exclusive timers

_totals: dict[str, float] = defaultdict(float)
_stack: list[list] = []  # [name, time spent in timed children]


def _timed(name, fn):
    def wrapper(*args, **kwargs):
        if _stack and _stack[-1][0] == "image ops":
            return fn(*args, **kwargs)  # gamma/noise of the host count as image ops
        _stack.append([name, 0.0])
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            child = _stack.pop()[1]
            _totals[name] += dt - child
            if _stack:
                _stack[-1][1] += dt

    return wrapper


sc.soft_mask_box = _timed("mask", sc.soft_mask_box)
sc._place = _timed("placement", sc._place)
sc.warp_crop = _timed("transforms", sc.warp_crop)
sc.apply_intensity = _timed("transforms", sc.apply_intensity)
sc._apply_image_ops = _timed("image ops", sc._apply_image_ops)

# --------------------------------------------------------------------------- baselines


def naive_soft_mask(mask, a, k_erode, k_dilate):
    """Fig. 5 literally on the full volume: iterated binary morphology, ring weights a**i."""
    s = np.zeros(mask.shape, np.float32)
    core = ndi.binary_erosion(mask, iterations=k_erode) if k_erode else mask
    s[core] = 1.0
    prev = core
    for i in range(1, k_erode + k_dilate + 1):
        grown = ndi.binary_dilation(prev)
        s[grown & ~prev] = a**i
        prev = grown
    return s


def best(fn, repeat=3):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def bench(name, host, donor, brain, n, image_choices=sc.IMAGE_CHOICES, repeat=3):
    """Mean time of sample + apply over seeds 0..n-1; the fastest of ``repeat`` runs (the machine is shared)."""
    t0 = time.perf_counter()
    lesions = sc.DonorLesions.from_case(donor)
    t_setup = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        _totals.clear()
        t0 = time.perf_counter()
        for seed in range(n):
            params = sc.sample_softcp(np.random.default_rng(seed), host, donor, brain, donor_lesions=lesions,
                                      image_choices=image_choices)
            sc.softcp(host, donor, params, donor_lesions=lesions)
        total = (time.perf_counter() - t0) / n * 1e3
        runs.append((total, {k: v / n * 1e3 for k, v in _totals.items()}, params))
    total, parts, params = min(runs, key=lambda r: r[0])
    other = total - sum(parts.values())
    order = ("mask", "placement", "transforms", "image ops")
    detail = ", ".join(f"{k} {parts.get(k, 0.0):.1f}" for k in order)
    print(f"softcp {name}: {total:.1f} ms/sample ({detail}, crop+paste+other {other:.1f}); "
          f"donor components once {t_setup * 1e3:.1f} ms")
    return total, params


def baselines(name, host, donor, params, per_sample_ms, plain_ms):
    s_full = np.zeros(host.shape, np.float32)
    comp = sc.DonorLesions.from_case(donor).components == params.lesions[0].component

    def blend():
        return s_full * donor.image + (1.0 - s_full) * host.image

    def naive():
        s = naive_soft_mask(comp, params.a, params.k_erode, params.k_dilate)
        return s * donor.image + (1.0 - s) * host.image

    t_blend = best(blend) * 1e3
    t_naive = best(naive) * 1e3
    print(f"  baselines {name}: full-volume blend {t_blend:.1f} ms (a Soft-CP sample costs {per_sample_ms / t_blend:.1f}x "
          f"it, {plain_ms / t_blend:.1f}x without image-level ops); paper's soft mask done naively on the "
          f"full volume + blend {t_naive:.1f} ms (ours without image-level ops: {t_naive / plain_ms:.1f}x faster)")


def main(n: int = 20) -> None:
    ds = sample_dataset()
    cases = [
        ("sample_data", load_2mm(HOST), load_2mm(DONOR), ds[HOST].load_brain_mask()),
        ("1mm 197x233x189", load_1mm(HOST), load_1mm(DONOR), load_1mm_brain_mask(HOST)),
    ]
    print(f"Soft-CP, host {HOST}, donor {DONOR}, {n} samples each, times in ms, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for name, host, donor, brain in cases:
        total, params = bench(name, host, donor, brain, n)
        plain, _ = bench(f"{name} (no image-level ops)", host, donor, brain, n, image_choices=("none",))
        baselines(name, host, donor, params, total, plain)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
