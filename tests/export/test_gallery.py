"""QA contact sheet: orientation of the triplanar thumbnails and the PNG itself."""

from __future__ import annotations

import os

import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.export import ExportConfig, export_dataset, render_gallery
from napari_lesionmix.export.gallery import choose_cases, triplanar


def test_triplanar_is_canonical_ras():
    # An LPS-stored volume (x and y flipped) with a marker in the patient's right, anterior, superior corner.
    shape = (12, 14, 10)
    image = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    # Voxel (1, 1, 8): array index low in i and j = patient right (x) and anterior (y) in LPS storage.
    image[1, 1, 8] = 1.0
    label[1, 1, 8] = 1
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    (ax_img, ax_lab, ax_aspect), (co_img, _, co_aspect), (sa_img, _, _) = triplanar(image, label, affine)
    # Axial slice is (x, y) in RAS: the marker sits at high x (right) and high y (anterior).
    xi, yi = np.argwhere(ax_img == 1.0)[0]
    assert xi == shape[0] - 2 and yi == shape[1] - 2
    assert ax_lab[xi, yi] == 1 and ax_aspect == pytest.approx(1.0)
    # Coronal (x, z): right and superior; aspect = z spacing / x spacing.
    xi, zi = np.argwhere(co_img == 1.0)[0]
    assert xi == shape[0] - 2 and zi == 8 and co_aspect == pytest.approx(1.5)
    # Sagittal (y, z): anterior and superior.
    yi, zi = np.argwhere(sa_img == 1.0)[0]
    assert yi == shape[1] - 2 and zi == 8


def test_each_view_shows_a_lesion_even_when_the_centre_of_mass_misses_them():
    shape = (20, 20, 20)
    label = np.zeros(shape, np.uint8)
    label[2:5, 2:5, 2:5] = 1  # two lesions in opposite corners: their centre of mass is in neither
    label[14:18, 14:18, 14:18] = 1
    views = triplanar(np.ones(shape, np.float32), label, np.eye(4))
    for _, lab, _ in views:
        assert lab.sum() == 16  # the larger lesion's full cross-section


def test_render_gallery_png(tmp_path, capsys):
    src = tmp_path / "src"
    for k in range(3):
        write_case(make_case(seed=50 + k, n_lesions=2, case_id=f"g{k}", shape=(20, 22, 18)), src)
    out = tmp_path / "out"
    export_dataset(ExportConfig(os.fspath(src), os.fspath(out), n=4, seed=2, include_real=True))
    png = render_gallery(out, 4, tmp_path / "qa.png")
    from matplotlib.image import imread

    pix = imread(png)
    assert pix.ndim == 3 and pix.shape[0] > 100 and pix.shape[1] > 3 * pix.shape[0] / 2
    red = (pix[..., 0] > 0.8) & (pix[..., 1] < 0.3) & (pix[..., 2] < 0.3)
    assert red.sum() > 50  # lesion contours were drawn
    assert choose_cases([f"c{i}" for i in range(10)], 3) == ["c0", "c4", "c9"]
    with pytest.raises(LesionMixError, match="nope"):
        render_gallery(out, ["nope"], tmp_path / "x.png")
    assert main(["gallery", os.fspath(out), "--out", os.fspath(tmp_path / "cli.png"), "--cases", "g1",
                 "lmx_000002"]) == 0
    assert (tmp_path / "cli.png").is_file() and "wrote" in capsys.readouterr().out
