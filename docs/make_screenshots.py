"""Regenerate the user guide's screenshots by driving the real studio.

Run from the repository root under an X server::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py

It opens the studio (every dock widget, the sample host/donor pair), sets a
sampled CarveMix lambda, and saves ``docs/images/*.png``: the whole window and
each dock widget, plus the Load widget showing a validation error.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

OUT = Path(__file__).resolve().parent / "images"
SIZE = (1600, 1000)


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_lesionmix.widgets.studio import open_studio, studio_widget
    from napari_lesionmix.widgets.state import get_session

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="LesionMix studio")
    qt_window = viewer.window._qt_window
    qt_window.resize(*SIZE)
    app = QApplication.instance()
    open_studio(viewer)
    session = get_session(viewer)

    def settle(cond=lambda: True, timeout=120.0):
        t0 = time.perf_counter()
        while True:
            app.processEvents()
            if cond() and not session.busy:
                break
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("the studio did not settle")
            time.sleep(0.02)
        for _ in range(10):  # let paint events through
            app.processEvents()
            time.sleep(0.02)

    settle(lambda: session.synthetic is not None)
    widgets = {n: studio_widget(viewer, n) for n in ("Load", "CarveMix", "Provenance", "Preview")}
    cm = widgets["CarveMix"]
    cm.seed.setValue(2026)
    params = cm.sample_lambda()
    while params.lam < 0.3 * abs(cm.field.d_min):  # a visibly grown carve for the pictures
        params = cm.sample_lambda()
    settle(lambda: session.synthetic.params == params)
    # Hide the donor's layers and show the synthetic case over the host.
    for name in ("host label", "donor", "donor label"):
        viewer.layers[name].visible = False
    viewer.layers.selection.active = viewer.layers["synthetic"]
    settle()

    def grab(widget, name):
        dock = widget.parent()
        while dock is not None and not hasattr(dock, "setFloating"):
            dock = dock.parent()
        if dock is not None:
            dock.raise_()
        settle()
        target = dock if dock is not None else widget
        target.grab().save(str(OUT / name))
        print("wrote", OUT / name)

    grab(widgets["CarveMix"], "carvemix.png")
    qt_window.grab().save(str(OUT / "studio.png"))
    print("wrote", OUT / "studio.png")
    grab(widgets["Preview"], "preview.png")
    grab(widgets["Provenance"], "provenance.png")
    grab(widgets["Load"], "load.png")

    # A validation message: a donor on another grid.
    load = widgets["Load"]
    ds = session.dataset
    load.host_image.setText(ds[0].image_paths[0])
    load.host_label.setText(ds[0].label_path)
    load.donor_image.setText(ds[1].image_paths[0])
    load.donor_label.setText(str(Path(__file__).resolve().parent / "images" / "missing_seg.nii.gz"))
    load.load_files()
    settle(lambda: "does not exist" in load.status.text())
    grab(load, "load_error.png")
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
