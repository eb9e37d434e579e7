"""The studio on real scans: a BraTS folder with its float brain masks, loaded and populated as a user does.

The scans are read at run time from ``../shared/realdata`` (never copied into the
project); where the folder is absent (a user's clone) the test is skipped.
"""

from __future__ import annotations

import pytest
from realdata import ABSENT, BRATS, brats_with_masks

from napari_lesionmix.augment.lesion_load import lesion_load_ml
from napari_lesionmix.augment.lesionmix import LesionMixParams

pytestmark = [pytest.mark.gui, pytest.mark.skipif(len(BRATS) < 3, reason=ABSENT)]


def test_the_studio_loads_real_scans_with_float_brain_masks_and_populates_inside_them(studio, qtbot, tmp_path):
    viewer, docks, session = studio("Load", "LesionMix")
    load, w = docks["Load"], docks["LesionMix"]
    load.folder.setText(str(brats_with_masks(tmp_path / "brats")))
    load.scan_folder()
    assert "Found 3 labelled case(s)" in load.status.text()
    load.host_combo.setCurrentText("pat0002")
    load.donor_combo.setCurrentText("pat0001")
    load.load_dataset_pair()
    qtbot.waitUntil(lambda: session.has_pair and w.loads is not None, timeout=60000)
    host = session.host
    brain = session.brain_mask(host.case_id)
    assert brain is not None and brain.dtype == bool and 1e6 < brain.sum() < 2e6  # the file's mask, as binary
    host_load = lesion_load_ml(host.label, host.spacing)
    w.distribution.setCurrentText("uniform")
    w.dist_params["low"].setValue(host_load + 40.0)
    w.dist_params["high"].setValue(host_load + 50.0)
    w.mode.setCurrentText("populate")
    w.sample_btn.click()
    qtbot.waitUntil(lambda: not session.busy and session.synthetic is not None
                    and isinstance(session.synthetic.params, LesionMixParams), timeout=60000)
    p = session.synthetic.params
    assert p.mode == "populate" and p.insertions and p.brain.source == "mask"
    new = (session.synthetic.label != 0) & (host.label == 0)
    assert new.any() and not (new & ~brain).any()
