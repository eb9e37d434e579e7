"""The studio's reload sequence that used to segfault, as a program (run in a child process by a test).

``python tests/widgets/crash_sequence.py WORKDIR``: opens the whole studio in a shown viewer,
loads the 2 mm sample pair, then a 1 mm pair from files, then a 1 mm pair from a scanned folder,
then raises the Provenance tab and changes the host. Each step waits until its sample is on
screen (the event loop runs, so napari paints between steps). Prints ``STEP name`` as it goes and
``DONE`` at the end; exits 0 only if every step finished, 1 on a timeout or an error notification.

A synchronous ``repaint()`` of a preview view inside napari's window used to paint the whole
window, vispy canvas included, while a layer of the old grid was being replaced: a segfault in
``glDrawArrays``. The test runs this in a subprocess so that such a crash fails it (a signal)
instead of killing pytest.

The 1 mm volumes are synthesized (small brains on a 1 mm grid, another grid than the sample's),
so a run takes seconds.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

#: A 1 mm grid other than the 2 mm sample's; small so the sequence stays fast.
SHAPE_1MM = (72, 84, 64)


def one_mm_case(folder: Path, name: str, seed: int) -> dict:
    """Write a brain-like 1 mm case with a few lesions as ``NAME.nii.gz`` + ``NAME_seg.nii.gz``."""
    rng = np.random.default_rng(seed)
    shape = SHAPE_1MM
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    c = np.array(shape) / 2
    brain = sum(((g - ci) / (0.42 * n)) ** 2 for g, ci, n in zip((zz, yy, xx), c, shape, strict=True)) <= 1
    image = ndi.gaussian_filter(rng.normal(300.0, 40.0, shape), 2).astype(np.float32) * brain
    label = np.zeros(shape, np.uint8)
    for _ in range(3):
        p = [rng.uniform(0.35 * n, 0.65 * n) for n in shape]
        r = rng.uniform(3.0, 6.0)
        label[sum((g - pi) ** 2 for g, pi in zip((zz, yy, xx), p, strict=True)) <= r * r] = 1
    image[label > 0] *= 1.6
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -c
    folder.mkdir(parents=True, exist_ok=True)
    img, seg = folder / f"{name}.nii.gz", folder / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), img)
    nib.save(nib.Nifti1Image(label, affine), seg)
    return {"image": img, "label": seg}


def main(workdir: str) -> int:
    import napari
    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QApplication

    from napari_lesionmix.widgets import studio
    from napari_lesionmix.widgets.state import get_session
    open_studio, studio_widget = studio.open_studio, studio.studio_widget

    root = Path(workdir)
    files = root / "files"
    pair = [one_mm_case(files, "fa", 1), one_mm_case(files, "fb", 2)]
    folder = root / "folder"
    for k in range(3):
        one_mm_case(folder, f"case{k}", 10 + k)

    viewer = napari.Viewer(show=True, title="crash sequence")
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    session = get_session(viewer)
    n_errors = len(notification_manager.records)

    def wait(cond, what: str, timeout: float = 120.0) -> None:
        t0 = time.perf_counter()
        while not cond():
            app.processEvents()
            time.sleep(0.005)
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{what} did not finish in {timeout:.0f} s")
        for _ in range(20):  # let napari paint the new layers
            app.processEvents()
            time.sleep(0.005)

    def shown(shape) -> bool:
        return (session.host is not None and session.host.shape == shape and session.synthetic is not None
                and session.synthetic.image.shape[1:] == shape and not session.busy)

    def step(name: str) -> None:
        print(f"STEP {name}", flush=True)

    step("sample pair")
    open_studio(viewer, load_sample=True)
    wait(lambda: session.synthetic is not None and not session.busy, "the sample pair")
    load = studio_widget(viewer, "Load")

    step("1 mm pair from files")
    load.host_image.setText(str(pair[0]["image"]))
    load.host_label.setText(str(pair[0]["label"]))
    load.donor_image.setText(str(pair[1]["image"]))
    load.donor_label.setText(str(pair[1]["label"]))
    load.load_files()
    wait(lambda: shown(SHAPE_1MM[::-1]) or shown(SHAPE_1MM), "the 1 mm pair from files")

    step("sample pair again")
    load.load_sample_pair()
    wait(lambda: session.synthetic is not None and session.host.case_id.startswith("sub")
         and not session.busy, "the sample pair")

    step("1 mm pair from a folder")
    load.folder.setText(str(folder))
    load.scan_folder()
    load.host_combo.setCurrentText("case0")
    load.donor_combo.setCurrentText("case1")
    load.load_dataset_pair()
    wait(lambda: session.host is not None and session.host.case_id == "case0" and session.synthetic is not None
         and not session.busy, "the 1 mm pair from a folder")

    step("host changed with Provenance raised")
    for key, dock in viewer.window._dock_widgets.items():
        if key.startswith("Provenance"):
            dock.raise_()
    for host in ("case2", "case1"):
        load.host_combo.setCurrentText(host)
        load.donor_combo.setCurrentText("case0")
        load.load_dataset_pair()
        wait(lambda h=host: session.host is not None and session.host.case_id == h
             and session.synthetic is not None and not session.busy, f"host {host}")

    errors = [str(r.message) for r in notification_manager.records[n_errors:]
              if getattr(r, "severity", "") in ("error",) or "Error" in type(r).__name__]
    viewer.close()
    if errors:
        print("ERRORS", errors, flush=True)
        return 1
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
