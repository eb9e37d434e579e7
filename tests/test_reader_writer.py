"""The npe2 reader/writer hooks: orientation, geometry, label detection, lossless round trips."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from factories import make_affine

from napari_lesionmix._reader import napari_get_reader, read_files, read_nifti
from napari_lesionmix._writer import write_image, write_labels
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import DisplayOrientation

SHAPE = (12, 14, 10)


def _affine(kind: str) -> np.ndarray:
    if kind == "ras":
        return make_affine((1.2, 1.0, 1.5))
    if kind == "oblique":
        return make_affine((1.2, 1.0, 1.5), oblique=True)
    if kind == "lps":  # DICOM-like: i -> left, j -> posterior
        aff = np.diag([-1.2, -1.0, 1.5, 1.0])
        aff[:3, 3] = (20.0, 30.0, -5.0)
        return aff
    if kind == "permuted":  # i -> superior, j -> right, k -> anterior
        aff = np.zeros((4, 4))
        aff[2, 0], aff[0, 1], aff[1, 2], aff[3, 3] = 1.5, 1.2, 1.0, 1.0
        aff[:3, 3] = (-3.0, 4.0, 5.0)
        return aff
    raise ValueError(kind)


def _write(path, data, affine, **header_fields):
    img = nib.Nifti1Image(data, affine)
    for k, v in header_fields.items():
        img.header[k] = v
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    nib.save(img, path)
    return path


def _ras_positions(shape, affine):
    ijk = np.indices(shape).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).T


@pytest.mark.parametrize("kind", ["ras", "oblique", "lps", "permuted"])
def test_round_trip_identical_voxels_affine_header(tmp_path, kind):
    rng = np.random.default_rng(0)
    aff = _affine(kind)
    img = rng.integers(-200, 900, SHAPE).astype(np.int16)
    lab = (rng.random(SHAPE) > 0.9).astype(np.uint8) * 2
    ip = _write(tmp_path / "scan.nii.gz", img, aff, descrip=b"scanner X")
    lp = _write(tmp_path / "scan_seg.nii.gz", lab, aff)
    (idata, ikw, itype), (ldata, lkw, ltype) = read_files([ip, lp])
    assert (itype, ltype) == ("image", "labels")
    out_i = write_image(str(tmp_path / "out" / "img.nii.gz"), idata, ikw)
    out_l = write_labels(str(tmp_path / "out" / "lab"), ldata, lkw)  # suffix added
    assert out_l[0].endswith("lab.nii.gz")
    back_i, back_l = nib.load(out_i[0]), nib.load(out_l[0])
    assert back_i.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(back_i.dataobj), img)
    np.testing.assert_array_equal(np.asanyarray(back_l.dataobj), lab)
    np.testing.assert_allclose(back_i.affine, aff, atol=1e-5)
    np.testing.assert_allclose(back_l.affine, aff, atol=1e-5)
    assert back_i.header["descrip"].tobytes().startswith(b"scanner X")
    assert int(back_i.header["sform_code"]) == 2


@pytest.mark.parametrize("kind", ["ras", "lps", "permuted"])
def test_display_is_superior_posterior_left(tmp_path, kind):
    """Axis 0 inferior->superior, axis 1 anterior->posterior (anterior up), axis 2 right->left."""
    aff = _affine(kind)
    pos = _ras_positions(SHAPE, aff)
    # Encode each voxel's RAS position so we can read the direction of every display axis.
    for axis in range(3):
        vol = pos[:, axis].reshape(SHAPE).astype(np.float32)
        p = _write(tmp_path / f"coord{axis}.nii.gz", vol, aff)
        disp, kw, _ = read_nifti(p)
        x_ras = disp
        if axis == 0:  # R coordinate decreases along display axis 2 (radiological)
            assert np.all(np.diff(x_ras, axis=2) < 0)
        if axis == 1:  # A coordinate decreases down the rows: anterior is up
            assert np.all(np.diff(x_ras, axis=1) < 0)
        if axis == 2:  # S coordinate increases along the slider axis
            assert np.all(np.diff(x_ras, axis=0) > 0)


@pytest.mark.parametrize("kind", ["ras", "lps", "permuted"])
def test_scale_translate_are_lps_world_coordinates(tmp_path, kind):
    aff = _affine(kind)
    p = _write(tmp_path / "a.nii.gz", np.zeros(SHAPE, np.float32), aff)
    disp, kw, _ = read_nifti(p)
    o = DisplayOrientation(aff, SHAPE)
    for ijk in [(0, 0, 0), (3, 5, 7), (11, 13, 9)]:
        zyx = np.array(o.display_index(ijk))
        world = np.asarray(kw["translate"]) + np.asarray(kw["scale"]) * zyx
        x, y, z = aff[:3, :3] @ np.asarray(ijk, float) + aff[:3, 3]
        np.testing.assert_allclose(world, (z, -y, -x), atol=1e-6)
        np.testing.assert_allclose(o.original_index(zyx), ijk)
    np.testing.assert_allclose(sorted(kw["scale"]), [1.0, 1.2, 1.5], rtol=1e-6)


def test_same_anatomy_same_display_whatever_the_voxel_order(tmp_path):
    """A volume stored RAS and the same volume stored LPS display identically."""
    rng = np.random.default_rng(1)
    ras = rng.normal(size=SHAPE).astype(np.float32)
    aff = np.diag([1.2, 1.0, 1.5, 1.0])
    lps = ras[::-1, ::-1, :]
    aff_lps = aff @ nib.orientations.inv_ornt_aff(np.array([[0, -1], [1, -1], [2, 1]]), SHAPE)
    a, ka, _ = read_nifti(_write(tmp_path / "ras.nii.gz", ras, aff))
    b, kb, _ = read_nifti(_write(tmp_path / "lps.nii.gz", lps, aff_lps))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ka["translate"], kb["translate"])


def test_labels_detection(tmp_path):
    aff = _affine("ras")
    rng = np.random.default_rng(2)
    few = rng.integers(0, 4, SHAPE).astype(np.int16)
    many = rng.integers(0, 3000, SHAPE).astype(np.int16)
    float_mask = (rng.random(SHAPE) > 0.5).astype(np.float32)
    assert read_nifti(_write(tmp_path / "x.nii.gz", few, aff))[2] == "labels"
    assert read_nifti(_write(tmp_path / "y.nii.gz", many, aff))[2] == "image"
    assert read_nifti(_write(tmp_path / "y_brainmask.nii.gz", float_mask, aff))[2] == "labels"
    assert read_nifti(_write(tmp_path / "z.nii.gz", float_mask, aff))[2] == "image"


def test_4d_image_round_trip(tmp_path):
    aff = _affine("lps")
    data = np.random.default_rng(3).normal(size=(*SHAPE, 2)).astype(np.float32)
    p = _write(tmp_path / "multi.nii.gz", data, aff)
    disp, kw, kind = read_nifti(p)
    assert kind == "image" and disp.shape[0] == 2 and len(kw["scale"]) == 4
    out = write_image(str(tmp_path / "back.nii.gz"), disp, kw)
    back = nib.load(out[0])
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)


def test_layer_without_metadata_uses_scale_translate(tmp_path):
    """A painted Labels layer (no reader metadata) is written where napari shows it."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[2, 3, 4] = 1
    meta = {"scale": (1.5, 1.0, 1.2), "translate": (-5.0, 10.0, 20.0), "metadata": {}}
    (out,) = write_labels(str(tmp_path / "painted.nii.gz"), lab, meta)
    disp, kw, kind = read_nifti(out)
    assert kind == "labels"
    np.testing.assert_array_equal(disp, lab)
    np.testing.assert_allclose(kw["scale"], meta["scale"])
    np.testing.assert_allclose(kw["translate"], meta["translate"])


def test_get_reader_claims_only_nifti(tmp_path):
    assert napari_get_reader(str(tmp_path / "a.nii.gz")) is read_files
    assert napari_get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.nii.gz")]) is read_files
    assert napari_get_reader(str(tmp_path / "a.tif")) is None
    assert napari_get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.png")]) is None


def test_reader_errors_are_one_sentence(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(LesionMixError, match="broken.nii.gz' could not be read as NIfTI"):
        read_nifti(bad)
    with pytest.raises(LesionMixError, match="does not exist"):
        read_nifti(tmp_path / "missing.nii")


def test_sample_data_hooks(sample_dataset):
    from napari_lesionmix import _sample_data

    layers = _sample_data.sub_01()
    assert [t for _, _, t in layers] == ["image", "labels", "labels"]
    assert layers[0][1]["name"] == "sub-01"
    pair = _sample_data.load_pair()
    names = [kw["name"] for _, kw, _ in pair]
    host, donor = _sample_data.PAIR
    assert names == [f"host {host}", f"host {host}_seg", f"donor {donor}", f"donor {donor}_seg"]
    assert pair[0][0].shape == pair[2][0].shape


@pytest.mark.gui
def test_open_through_the_plugin_reader(make_napari_viewer, tmp_path):
    aff = _affine("lps")
    img = np.random.default_rng(4).normal(100, 10, SHAPE).astype(np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:7, 5:8, 3:6] = 1
    ip = _write(tmp_path / "case.nii.gz", img, aff)
    lp = _write(tmp_path / "case_seg.nii.gz", lab, aff)
    viewer = make_napari_viewer()
    viewer.open([str(ip), str(lp)], plugin="napari-lesionmix", stack=False)
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds == {"case": "Image", "case_seg": "Labels"}
    layer = viewer.layers["case_seg"]
    assert layer.metadata["lesionmix"]["shape"] == list(SHAPE)
    # Save through napari's writer dispatch with our plugin: identical voxels.
    out = tmp_path / "saved_seg.nii.gz"
    layer.save(str(out), plugin="napari-lesionmix")
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), lab)


def test_studio_makes_this_plugin_the_nifti_reader_unless_the_user_chose(tmp_path, monkeypatch):
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins
    from napari.settings import get_settings

    from napari_lesionmix.widgets.studio import prefer_our_reader

    _initialize_plugins()
    plugins = get_settings().plugins
    monkeypatch.setattr(plugins, "extension2reader", {"*.nii": "napari"})  # the user's own choice
    assert prefer_our_reader() == ["*.nii.gz"]
    assert plugins.extension2reader == {"*.nii": "napari", "*.nii.gz": "napari-lesionmix"}
    assert prefer_our_reader() == []  # a second studio start changes nothing
    path = _write(tmp_path / "case.nii.gz", np.ones(SHAPE, np.float32), _affine("ras"))
    # plugin=None is what File > Open and drag-and-drop pass: napari's own reader fails on .nii.gz.
    layers = ViewerModel().open(str(path), plugin=None)
    assert [(layer.name, type(layer).__name__) for layer in layers] == [("case", "Image")]
