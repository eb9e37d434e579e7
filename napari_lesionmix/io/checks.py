"""Checks of cases made in memory: what reading their files checks, for the faces that build them from arrays."""

from __future__ import annotations

import numpy as np

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.nifti import Case, as_label_array
from napari_lesionmix.io.position import format_position

#: The attribute under which :func:`check_case` remembers the arrays it passed (a case is checked once).
_CHECKED_ATTR = "_lesionmix_checked"


def check_case(case: Case, role: str = "Case") -> None:
    """Raise unless ``case`` is usable: what reading its files checks, for cases made in memory.

    The MONAI, TorchIO and PyTorch faces build cases from tensors, not files:
    this gives them the CLI's checks (a finite image of shape (C, I, J, K), a
    label of whole non-negative numbers on the image's grid). Each case is
    checked once per pair of arrays.

    Raises
    ------
    LesionMixError
        One sentence naming the case and the problem.
    """
    image, label = case.image, case.label
    done = getattr(case, _CHECKED_ATTR, None)
    if done is not None and done[0] is image and done[1] is label:
        return
    name = case.image_paths[0] if case.image_paths else case.case_id
    if not isinstance(image, np.ndarray) or image.ndim != 4:
        raise LesionMixError(f"{role} '{name}' has an image of shape {np.shape(image)}; expected (channels, I, J, K).")
    if image.dtype.kind == "f":
        bad = ~np.isfinite(image)
        if bad.any():
            first = tuple(int(v) for v in np.argwhere(bad)[0][1:])
            raise LesionMixError(f"{role} '{name}' has {int(bad.sum())} NaN or infinite image voxels "
                                 f"(first at {format_position(first, case.affine)}).")
    if label is not None:
        if np.shape(label) != image.shape[1:]:
            raise LesionMixError(f"{role} '{name}' has a label of shape {np.shape(label)} but an image of "
                                 f"shape {image.shape[1:]}; they must share a grid.")
        as_label_array(label, where=f"The label of {role.lower()} '{name}'")
    try:
        setattr(case, _CHECKED_ATTR, (image, label))
    except AttributeError:
        pass


def same_content(a: Case, b: Case) -> bool:
    """Whether two cases hold the same voxels (image and label): the same scan under two names.

    A strided sample of voxels tells nearly every pair apart in microseconds;
    only pairs equal there are compared whole.
    """
    if a.image.shape != b.image.shape or (a.label is None) != (b.label is None):
        return False
    if a.label is not None and a.label.shape != b.label.shape:
        return False
    step = 997  # prime: no alignment with rows or slices
    if not np.array_equal(a.image.reshape(-1)[::step], b.image.reshape(-1)[::step]):
        return False
    if not np.array_equal(a.image, b.image):
        return False
    return a.label is None or np.array_equal(a.label, b.label)
