"""Regenerate the shipped synthetic sample subjects (FLAIR-like, MS-like and stroke-like lesions).

Run from the repository root with an interpreter that has nilearn (a build-time
dependency only; the package never imports nilearn)::

    python3 -m venv /tmp/sdvenv
    /tmp/sdvenv/bin/pip install nilearn nibabel numpy scipy
    /tmp/sdvenv/bin/python sample_data/build_sample_data.py

Anatomy comes from the MNI ICBM152 2009 template and its grey/white-matter
probability maps bundled in nilearn's wheel, resampled by nilearn to 2 mm
(99 x 117 x 95 voxels, RAS). Every random choice flows from one seeded
``numpy.random.Generator`` per subject (``SeedSequence(SEED, spawn_key=(i,))``,
the same rule as ``napari_lesionmix.random.sample_rng``), and the files are
gzipped with ``mtime=0``, so a rerun with the same library versions writes
byte-identical files. See README.md in this folder for the model and its
parameters.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

SEED = 20261122
OUT = Path(__file__).resolve().parent
# Subject kinds, in order sub-01 ... sub-10 (6 MS-like, 4 stroke-like).
KINDS = ("ms", "ms", "stroke", "ms", "stroke", "ms", "ms", "stroke", "ms", "stroke")
VOXEL_ML = 8e-3  # 2 mm isotropic voxel = 8 mm^3
STRUCT26 = np.ones((3, 3, 3), bool)

# Acceptance ranges (the generator redraws a subject's lesions until they hold).
MS_COMPONENTS = (15, 150)
MS_LOAD_ML = (0.3, 50.0)
STROKE_COMPONENTS = (1, 3)
STROKE_LOAD_ML = (5.0, 150.0)

# Stroke territories in MNI mm for the RIGHT hemisphere (x is mirrored for the left):
# a deep (subcortical) anchor and a cortical anchor; the infarct is a chain of
# ellipsoids between them, cut to the hemisphere and to brain tissue.
TERRITORIES = {
    "MCA": {"deep": (26.0, 2.0, 6.0), "cortical": (54.0, -12.0, 16.0), "p": 0.6},
    "PCA": {"deep": (16.0, -30.0, 2.0), "cortical": (24.0, -80.0, 6.0), "p": 0.2},
    "ACA": {"deep": (10.0, 16.0, 26.0), "cortical": (8.0, 24.0, 50.0), "p": 0.2},
}


# --------------------------------------------------------------------------- template
def load_template():
    """Template T1 (unused for contrast), GM, WM and brain mask on the 2 mm MNI grid."""
    from nilearn import datasets  # build-time only

    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    mask = datasets.load_mni152_brain_mask(resolution=2)
    affine = np.asarray(gm.affine, dtype=np.float64)
    for im in (wm, mask):
        if im.shape != gm.shape or not np.allclose(im.affine, affine):
            raise SystemExit("nilearn returned templates on different grids")
    g = np.clip(np.asarray(gm.dataobj, dtype=np.float32), 0, 1)
    w = np.clip(np.asarray(wm.dataobj, dtype=np.float32), 0, 1)
    m = (np.asarray(mask.dataobj) > 0).astype(np.float32)
    return g, w, m, affine


# --------------------------------------------------------------------------- random fields
def smooth_field(rng: np.random.Generator, shape, coarse, std=1.0) -> np.ndarray:
    """A smooth random field: Gaussian values on a coarse lattice, cubic-spline upsampled."""
    c = rng.standard_normal(coarse) * std
    axes = [np.linspace(0, n - 1, s, dtype=np.float32) for n, s in zip(coarse, shape, strict=True)]
    coords = np.meshgrid(*axes, indexing="ij")
    return ndi.map_coordinates(c, coords, order=3, mode="nearest").astype(np.float32)


def deform(rng, arrays, shape, amplitude_vox):
    """Warp ``arrays`` by one smooth displacement plus a small global scaling (same grid)."""
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    centre = np.array([(n - 1) / 2 for n in shape], dtype=np.float32)
    scale = rng.uniform(0.95, 1.05, size=3).astype(np.float32)
    coords = []
    for ax in range(3):
        disp = smooth_field(rng, shape, (7, 8, 7), amplitude_vox)
        coords.append(centre[ax] + (grid[ax] - centre[ax]) / scale[ax] + disp)
    out = [ndi.map_coordinates(a, coords, order=1, mode="constant", cval=0.0) for a in arrays]
    return out, scale


# --------------------------------------------------------------------------- lesions
def ellipsoid_q(shape, centre, radii, rotation, box):
    """Local box slices and normalised ellipsoid radius q (q < 1 inside) around ``centre``."""
    lo = np.maximum(np.floor(centre - box).astype(int), 0)
    hi = np.minimum(np.ceil(centre + box).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, None
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    pts = np.stack(
        np.meshgrid(
            *[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi, strict=True)], indexing="ij"
        ),
        -1,
    )
    local = (pts - centre) @ rotation  # coordinates in the ellipsoid's frame
    q = np.sqrt(np.sum((local / radii) ** 2, axis=-1))
    return sl, q


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def rotation_with_axis(rng, axis) -> np.ndarray:
    """Rotation whose first column is ``axis`` (the ellipsoid's long axis)."""
    a = axis / (np.linalg.norm(axis) + 1e-6)
    m = np.column_stack([a, rng.standard_normal(3), rng.standard_normal(3)])
    q, r = np.linalg.qr(m)
    q = q * np.sign(np.diag(r))
    return q.astype(np.float32)


def components(label):
    lab, n = ndi.label(label, structure=STRUCT26)
    return lab, n


def ms_lesions(rng, pw, pc, brain, vent_dist_mm, vent_grad, blob):
    """Soft MS-like lesion map in [0, 1] (periventricular, ovoid, partly confluent)."""
    shape = pw.shape
    cand = brain & (pw > 0.5)
    idx = np.flatnonzero(cand)
    d = vent_dist_mm.ravel()[idx]
    deep = pw.ravel()[idx] > 0.8
    # 75 % of lesions drawn near the ventricles (Dawson-finger-like, within ~1 cm),
    # 25 % anywhere in deep white matter (WM probability > 0.8).
    w_peri = np.exp(-d / 5.0)
    w_peri /= w_peri.sum()
    w_any = deep / deep.sum()
    n = int(rng.integers(25, 110))
    r_med = rng.uniform(1.9, 2.8)  # subject's median equivalent radius in mm
    soft = np.zeros(shape, np.float32)
    for _ in range(n):
        peri = rng.random() < 0.75
        c = np.array(
            np.unravel_index(rng.choice(idx, p=w_peri if peri else w_any), shape), np.float32
        )
        c += rng.uniform(-0.5, 0.5, 3).astype(np.float32)
        r_mm = float(np.clip(rng.lognormal(np.log(r_med), 0.45), 1.6, 9.0))
        if peri:
            # long axis perpendicular to the ventricle wall (along the distance gradient)
            g = vent_grad[(slice(None),) + tuple(np.round(c).astype(int))]
            rot = rotation_with_axis(rng, g if np.linalg.norm(g) > 1e-3 else rng.standard_normal(3))
            ratios = np.array([rng.uniform(1.3, 2.0), rng.uniform(0.7, 1.0), rng.uniform(0.6, 0.9)])
        else:
            rot = random_rotation(rng)
            ratios = rng.uniform(0.7, 1.3, 3)
        radii = (r_mm / 2.0 * ratios / np.cbrt(np.prod(ratios))).astype(np.float32)  # voxels
        sl, q = ellipsoid_q(shape, c, radii, rot, box=radii.max() * 1.6 + 2)
        if sl is None:
            continue
        q = q * (1.0 + 0.25 * blob[sl])  # irregular, blobby outline
        s = expit((1.0 - q) / 0.12)
        soft[sl] = np.maximum(soft[sl], s.astype(np.float32))
    # keep lesions in white matter (periventricular WM borders the ventricles)
    soft *= np.clip((pw - 0.05) / 0.25, 0, 1)
    soft[~brain] = 0
    return soft, {"n_seeds": n, "median_radius_mm": round(float(r_med), 3)}


def stroke_lesion(rng, pg, pw, brain, affine, hemisphere, blob):
    """Soft stroke-like lesion: a territory-shaped chain of ellipsoids plus 0-2 satellites."""
    shape = pg.shape
    inv = np.linalg.inv(affine)
    sign = 1.0 if hemisphere == "right" else -1.0
    names = list(TERRITORIES)
    probs = np.array([TERRITORIES[k]["p"] for k in names])
    territory = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    t = TERRITORIES[territory]

    def vox(p_mm):
        p = np.array([sign * p_mm[0], p_mm[1], p_mm[2], 1.0])
        return (inv @ p)[:3].astype(np.float32)

    deep, cort = vox(t["deep"]), vox(t["cortical"])
    size = rng.uniform(0.7, 1.4)  # overall infarct size factor
    n_blobs = int(rng.integers(2, 5))
    soft = np.zeros(shape, np.float32)
    for k in range(n_blobs):
        f = rng.uniform(0.0, 1.0) if k else rng.uniform(0.4, 0.8)
        c = deep + f * (cort - deep) + rng.normal(0, 2.5, 3).astype(np.float32)
        r_mm = size * rng.uniform(11.0, 20.0)
        rot = random_rotation(rng)
        ratios = rng.uniform(0.7, 1.3, 3)
        radii = (r_mm / 2.0 * ratios).astype(np.float32)
        sl, q = ellipsoid_q(shape, c, radii, rot, box=radii.max() * 1.5 + 2)
        if sl is None:
            continue
        q = q * (1.0 + 0.3 * blob[sl])
        soft[sl] = np.maximum(soft[sl], expit((1.0 - q) / 0.1))
    n_sat = int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2]))
    for _ in range(n_sat):  # small embolic satellites in the same territory
        f = rng.uniform(-0.2, 1.2)
        c = deep + f * (cort - deep) + rng.normal(0, 7.0, 3).astype(np.float32)
        radii = np.full(3, rng.uniform(2.0, 3.5), np.float32)
        sl, q = ellipsoid_q(shape, c, radii, random_rotation(rng), box=radii.max() * 1.6 + 2)
        if sl is None:
            continue
        q = q * (1.0 + 0.3 * blob[sl])
        soft[sl] = np.maximum(soft[sl], expit((1.0 - q) / 0.1))
    # tissue only (spare CSF / ventricles) and strictly one hemisphere (>= 4 mm off the midline)
    x_mm = affine[0, 0] * np.arange(shape[0]) + affine[0, 3]
    side = (sign * x_mm >= 4.0).astype(np.float32)[:, None, None]
    soft *= np.clip((pg + pw - 0.3) / 0.3, 0, 1) * side
    soft[~brain] = 0
    return soft, {
        "territory": territory,
        "n_blobs": n_blobs,
        "n_satellites": n_sat,
        "size_factor": round(float(size), 4),
    }


# --------------------------------------------------------------------------- I/O
def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, descrip: str) -> str:
    """Write a NIfTI-1 gz byte-reproducibly (gzip mtime 0, no file name) and atomically."""
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    hdr.set_xyzt_units("mm")
    hdr.set_sform(affine, code=4)  # MNI_152
    hdr.set_qform(affine, code=4)
    hdr["descrip"] = descrip.encode()[:79]
    hdr.set_slope_inter(1.0, 0.0)
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path.name


# --------------------------------------------------------------------------- subject
def build_subject(i: int, kind: str, g0, w0, m0, affine):
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(SEED, spawn_key=(i,))))
    shape = g0.shape
    amp = 0.9  # displacement std in voxels (1.8 mm), peaks of ~3-4 voxels
    (pg, pw, pm), scale = deform(rng, [g0, w0, m0], shape, amp)
    brain = pm > 0.5
    brain = ndi.binary_fill_holes(brain)
    lab, n = components(brain)
    if n > 1:
        brain = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    pg = np.where(brain, pg, 0).astype(np.float32)
    pw = np.where(brain, pw, 0).astype(np.float32)
    tot = pg + pw
    over = tot > 1
    pg[over] /= tot[over]
    pw[over] /= tot[over]
    pc = np.where(brain, 1.0 - pg - pw, 0).astype(np.float32)

    # ventricles: CSF well inside the brain; distance to them drives MS placement
    depth = ndi.distance_transform_edt(brain) * 2.0
    vent = brain & (pc > 0.6) & (depth > 14.0)
    lab, n = components(vent)
    if n:
        sizes = np.bincount(lab.ravel())[1:]
        vent = np.isin(lab, 1 + np.flatnonzero(sizes >= 30))
    vent_dist = ndi.distance_transform_edt(~vent) * 2.0
    vent_grad = np.stack(np.gradient(ndi.gaussian_filter(vent_dist, 1.0))).astype(np.float32)

    blob = smooth_field(rng, shape, (25, 30, 24), 1.0)
    blob /= max(float(blob.std()), 1e-6)

    # tissue contrast (FLAIR: GM > WM > CSF, CSF suppressed), relative to WM = 1
    mu_w = 1.0
    mu_g = rng.uniform(1.20, 1.35)
    mu_c = rng.uniform(0.10, 0.20)
    tissue = pg * mu_g + pw * mu_w + pc * mu_c
    texture = 1.0 + 0.03 * smooth_field(rng, shape, (40, 47, 38), 1.0)
    tissue *= texture

    params: dict = {
        "deformation_std_vox": amp,
        "global_scale": [round(float(s), 4) for s in scale],
        "gm_wm_ratio": round(float(mu_g), 4),
        "csf_wm_ratio": round(float(mu_c), 4),
    }
    for attempt in range(50):  # noqa: B007 (attempt is recorded after the loop)
        if kind == "ms":
            soft, lp = ms_lesions(rng, pw, pc, brain, vent_dist, vent_grad, blob)
            ratio = rng.uniform(1.42, 1.55)
            ncr, lr = MS_COMPONENTS, MS_LOAD_ML
        else:
            hemisphere = "left" if rng.random() < 0.5 else "right"
            soft, lp = stroke_lesion(rng, pg, pw, brain, affine, hemisphere, blob)
            lp["hemisphere"] = hemisphere
            ratio = rng.uniform(1.45, 1.75)
            ncr, lr = STROKE_COMPONENTS, STROKE_LOAD_ML
        label = soft > 0.5
        lab, n = components(label)
        if n:
            sizes = np.bincount(lab.ravel())[1:]
            if kind == "ms":
                # drop specks below 2 voxels: they read as noise, not lesions
                keep = np.flatnonzero(sizes >= 2)
            else:
                # the tissue cut can split off slivers: keep the infarct and its
                # drawn satellites (the largest pieces of >= 10 voxels)
                order = np.argsort(-sizes, kind="stable")[: 1 + lp["n_satellites"]]
                keep = order[sizes[order] >= 10]
            label = np.isin(lab, 1 + keep)
            soft = np.where(ndi.binary_dilation(label, STRUCT26, iterations=2), soft, 0)
        _, n = components(label)
        load = float(label.sum()) * VOXEL_ML
        if ncr[0] <= n <= ncr[1] and lr[0] <= load <= lr[1]:
            break
    else:
        raise SystemExit(f"sub-{i:02d}: no acceptable {kind} lesion pattern in 50 draws")
    params.update(lp)
    params["lesion_wm_ratio"] = round(float(ratio), 4)
    params["lesion_draws"] = attempt + 1

    # lesion intensity: soft blend toward ratio * WM with a little texture of its own
    # (weight saturates at soft >= 0.7 so that labelled voxels carry most of the contrast;
    # the 0.2-0.5 fringe outside the label keeps the edge soft)
    les_tex = 1.0 + 0.05 * blob
    wl = np.clip((soft - 0.2) / 0.5, 0.0, 1.0)
    clean = tissue * (1.0 - wl) + wl * ratio * mu_w * les_tex

    # smooth multiplicative bias field (about +-10 %), global gain, Rician noise
    bias_std = rng.uniform(0.05, 0.09)
    bias = np.exp(smooth_field(rng, shape, (4, 4, 4), bias_std))
    gain = rng.uniform(200.0, 500.0)
    snr = rng.uniform(25.0, 40.0)  # WM signal / noise sigma
    sigma = gain / snr
    sig = clean * bias * gain
    n1 = rng.standard_normal(shape).astype(np.float32) * sigma
    n2 = rng.standard_normal(shape).astype(np.float32) * sigma
    img = np.sqrt((sig + n1) ** 2 + n2**2)
    img = np.where(brain, np.clip(np.rint(img), 0, 32767), 0).astype(np.int16)
    label = label & brain
    params.update(
        {
            "bias_log_std": round(float(bias_std), 4),
            "gain": round(float(gain), 3),
            "snr": round(float(snr), 3),
        }
    )

    _, n_comp = components(label)
    wm_core = brain & (pw > 0.9) & ~ndi.binary_dilation(label, STRUCT26, iterations=2)
    wm_int = float(np.median(img[wm_core]))
    les_int = float(np.median(img[label]))
    sid = f"sub-{i:02d}"
    save_nifti(img, affine, OUT / f"{sid}.nii.gz", f"synthetic FLAIR-like {kind} {sid}")
    save_nifti(
        label.astype(np.uint8), affine, OUT / f"{sid}_seg.nii.gz", f"synthetic lesion label {sid}"
    )
    save_nifti(brain.astype(np.uint8), affine, OUT / f"{sid}_brainmask.nii.gz", f"brain mask {sid}")
    rec = {
        "kind": kind,
        "lesion_load_ml": round(float(label.sum()) * VOXEL_ML, 3),
        "n_components": int(n_comp),
    }
    if kind == "stroke":
        rec["hemisphere"] = params["hemisphere"]
        rec["territory"] = params["territory"]
    rec.update(
        {
            "wm_median_intensity": round(wm_int, 1),
            "lesion_median_intensity": round(les_int, 1),
            "measured_lesion_wm_ratio": round(les_int / wm_int, 3),
            "brain_volume_ml": round(float(brain.sum()) * VOXEL_ML, 1),
            "seed": SEED,
            "spawn_key": [i],
            "params": params,
        }
    )
    return sid, rec


def main() -> int:
    g0, w0, m0, affine = load_template()
    subjects = {}
    for i, kind in enumerate(KINDS, start=1):
        sid, rec = build_subject(i, kind, g0, w0, m0, affine)
        subjects[sid] = rec
        extra = (
            f" {rec.get('hemisphere', ''):5s} {rec.get('territory', '')}"
            if kind == "stroke"
            else ""
        )
        print(
            f"{sid} {kind:6s} load={rec['lesion_load_ml']:7.2f} mL comps={rec['n_components']:3d} "
            f"ratio={rec['measured_lesion_wm_ratio']:.2f}{extra}"
        )
    text = json.dumps(subjects, indent=1, sort_keys=True) + "\n"
    tmp = OUT / ".subjects.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, OUT / "subjects.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
