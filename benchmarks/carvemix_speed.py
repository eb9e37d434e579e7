"""CarveMix speed on 1 mm 197x233x189 volumes: ours vs the authors' two full-volume EDTs.

For each donor (MS-like and stroke-like sample subjects upsampled to 1 mm) and
one shared lambda, times in the same run:

(a) reference: D from two full-volume ``scipy.ndimage.distance_transform_edt``
    calls (the authors' code), threshold, mix (Eqs. 1-2);
(b) ours: :class:`CarveField` (exact EDT on the lesion box, ``edt`` package),
    threshold, mix;
(c) a lambda change with the precomputed field: threshold only, and threshold + mix.

Then, on real-size 182x218x182 MS-like cases (confluent lesions of 5-50 mL
beside many small ones, :func:`_volumes.ms_like_1mm`), one sample through the
*public* API with no cached field, ``carvemix(host, donor, params)``, against
(a) and against the floor: the full-volume copy of the host's image and label
that any mix must make.

Prints the speed-ups and whether the carved masks are identical.
Run: ``.venv/bin/python benchmarks/carvemix_speed.py``
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).parent))
from _volumes import load_1mm, ms_like_1mm, subjects_of_kind  # noqa: E402

from napari_lesionmix.augment.carvemix import (  # noqa: E402
    CarveField,
    CarveMixParams,
    carvemix,
    mix_with_roi,
    sample_lambda,
)
from napari_lesionmix.augment.distance import signed_distance_full  # noqa: E402


def best_of(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def bench_donor(host, donor_id: str, rng: np.random.Generator, repeat: int) -> float:
    """Print one donor's timings; return the speed-up of ours over the reference."""
    donor = load_1mm(donor_id)
    mask = donor.label != 0
    field0 = CarveField(donor.label, donor.spacing)
    lam = sample_lambda(rng, field0.d_min)

    def reference():
        d = signed_distance_full(mask, donor.spacing)
        roi = d <= lam
        return roi, mix_with_roi(host.image, host.label, donor.image, donor.label, roi)

    def ours():
        field = CarveField(donor.label, donor.spacing)
        roi = field.roi(lam)
        return roi, mix_with_roi(host.image, host.label, donor.image, donor.label, roi, field.box)

    t_ref, _, (roi_ref, _) = best_of(reference, repeat)
    t_ours, _, (roi_ours, _) = best_of(ours, repeat)
    frac = np.prod([s.stop - s.start for s in field0.box]) / mask.size
    same = bool((roi_ref == roi_ours).all())
    print(
        f"{donor_id:>8} ({mask.sum() / 1000:.1f} mL, |Dmin| {abs(field0.d_min):.1f} mm, box {frac:.0%} of volume), "
        f"lambda {lam:+.2f} mm: full-volume EDTs {t_ref * 1000:7.0f} ms | ours {t_ours * 1000:6.0f} ms | "
        f"speed-up {t_ref / t_ours:5.1f}x | masks identical: {same}"
    )
    lams = iter(np.tile(rng.uniform(*field0.lambda_range, 20), 10))
    _, t_thr, _ = best_of(lambda: field0.roi(next(lams)), 20)
    _, t_mix, _ = best_of(
        lambda: mix_with_roi(host.image, host.label, donor.image, donor.label, field0.roi(next(lams)), field0.box),
        20,
    )
    print(f"{'':>8} lambda change with precomputed field: ROI {t_thr * 1000:.1f} ms, ROI + full-volume mix "
          f"{t_mix * 1000:.1f} ms (median of 20; goal < 50 ms)")
    return t_ref / t_ours


def bench_public_api(repeat: int) -> list[float]:
    """One sample through ``carvemix(host, donor, params)`` (no cached field) on real-size MS-like cases."""
    host = ms_like_1mm(10, 12.0, 40)
    ratios = []
    for seed, load, n_small in ((0, 5.0, 20), (1, 20.0, 60), (2, 45.0, 95)):
        donor = ms_like_1mm(seed, load, n_small)
        mask = donor.label != 0
        d_min = CarveField(donor.label, donor.spacing).d_min
        lam = 0.5 * abs(d_min)  # a positive lambda: the ROI reaches furthest, the box is largest
        params = CarveMixParams(host.case_id, donor.case_id, lam)

        def reference(mask=mask, donor=donor, lam=lam):
            roi = signed_distance_full(mask, donor.spacing) <= lam
            return roi, mix_with_roi(host.image, host.label, donor.image, donor.label, roi)

        t_ref, _, (roi_ref, _) = best_of(reference, repeat)
        t_api, _, syn = best_of(lambda donor=donor, params=params: carvemix(host, donor, params), repeat)
        t_floor, _, _ = best_of(lambda: (host.image.copy(), host.label.copy()), repeat)
        same = bool((roi_ref == syn.mask).all())
        n_comp = int(ndi.label(mask, structure=np.ones((3, 3, 3)))[1])
        print(f"  {donor.case_id} ({mask.sum() / 1000:5.1f} mL, {n_comp:3d} lesions), lambda {lam:+.2f} mm: "
              f"two full EDTs + mix {t_ref * 1000:6.0f} ms | carvemix() {t_api * 1000:5.0f} ms | "
              f"speed-up {t_ref / t_api:5.1f}x | floor (host copy) {t_floor * 1000:4.0f} ms | identical: {same}")
        ratios.append(t_ref / t_api)
    return ratios


def main(repeat: int = 3) -> None:
    print(f"CarveMix on 1 mm volumes, {os.cpu_count()} CPU core(s); best of {repeat}")
    ms, stroke = subjects_of_kind("ms"), subjects_of_kind("stroke")
    host = load_1mm(ms[-1])
    rng = np.random.default_rng(0)
    ratios = [bench_donor(host, donor_id, rng, repeat) for donor_id in ms[:2] + stroke[:2]]
    print(f"speed-up over donors: min {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x (goal >= 20x)")
    print("Public API, no cached field, 182x218x182 MS-like cases:")
    api = bench_public_api(repeat)
    print(f"public-API speed-up: min {min(api):.1f}x, median {statistics.median(api):.1f}x (goal >= 30x)")


if __name__ == "__main__":
    main()
