"""Regenerate the user guide's screenshots by driving the real studio.

Run from the repository root under an X server::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py

It opens the studio (every dock widget, the sample host/donor pair), sets a
sampled CarveMix lambda, and saves ``docs/images/*.png``: the whole window and
each dock widget, plus the Load widget showing a validation error. Then it
drives the other method widgets on the same pair and saves the whole window
with each one raised: Soft-CP after "Sample", LesionMix after a populate
sample with its likelihood heat map, Harmonize after the shipped ARHNet
checkpoint, and Export after writing three cases to a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

OUT = Path(__file__).resolve().parent / "images"
SIZE = (1600, 1000)  # the screen the studio must fit, every dock open (they scroll)


def main() -> None:
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_lesionmix.widgets.state import get_session
    from napari_lesionmix.widgets.studio import open_studio, studio_widget

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
    for role in ("host_label", "donor_image", "donor_label"):
        session.layer(role).visible = False
    viewer.layers.selection.active = session.layer("synthetic_image")
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

    # Side by side: host and synthetic in napari's grid mode, zoomed on the pasted lesion.
    preview = widgets["Preview"]
    preview.compare_box.setChecked(True)
    session.layer("host_label").visible = False
    viewer.fit_to_view()
    viewer.camera.zoom *= 1.6
    viewer.camera.center = session.world_point(session.cursor)[1:]
    preview.zoom.setCurrentIndex(1)
    settle()
    qt_window.grab().save(str(OUT / "compare.png"))
    print("wrote", OUT / "compare.png")
    preview.compare_box.setChecked(False)
    preview.zoom.setCurrentIndex(0)
    viewer.fit_to_view()


    # The other method widgets: whole-window shots, with the tabbed docks given
    # most of the right column so each widget is shown without scrolling.
    from qtpy.QtCore import Qt

    from napari_lesionmix.augment.lesionmix import LesionMixParams
    from napari_lesionmix.augment.softcp import SoftCPParams
    from napari_lesionmix.widgets.lesionmix import LIKELIHOOD_NAME

    def dock_of(widget):
        dock = widget.parent()
        while dock is not None and not hasattr(dock, "setFloating"):
            dock = dock.parent()
        return dock


    def shoot(widget, name, width=460):
        # The studio's own split between the preview and the tab group (as a user sees it): forcing
        # heights here squeezed the preview's views to ~30 px behind a dock taller than its share.
        dock = dock_of(widget)
        dock.raise_()
        qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
        settle()
        qt_window.grab().save(str(OUT / name))
        print("wrote", OUT / name)

    def show_synthetic_at(ijk):
        """Show the synthetic over the host with the slider and crosshair on file voxel ``ijk``."""
        # The studio's QA display: the pasted region outlined, the mixing-mask tint off (on request only).
        for role in ("host_label", "donor_image", "donor_label", "mixing_mask"):
            session.layer(role).visible = False
        for role in ("synthetic_image", "synthetic_label"):
            session.layer(role).visible = True
        viewer.layers.selection.active = session.layer("synthetic_image")
        session.set_cursor(session.orientation.display_index(tuple(int(v) for v in ijk)), move_viewer=True)
        settle()

    # Soft-CP: "Sample" on the sample pair, slider on the pasted lesion.
    softcp_w = studio_widget(viewer, "Soft-CP")
    dock_of(softcp_w).raise_()
    softcp_w.seed.setValue(7)
    softcp_w.sample_btn.click()
    settle(lambda: isinstance(session.synthetic.params, SoftCPParams))
    changed = session.synthetic.label != session.host.label
    show_synthetic_at(np.argwhere(changed).mean(axis=0).round())
    shoot(softcp_w, "softcp.png")

    # LesionMix: populate to a target above the host's load on the sample
    # dataset, then the likelihood heat map over the result.
    lm = studio_widget(viewer, "LesionMix")
    dock_of(lm).raise_()
    settle(lambda: lm.loads is not None)
    lm.distribution.setCurrentText("medium")  # the dataset's middle tertile of loads
    lm.mode.setCurrentText("populate")
    lm.seed.setValue(5)
    lm.sample_btn.click()
    settle(lambda: isinstance(session.synthetic.params, LesionMixParams))
    lm.show_map_btn.click()
    settle(lambda: LIKELIHOOD_NAME in viewer.layers)
    changed = session.synthetic.label != session.host.label
    show_synthetic_at(np.argwhere(changed).mean(axis=0).round())
    shoot(lm, "lesionmix.png")
    viewer.layers[LIKELIHOOD_NAME].visible = False

    # Harmonize: the current (LesionMix) synthetic with the shipped ARHNet checkpoint.
    hw = studio_widget(viewer, "Harmonize")
    dock_of(hw).raise_()
    hw.method.setCurrentIndex([hw.method.itemData(i) for i in range(hw.method.count())].index("arhnet"))
    hw.device.setCurrentText("cpu")
    hw.harmonize_btn.click()
    settle(lambda: hw.after is not None)
    viewer.layers.selection.active = session.layer("synthetic_image")
    shoot(hw, "harmonize.png")

    # Export: three cases of the sample data into a temporary folder, then the QA gallery.
    ex = studio_widget(viewer, "Export")
    with tempfile.TemporaryDirectory() as tmp:
        ex.count.setValue(3)
        ex.folds.setValue(0)  # three cases cannot fill nnU-Net's folds: no splits file for the picture
        ex.seed.setValue(4)
        ex.weights["carvemix"].setValue(2.0)
        ex.weights["softcp"].setValue(1.0)
        ex.out.setText(str(Path(tmp) / "Dataset900_Sample"))
        ex.export_btn.click()
        settle(lambda: ex.report is not None)
        shoot(ex, "export.png", width=700)  # a wider gallery

    # Last (its notification would cover the canvas in the shots above): a
    # validation message for a donor label that does not exist.
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
