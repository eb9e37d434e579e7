"""Pasted lesions in the host's intensity scale: lesion contrast for none / brain-linear / histogram.

For every ordered host/donor pair of ``sample_data`` (10 subjects, 90 pairs)
and each method, one sample is made through the registry (the shared
``intensity_match`` step, :mod:`napari_lesionmix.augment.intensity`) with the
same seed for every mode, so the draws are the same and only the matching
differs. The *contrast* of a lesion is its median intensity over the median of
the host's normal brain (brain mask minus lesions); the pasted lesions are the
voxels the sample labels lesion and the host did not. Reported per method and
mode: the fraction of pairs whose pasted contrast is within 15 % of the host's
own lesion contrast (the issue's goal), the fraction within 15 % of the donor
lesion's own contrast in its own scan (what a gain correction can preserve:
the sample subjects' own lesion contrasts range from 1.25 to 1.52, MS-like
against stroke-like), the same-kind pairs (MS-like with MS-like, stroke-like
with stroke-like) and the median relative error against the host.

Methods: CarveMix at lambda = 0 (the ROI is the donor's lesion mask), Soft-CP
(one lesion, no image-level host transforms; its object-level gamma, noise and
blur stay, as the paper draws them) and LesionMix populate (the donor is the
only lesion source; target = host load + 1 mL).

Usage::

    python benchmarks/intensity_matching.py [--methods carvemix softcp lesionmix] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_lesionmix.augment import registry  # noqa: E402
from napari_lesionmix.augment.intensity import MODES  # noqa: E402
from napari_lesionmix.augment.lesion_load import lesion_load_ml  # noqa: E402
from napari_lesionmix.io.dataset import Dataset  # noqa: E402
from napari_lesionmix.sample_data import sample_dataset  # noqa: E402

SEED = 15
MS_LIKE = {"sub-01", "sub-02", "sub-04", "sub-06", "sub-07", "sub-09"}
WITHIN = 0.15


def contrast(image: np.ndarray, where: np.ndarray, normal: np.ndarray) -> float:
    return float(np.median(image[where]) / np.median(image[normal]))


def run(methods: list[str]) -> tuple[dict, dict]:
    ds = sample_dataset()
    cases = {r.case_id: r.load() for r in ds.cases}
    brains = {r.case_id: r.load_brain_mask() for r in ds.cases}
    own = {}
    for cid, c in cases.items():
        normal = brains[cid] & (c.label == 0)
        own[cid] = (contrast(c.image[0], c.label != 0, normal), normal)
    results: dict = {}
    seconds: dict = {}
    for name in methods:
        for mode in MODES:
            rows, t0 = [], time.perf_counter()
            for h in cases:
                for d in cases:
                    if h == d:
                        continue
                    row = sample_pair(name, mode, ds, cases, brains, h, d)
                    if row is None:
                        continue
                    pasted, c_p = row
                    rows.append((h, d, c_p, own[h][0], own[d][0]))
            results[name, mode] = rows
            seconds[name, mode] = time.perf_counter() - t0
    return results, seconds


def sample_pair(name, mode, ds, cases, brains, h, d):
    host, donor = cases[h], cases[d]
    sources = registry.LocalSources([host, donor], brains)
    options: dict = {"intensity_match": mode}
    training = None
    if name == "carvemix":
        options["lam"] = 0.0
    elif name == "softcp":
        options["n_image_ops"] = 0
    elif name == "lesionmix":
        options.update(mode="populate", target_load=lesion_load_ml(host.label, host.spacing) + 1.0)
        training = Dataset(ds.root, ds.layout, [ds[d]], dict(ds.channel_names), dict(ds.labels))
        sources = registry.LocalSources([host, donor], brains, training)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            syn = registry.generate(name, host, donor if name != "lesionmix" else None, seed=SEED,
                                    options=options, brain_mask=brains[h], training_set=training, sources=sources)
    except registry.DrawRejected:
        return None
    pasted = (syn.label != 0) & (host.label == 0)
    if not pasted.any():
        return None
    normal = brains[h] & (host.label == 0)
    return pasted, float(np.median(syn.image[0][pasted]) / np.median(host.image[0][normal]))


def summarise(rows):
    c_p = np.array([r[2] for r in rows])
    c_h = np.array([r[3] for r in rows])
    c_d = np.array([r[4] for r in rows])
    same = np.array([(r[0] in MS_LIKE) == (r[1] in MS_LIKE) for r in rows])
    err_h = np.abs(c_p / c_h - 1)
    err_d = np.abs(c_p / c_d - 1)
    return {
        "pairs": len(rows),
        "host": float(np.mean(err_h <= WITHIN)),
        "same_kind": float(np.mean(err_h[same] <= WITHIN)) if same.any() else float("nan"),
        "donor": float(np.mean(err_d <= WITHIN)),
        "median_err": float(np.median(err_h)),
        "darker": int(np.sum(c_p < 1.0)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["carvemix", "softcp", "lesionmix"])
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results, seconds = run(args.methods)
    print(f"# intensity matching on sample_data ({platform.processor() or platform.machine()}, "
          f"{time.perf_counter() - t0:.0f} s)")
    print()
    print("| method | intensity_match | pairs | within 15 % of host's lesion contrast | same-kind pairs "
          "| within 15 % of donor's own contrast | median error vs host | pasted darker than host brain |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, mode), rows in results.items():
        s = summarise(rows)
        print(f"| {name} | {mode} | {s['pairs']} | {s['host']:.0%} | {s['same_kind']:.0%} | {s['donor']:.0%} "
              f"| {s['median_err']:.1%} | {s['darker']} |")
    print()
    print("seconds per method and mode: " + ", ".join(f"{n}/{m} {s:.1f}" for (n, m), s in seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
