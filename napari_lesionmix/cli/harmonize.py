"""``lesionmix harmonize``: harmonize the lesions of a synthetic image inside its mask."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "harmonize",
        help="harmonize a synthetic image inside its mask (ARHNet, histogram matching or none)",
        description="Writes DIR/image_0000.nii.gz (one per channel, the input's header) and "
        "DIR/params.json. Only voxels inside the mask change.",
    )
    p.add_argument("--image", action="append", required=True, metavar="syn.nii.gz",
                   help="synthetic image; repeat once per channel")
    p.add_argument("--mask", required=True, metavar="roi.nii.gz", help="mixing mask (binary or soft in [0, 1])")
    p.add_argument("--label", default=None, metavar="seg.nii.gz",
                   help="synthetic label: ARHNet anchors the pasted lesions' level to the host's own lesions "
                   "(label outside the mask) and hm matches them to those; without it, or when the label has no "
                   "lesion inside or outside the mask (a warning says so), ARHNet infers the level itself and hm "
                   "falls back to hm-ring")
    p.add_argument("--model", default=None, metavar="model.pt",
                   help="ARHNet checkpoint (default: the one shipped, trained on the sample data)")
    p.add_argument("--method", default="arhnet", choices=("arhnet", "composite", "hm", "hm-ring"),
                   help="arhnet (default), composite (no change), hm (histogram matching of the pasted lesions to "
                   "the host's lesions, as the ARHNet paper) or hm-ring (to the tissue ring around each component)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (made whole or not at all)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (patches for ARHNet, components for hm)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import time
    import warnings
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    from napari_lesionmix import __version__
    from napari_lesionmix.cli._common import ProgressBar
    from napari_lesionmix.errors import LesionMixError
    from napari_lesionmix.harmonize import OutOfDomainWarning, load_harmonizer
    from napari_lesionmix.io.atomic import atomic_folder, check_output, write_json_atomic
    from napari_lesionmix.io.nifti import (
        check_affines,
        load_image,
        load_label,
        save_image,
        voxel_spacing,
    )
    from napari_lesionmix.io.synthetic import is_sample_file

    inputs = [*args.image, args.mask, args.label, args.model]
    check_output(args.out, inputs, args.overwrite, "Output folder")
    image, img = load_image(args.image)
    if not Path(args.mask).is_file():
        raise LesionMixError(f"Mask file '{args.mask}' does not exist.")
    try:
        mimg = nib.load(args.mask)
        mask = np.asarray(mimg.dataobj, dtype=np.float32)
    except Exception as exc:
        raise LesionMixError(f"Mask file '{args.mask}' is not a readable NIfTI file ({type(exc).__name__}).") from None
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if mask.shape != image.shape[1:]:
        raise LesionMixError(f"Mask '{args.mask}' has shape {mask.shape} but the image has {image.shape[1:]}.")
    lo, hi = float(np.min(mask)), float(np.max(mask))
    if not (0.0 <= lo and hi <= 1.0):
        raise LesionMixError(f"Mask '{args.mask}' holds values from {lo:g} to {hi:g}; a mixing mask is binary or "
                             "soft in [0, 1].")
    check_affines(img.affine, mimg.affine, os.fspath(args.image[0]), os.fspath(args.mask))
    if args.model is not None and args.method != "arhnet":
        raise LesionMixError(f"--model is for ARHNet; it cannot be combined with --method {args.method}.")
    label = None
    if args.label is not None:
        label, limg = load_label(args.label)
        if label.shape != image.shape[1:]:
            raise LesionMixError(f"Label '{args.label}' has shape {label.shape} but the image has {image.shape[1:]}.")
        check_affines(img.affine, limg.affine, os.fspath(args.image[0]), os.fspath(args.label))
        for line in label_warnings(label, mask, os.fspath(args.label)):
            print(f"harmonize: warning: {line}", file=sys.stderr)
    harmonizer = load_harmonizer(args.model if args.model is not None else args.method, device=args.device)
    if label is None and getattr(harmonizer, "anchor", "none") != "none":
        print("harmonize: note: without --label ARHNet cannot read the host's own lesions and infers the pasted "
              "lesions' level itself; pass the synthetic label to anchor it.", file=sys.stderr)
    t0 = time.perf_counter()
    unit = "patch" if harmonizer.method == "arhnet" else "step"
    with warnings.catch_warnings(record=True) as caught, ProgressBar("harmonize", unit, not args.no_progress) as bar:
        warnings.simplefilter("always", OutOfDomainWarning)
        out = harmonizer.harmonize(image, mask, progress=bar, label=label, spacing=voxel_spacing(img.affine))
    seconds = time.perf_counter() - t0
    for w in caught:
        if issubclass(w.category, OutOfDomainWarning):
            print(f"harmonize: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not np.all(np.isfinite(out)):
        source = f"checkpoint '{args.model}'" if args.model else f"method {args.method}"
        raise LesionMixError(f"The {source} gave NaN or infinite voxels (are its weights broken?); nothing was "
                             "written.")
    dtype = np.dtype(img.get_data_dtype())
    out_dir = Path(args.out)
    changed = int(np.count_nonzero(np.any(out != image, axis=0)))
    record = {
        "version": __version__,
        "inputs": {"image": [os.fspath(p) for p in args.image], "mask": os.fspath(args.mask),
                   "label": None if args.label is None else os.fspath(args.label)},
        "params": {**harmonizer.params(spacing=voxel_spacing(img.affine)), "mask_voxels": int(np.count_nonzero(mask > 0))},
    }
    with atomic_folder(out_dir, replaceable=is_sample_file) as tmp:
        for c, channel in enumerate(out):
            save_image(channel, tmp / f"image_{c:04d}.nii.gz", img.affine, img.header, dtype)
        write_json_atomic(record, tmp / "params.json")
    print(f"harmonize: {harmonizer.method}, {changed} voxel(s) changed in {seconds:.2f} s -> {out_dir}")
    return 0


def label_warnings(label, mask, name: str) -> list[str]:
    """What a ``--label`` that cannot anchor the paste does instead: one line per problem.

    The anchor reads the pasted lesions (label inside the mask) and the host's
    own (label outside it); a label of another subject, an empty one or one of
    several classes gives no error but anchors to the wrong voxels or to none.
    """
    import numpy as np

    values = np.unique(label)
    lines = []
    if not (values != 0).any():
        return [f"label '{name}' is empty: nothing is anchored (ARHNet infers the level itself, hm falls back "
                "to hm-ring)."]
    if not set(values.tolist()) <= {0, 1}:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        lines.append(f"label '{name}' is not binary (values {shown}); every non-zero value is taken as lesion.")
    lesion, inside = label != 0, np.asarray(mask) > 0
    if not (lesion & inside).any():
        lines.append(f"label '{name}' has no lesion inside the mask (is it this sample's label?): nothing pasted "
                     "is anchored and hm falls back to hm-ring.")
    elif not (lesion & ~inside).any():
        lines.append(f"label '{name}' has no lesion outside the mask, so no host lesion to take the level from: "
                     "ARHNet infers the level itself and hm falls back to hm-ring.")
    return lines
