"""Arguments and loading steps that several ``lesionmix`` commands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from napari_lesionmix.errors import LesionMixError


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (seeds and indices)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """Host and donor, each as files (``--host-image``/``--host-label``, images repeatable per
    channel) or as a case id (``--host``/``--donor``) of the command's ``--dataset``."""
    for role, letter in (("host", "H"), ("donor", "D")):
        one = p.add_mutually_exclusive_group(required=True)
        one.add_argument(f"--{role}", metavar="CASE_ID", help=f"{role} case of --dataset (its files and brain mask)")
        one.add_argument(f"--{role}-image", action="append", metavar=f"{letter}.nii.gz",
                         help=f"{role} image file; repeat once per channel"
                              + (" (H_0000, H_0001, ...)" if role == "host" else ", in the host's channel order"))
        p.add_argument(f"--{role}-label", metavar=f"{letter}L.nii.gz", help=f"{role} label (with --{role}-image)")


def load_side(args: argparse.Namespace, role: str, dataset):
    """``(case, brain mask)`` of ``--ROLE`` (a case of ``dataset``, with its brain mask if it has one) or of
    ``--ROLE-image``/``--ROLE-label`` (files; no brain mask)."""
    from napari_lesionmix.io.nifti import load_case

    case_id, images, label = (getattr(args, f"{role}{s}") for s in ("", "_image", "_label"))
    if case_id is not None:
        if dataset is None:
            raise LesionMixError(f"--{role} names a case of --dataset; give --dataset DIR too "
                                 f"(or the files, with --{role}-image and --{role}-label).")
        if label:
            raise LesionMixError(f"--{role}-label goes with --{role}-image, not --{role}.")
        rec = dataset[case_id]
        return rec.load(), rec.load_brain_mask()
    if not label:
        raise LesionMixError(f"--{role}-image needs --{role}-label (the {role}'s lesion label).")
    return load_case(images, label), None


def load_pair(args: argparse.Namespace, dataset=None):
    """Host and donor from :func:`add_pair_arguments`: ``(host, donor, host brain mask, donor brain mask)``.

    The two share a grid and the donor has a lesion; a brain mask is the
    dataset's (``None`` for a side given as files, or a dataset without masks).
    """
    from napari_lesionmix.io.nifti import check_same_grid

    host, host_brain = load_side(args, "host", dataset)
    donor, donor_brain = load_side(args, "donor", dataset)
    check_same_grid(host, donor)
    donor.require_lesion("Donor")
    return host, donor, host_brain, donor_brain


def pair_inputs(host, donor) -> dict:
    """The source files of a pair, for ``params.json``'s ``inputs``."""
    return {
        "host_image": list(host.image_paths), "host_label": host.label_path,
        "donor_image": list(donor.image_paths), "donor_label": donor.label_path,
    }


def read_params(path: str | os.PathLike, params_type):
    """Params saved in ``path`` (a ``params.json``), which must be of ``params_type``."""
    from napari_lesionmix.augment.params import params_from_json

    p = Path(path)
    if not p.exists():
        raise LesionMixError(f"Params file '{os.fspath(path)}' does not exist.")
    if not p.is_file():
        raise LesionMixError(f"Params file '{os.fspath(path)}' is a folder, not a params.json file.")
    try:
        params = params_from_json(p.read_text())
    except LesionMixError as exc:
        raise LesionMixError(f"Params file '{os.fspath(path)}': {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LesionMixError(f"Params file '{os.fspath(path)}' cannot be read ({exc}).") from None
    if not isinstance(params, params_type):
        raise LesionMixError(
            f"Params file '{os.fspath(path)}' holds {params.method} params, not {params_type.method}."
        )
    return params


def load_mask_on_grid(path: str | os.PathLike, case, what: str = "Brain mask") -> np.ndarray:
    """A non-empty binary mask from ``path`` that lies on ``case``'s grid (shape and affine)."""
    from napari_lesionmix.io.brain import load_brain_mask
    from napari_lesionmix.io.nifti import check_affines

    mask, img = load_brain_mask(path, what)
    name = os.fspath(path)
    if mask.shape != case.shape:
        raise LesionMixError(f"{what} '{name}' has shape {mask.shape} but the host has {case.shape}.")
    check_affines(case.affine, img.affine, case.image_paths[0] if case.image_paths else case.case_id, name)
    if not mask.any():
        raise LesionMixError(f"{what} '{name}' is empty.")
    return mask


class ProgressBar:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (nothing when ``enabled`` is false).

    Use as a context manager so the bar is closed however the work ends; ``write``
    prints a line above the bar (or plainly when there is none).
    """

    def __init__(self, desc: str, unit: str, enabled: bool = True):
        self.desc, self.unit, self.enabled, self.bar = desc, unit, enabled, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit=self.unit, desc=self.desc, file=sys.stderr)
        else:
            self.bar.update(done - self.bar.n)

    def write(self, line: str) -> None:
        (self.bar.write if self.bar is not None else print)(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
