"""LesionMix speed: per-sample time on a 2 mm sample subject and on a 1 mm 197x233x189 volume.

For each grid (the shipped 2 mm subjects, and the same subjects upsampled x2
to 1 mm and cropped/padded to 197x233x189, see ``_volumes.py``) it times:

* building the lesion bank (connected components and crops of every case);
* building the likelihood map, restricting it to the host's brain mask, and
  drawing positions;
* ``sample_lesionmix`` (populate to a fixed target: draws, mask-only warps for
  load accounting);
* ``lesionmix`` (apply), split into per-lesion transforms (image + mask
  resampling, intensity), soft masks, and the blend into the host;
* an inpaint-mode sample (Telea, three slice-wise passes) to half the load of
  the case with most lesions.

Baseline, measured in the same run: one full-volume ``scipy.ndimage.label``
(26-connectivity) of the host label plus one full-volume soft blend
``S * I_paste + (1 - S) * I_host`` over all channels: what a naive
implementation pays for *each* pasted lesion. Ratios are printed against it.

Printed too, per grid: the **floor** of any populate that gives these bytes (the
library calls it cannot avoid: the elastic fields, the whole padded crop's
resampling for each noise lesion's sd, the soft masks' band reach and core
distance; :func:`exact_floor`), and the per-lesion transform time by bank crop
size (each insertion replayed alone).

Bars (issue 27): one populate sample (draw + apply, about 36 lesions at 1 mm)
within 2x the baseline, and the per-lesion warp + intensity transforms of a crop
of a few hundred voxels within 1 ms. Each is printed with its measured value and
whether it is met; the per-lesion breakdown (warp, soft mask, blend, draw)
shows where the rest goes. Timings are wall clock: on a loaded machine read the
ratios, which compare against the baseline timed in the same process.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lesionmix_speed.py [--quick]``
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).parent))
from _volumes import load_1mm, load_1mm_brain_mask, load_2mm, subjects_of_kind  # noqa: E402

from napari_lesionmix.augment.inpaint import inpaint_telea  # noqa: E402
from napari_lesionmix.augment.lesion_load import lesion_load_ml  # noqa: E402
from napari_lesionmix.augment.lesionmix import (  # noqa: E402
    inpaint_region,
    lesionmix,
    sample_lesionmix,
)
from napari_lesionmix.augment.lesions import LesionBank  # noqa: E402
from napari_lesionmix.augment.likelihood import likelihood_map, sample_positions  # noqa: E402
from napari_lesionmix.augment.paste.warp import Warp, lesion_warp, warp_mask  # noqa: E402
from napari_lesionmix.augment.populate import soft_pad  # noqa: E402
from napari_lesionmix.augment.softmask import _edt  # noqa: E402
from napari_lesionmix.augment.transforms import displacement_field  # noqa: E402
from napari_lesionmix.io.morphology import BALL_MAX, exact_grid, within_ball  # noqa: E402
from napari_lesionmix.random import sample_rng  # noqa: E402
from napari_lesionmix.sample_data import sample_dataset  # noqa: E402


def timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def exact_floor(params, bank, spacing) -> dict[str, float]:
    """Seconds of the library calls any byte-identical populate of ``params`` must make.

    * the elastic field of each elastic insertion (three Gaussian smoothings of
      white noise on its box, then the peak): the field's bytes are the output's;
    * the whole padded crop's resampling for each noise insertion: the noise sd
      is measured on every voxel of it (``apply_intensity``);
    * the soft mask's band reach and its distance to the core, on the mask's
      box grown by the band.
    """
    t = {"fields": 0.0, "noise crops": 0.0, "distances": 0.0}
    for ins in params.insertions:
        lesion, tf = bank.lesion(ins.case_id, ins.lesion_index), ins.transform
        warp = lesion_warp(lesion, tf, pad=soft_pad(params))
        if warp.disp is not None:
            core = tuple(n - 2 * warp.pad for n in warp.shape)
            t["fields"] += timed(lambda core=core, e=tf.elastic: displacement_field(core, e))[0]
        if any(op.kind == "noise" for op in tf.intensity):
            fresh = Warp(warp.shape, warp.center, warp.pad, warp.inverse, warp.source_center, warp.disp)
            if fresh.inverse is not None and fresh.disp is not None:
                fresh.coords()  # coordinates are not counted, only the resampling
            t["noise crops"] += timed(lambda f=fresh, lz=lesion, o=params.augment.image_order:
                                      [f.resample(ch, o, "nearest") for ch in lz.image])[0]
        hard = warp_mask(lesion, warp, params.augment)
        if hard.any():
            idx = np.nonzero(hard)
            g = params.soft_dilate + 1
            box = tuple(slice(max(int(i.min()) - g, 0), int(i.max()) + 1 + g) for i in idx)
            sub = hard[box]
            # The band reach (min-plus passes where the grid allows, else a distance transform) and
            # the fall-off's distance to the core (a distance transform on the same box).
            fast = exact_grid(tuple(spacing)) and params.soft_dilate <= BALL_MAX
            reach = (lambda sub=sub: within_ball(sub, params.soft_dilate)) if fast else \
                (lambda sub=sub: _edt(~sub, spacing))
            t["distances"] += timed(lambda sub=sub, reach=reach: (reach(), _edt(~sub, spacing)))[0]
    return t


def per_lesion_by_crop(host, params_list, bank, brain, edges=(1_000, 10_000)) -> list[tuple[str, int, float]]:
    """Mean per-lesion transform time (ms) by bank crop size: each insertion replayed alone, best of 3."""
    rows: dict[int, list[float]] = {}
    for p in params_list:
        for ins in p.insertions:
            one = dataclasses.replace(p, insertions=(ins,))
            best = np.inf
            for _ in range(3):
                tm: dict[str, float] = {}
                lesionmix(host, one, bank, brain_mask=brain, timings=tm, check_load=False)
                best = min(best, tm["transform"])
            size = bank.lesion(ins.case_id, ins.lesion_index).mask.size
            rows.setdefault(int(np.searchsorted(edges, size, side="right")), []).append(best)
    names = [f"<= {edges[0]:,}"] + [f"{a:,}-{b:,}" for a, b in zip(edges[:-1], edges[1:], strict=True)] + \
        [f"> {edges[-1]:,}"]
    return [(names[k], len(v), float(np.mean(v)) * 1e3) for k, v in sorted(rows.items())]


def bench(title, cases, brains, host_id, inpaint_id, target, n_samples):
    print(f"\n== {title}: {cases[0].shape}, voxel {cases[0].spacing} mm, {len(cases)} cases in the bank")
    host = next(c for c in cases if c.case_id == host_id)
    brain = brains[host_id]

    # Baseline: one full-volume label + one full-volume blend.
    t_label, _ = timed(lambda: ndi.label(host.label != 0, structure=np.ones((3, 3, 3))), 3)
    s_full = np.zeros(host.shape, np.float32)
    s_full[tuple(n // 2 for n in host.shape)] = 1
    paste = host.image[:, ::-1].copy()
    t_blend, _ = timed(lambda: s_full[None] * paste + (1 - s_full[None]) * host.image, 3)
    base = t_label + t_blend
    print(f"baseline: full-volume ndimage.label {t_label * 1e3:.0f} ms + full-volume blend {t_blend * 1e3:.0f} ms "
          f"= {base * 1e3:.0f} ms")

    t_bank, bank = timed(lambda: LesionBank(cases=cases))
    n_les = len(bank.all_lesions())
    union = np.zeros(host.shape, bool)
    for b in brains.values():
        union |= b
    t_map, lmap = timed(lambda: likelihood_map(cases, brain_mask=union))
    t_restrict, _ = timed(lambda: lmap.cdf(brain))  # first time for this brain mask
    rng = np.random.default_rng(0)
    t_pos, _ = timed(lambda: sample_positions(rng, lmap, 1, mask=brain), 3)  # cached
    print(f"setup (once per dataset): lesion bank {t_bank:.2f} s ({n_les} lesions), likelihood map {t_map:.2f} s")
    print(f"likelihood sampling: CDF inside a new host brain mask {t_restrict * 1e3:.0f} ms (once per host), "
          f"then one position draw {t_pos * 1e3:.1f} ms (cache hit, mask hashed)")

    tot = {"sample": 0.0, "apply": 0.0, "transform": 0.0, "soft mask": 0.0, "blend": 0.0}
    floor = {"fields": 0.0, "noise crops": 0.0, "distances": 0.0}
    drawn = []
    n_ins = 0
    for i in range(n_samples):
        t_s, p = timed(lambda i=i: sample_lesionmix(sample_rng(0, i), host, bank, lmap, target_load_ml=target,
                                                     mode="populate", brain_mask=brain, on_unreachable="ignore"))
        t_a, syn = timed(lambda p=p: lesionmix(host, p, bank, brain_mask=brain))
        lesionmix(host, p, bank, brain_mask=brain, timings=tot)  # the same loop, its steps timed
        for k, v in exact_floor(p, bank, host.spacing).items():
            floor[k] += v
        drawn.append(p)
        tot["sample"] += t_s
        tot["apply"] += t_a
        n_ins += len(p.insertions)
        print(f"  sample {i}: {p.report()}; draw {t_s:.2f} s, apply {t_a:.2f} s")
    per = {k: v / n_samples for k, v in tot.items()}
    per_sample = per["sample"] + per["apply"]
    ins = n_ins / n_samples
    print(f"populate per sample ({ins:.1f} lesions pasted on average): {per_sample:.2f} s = draw "
          f"{per['sample']:.2f} s + apply {per['apply']:.2f} s")
    print(f"  apply breakdown: per-lesion transforms {per['transform']:.2f} s, soft masks {per['soft mask']:.2f} s, "
          f"blend {per['blend']:.3f} s; per pasted lesion {per['apply'] / max(ins, 1) * 1e3:.1f} ms")
    print(f"  ratio to baseline: one sample = {per_sample / base:.1f} x (label + blend), one pasted lesion = "
          f"{per_sample / max(ins, 1) / base:.2f} x; blending on lesion crops {per['blend'] * 1e3:.0f} ms vs "
          f"{ins:.0f} full-volume blends {ins * t_blend * 1e3:.0f} ms = {ins * t_blend / max(per['blend'], 1e-9):.0f}x less")

    per_ins = {k: per[k] / max(ins, 1) * 1e3 for k in ("transform", "soft mask", "blend")}
    draw_ms = per["sample"] / max(ins, 1) * 1e3
    ratio = per_sample / base
    print(f"  per pasted lesion: transforms {per_ins['transform']:.2f} ms (bar 1 ms: "
          f"{'met' if per_ins['transform'] <= 1.0 else 'NOT met'}), soft mask {per_ins['soft mask']:.2f} ms, "
          f"blend {per_ins['blend']:.2f} ms, its share of the draw {draw_ms:.2f} ms")
    print(f"  BAR populate <= 2.0 x baseline: {ratio:.2f} x -> {'met' if ratio <= 2.0 else 'NOT met'}")
    fl = {k: v / n_samples for k, v in floor.items()}
    print(f"  floor of any byte-identical populate (library calls only, per sample): elastic fields "
          f"{fl['fields'] * 1e3:.0f} ms + whole-crop resampling for noise sd {fl['noise crops'] * 1e3:.0f} ms + "
          f"soft-mask distances {fl['distances'] * 1e3:.0f} ms = {sum(fl.values()) * 1e3:.0f} ms = "
          f"{sum(fl.values()) / base:.2f} x baseline; ours {ratio:.2f} x")
    rows = per_lesion_by_crop(host, drawn, bank, brain)
    print("  per-lesion transforms by bank crop size (voxels; each insertion alone, best of 3): " +
          "; ".join(f"{name}: {ms:.2f} ms (n={n})" for name, n, ms in rows))

    inp = next(c for c in cases if c.case_id == inpaint_id)
    load = lesion_load_ml(inp.label, inp.spacing)
    t_si, pi = timed(lambda: sample_lesionmix(sample_rng(0, 99), inp, bank, None, target_load_ml=load / 2,
                                              mode="inpaint", on_unreachable="ignore"))
    t_ai, _ = timed(lambda: lesionmix(inp, pi, bank))
    _, region = inpaint_region(inp.label, pi.removals, pi.connectivity, pi.inpaint_dilate)
    t_tel, _ = timed(lambda: inpaint_telea(inp.image, region, pi.inpaint_radius, pi.inpaint_axes))
    t_tel1, _ = timed(lambda: inpaint_telea(inp.image, region, pi.inpaint_radius, (2,)))
    print(f"inpaint per sample ({pi.report()}): {t_si + t_ai:.2f} s = draw {t_si:.2f} s + apply {t_ai:.2f} s, of "
          f"which Telea {t_tel:.2f} s for {int(region.sum())} voxels (one axial pass only: {t_tel1:.2f} s); "
          f"ratio to baseline {(t_si + t_ai) / base:.1f} x")


def main(quick: bool = False) -> None:
    print(f"LesionMix speed, {os.cpu_count()} CPU core(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    ds = sample_dataset()
    ms, stroke = subjects_of_kind("ms"), subjects_of_kind("stroke")
    ids = ms + stroke
    cases = [load_2mm(cid) for cid in ids]
    brains = {cid: ds[cid].load_brain_mask() for cid in ids}
    host_id = min(ms, key=lambda c: np.count_nonzero(next(x for x in cases if x.case_id == c).label))
    inpaint_id = max(ms, key=lambda c: np.count_nonzero(next(x for x in cases if x.case_id == c).label))
    bench("2 mm sample data", cases, brains, host_id, inpaint_id, target=30.0, n_samples=2 if quick else 5)
    sub = ms[:3] + stroke[:2] if quick else ms[:4] + stroke[:2]
    for extra in (host_id, inpaint_id):
        if extra not in sub:
            sub.append(extra)
    cases1 = [load_1mm(cid) for cid in sub]
    for c, cid in zip(cases1, sub, strict=True):
        c.case_id = cid
    brains1 = {cid: load_1mm_brain_mask(cid) for cid in sub}
    bench("1 mm 197x233x189", cases1, brains1, host_id, inpaint_id, target=30.0, n_samples=1 if quick else 3)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
