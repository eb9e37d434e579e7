"""Where the real scans are (``../shared/realdata``, read at run time, never copied) and how tests lay them out."""

from __future__ import annotations

from pathlib import Path

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
BRATS = sorted((REALDATA / "brats2013").glob("brats_2013_pat*"))
ABSENT = f"the real scans are not here ({REALDATA} is absent)"


def brats_with_masks(root: Path, cases=None) -> Path:
    """BraTS cases as ``CASE.nii.gz``, ``CASE_seg.nii.gz`` and ``CASE_brainmask.nii.gz`` links in ``root``.

    The masks are BraTS's own float64 files (foreground 0.99999997); the case ids are ``pat000N``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for case in BRATS[:3] if cases is None else cases:
        cid = case.name.split("_")[2]
        for src, dst in (("Flair_subtrMeanDivStd", cid), ("OTMultiClass", f"{cid}_seg"),
                         ("brainmask", f"{cid}_brainmask")):
            (root / f"{dst}.nii.gz").symlink_to(case / f"{src}.nii.gz")
    return root
