"""NIfTI cases: loading, every user-facing error message, atomic saves, round trips, discovery."""

from __future__ import annotations

import errno
import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
from factories import make_affine, make_case, write_case

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io import atomic as atomic_mod
from napari_lesionmix.io import (
    check_same_grid,
    discover_dataset,
    load_case,
    load_image,
    load_label,
    save_image,
    save_label,
)


def _save(arr, path, affine=None):
    nib.save(nib.Nifti1Image(arr, make_affine() if affine is None else affine), path)
    return path


# ---------------------------------------------------------------- loading

def test_load_case_keeps_values_geometry_and_channels(tmp_path):
    case = make_case(seed=3, n_channels=2)
    case.label[case.label == 1] = 2  # a second class must survive
    paths = write_case(case, tmp_path, "c")
    got = load_case(paths["images"], paths["label"])
    assert got.case_id == "c"
    assert got.image.shape == (2, *case.shape) and got.image.dtype == np.float32
    np.testing.assert_array_equal(got.image, case.image)
    np.testing.assert_array_equal(got.label, case.label)
    assert set(np.unique(got.label)) == {0, 2}
    np.testing.assert_allclose(got.affine, case.affine, atol=1e-5)
    np.testing.assert_allclose(got.spacing, (1.2, 1.0, 1.5), atol=1e-5)


def test_4d_image_file_becomes_channels(tmp_path):
    data = np.random.default_rng(0).random((6, 7, 8, 3)).astype(np.float32)
    image, _ = load_image(_save(data, tmp_path / "multi.nii.gz"))
    assert image.shape == (3, 6, 7, 8)
    np.testing.assert_array_equal(image[2], data[..., 2])


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "nope.nii.gz", "Image file '.*nope.nii.gz' does not exist."),
        (lambda d: (d / "x.nii.gz").write_bytes(b"not a nifti at all") and d / "x.nii.gz",
         "could not be read as NIfTI"),
        (lambda d: d, "is a folder, not a NIfTI file"),
    ],
)
def test_unreadable_image_errors(tmp_path, make, expected):
    with pytest.raises(LesionMixError, match=expected):
        load_image(make(tmp_path))


def test_truncated_gzip_is_named(tmp_path):
    p = _save(np.ones((20, 20, 20), np.float32), tmp_path / "t.nii.gz")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LesionMixError, match=r"'.*t.nii.gz' is a corrupt or truncated gzip archive"):
        load_image(p)


def test_gzip_that_is_not_nifti(tmp_path):
    p = tmp_path / "g.nii.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"hello" * 100)
    with pytest.raises(LesionMixError, match=r"'.*g.nii.gz' could not be read as NIfTI"):
        load_image(p)


def test_nan_image_reports_count_and_first_voxel(tmp_path):
    data = np.zeros((5, 5, 5), np.float32)
    data[1, 2, 3] = np.nan
    data[4, 4, 4] = np.inf
    with pytest.raises(LesionMixError, match=r"contains 2 NaN or infinite voxels \(first at voxel \(i, j, k\) = \(1, 2, 3\) · \(x, y, z\) = \("):
        load_image(_save(data, tmp_path / "nan.nii.gz"))


def test_4d_label_is_rejected(tmp_path):
    p = _save(np.zeros((4, 4, 4, 2), np.uint8), tmp_path / "l4.nii.gz")
    with pytest.raises(LesionMixError, match=r"Label file '.*l4.nii.gz' is 4D .*must be a 3D volume"):
        load_label(p)


def test_non_integer_label_is_rejected(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 1, 1] = 0.5
    with pytest.raises(LesionMixError, match=r"non-integer values \(e.g. 0.5\)"):
        load_label(_save(data, tmp_path / "frac.nii.gz"))


def test_negative_label_is_rejected(tmp_path):
    data = np.zeros((4, 4, 4), np.int16)
    data[0, 0, 0] = -1
    with pytest.raises(LesionMixError, match="negative values"):
        load_label(_save(data, tmp_path / "neg.nii.gz"))


def test_image_label_shape_mismatch(tmp_path):
    img = _save(np.zeros((6, 6, 6), np.float32), tmp_path / "i.nii.gz")
    lab = _save(np.zeros((6, 6, 5), np.uint8), tmp_path / "i_seg.nii.gz")
    with pytest.raises(LesionMixError, match=r"has shape \(6, 6, 5\) but image .* has \(6, 6, 6\); they must match"):
        load_case(img, lab)


def test_image_label_affine_mismatch_says_by_how_much(tmp_path):
    img = _save(np.zeros((6, 6, 6), np.float32), tmp_path / "i.nii.gz")
    shifted = make_affine()
    shifted[0, 3] += 2.5
    lab = _save(np.zeros((6, 6, 6), np.uint8), tmp_path / "i_seg.nii.gz", shifted)
    with pytest.raises(LesionMixError, match=r"affines that differ by up to 2.5 mm"):
        load_case(img, lab)


def test_host_donor_grid_checks(host_case, donor_case):
    check_same_grid(host_case, donor_case)  # same grid: fine
    small = make_case(seed=4, shape=(20, 28, 20))
    with pytest.raises(LesionMixError, match=r"Donor 'case4' has shape \(20, 28, 20\) but host 'host' has"):
        check_same_grid(host_case, small)
    moved = make_case(seed=4)
    moved.affine = moved.affine.copy()
    moved.affine[1, 3] += 0.75
    with pytest.raises(LesionMixError, match=r"differ by up to 0.75 mm .* register them"):
        check_same_grid(host_case, moved)


def test_empty_label_where_a_lesion_is_required(donor_case):
    donor_case.label[:] = 0
    with pytest.raises(LesionMixError, match="Donor label '.*' has no lesion voxels"):
        donor_case.require_lesion("Donor")


# ---------------------------------------------------------------- saving

def _oblique_lps_affine():
    aff = make_affine(oblique=True)
    aff[:2] *= -1  # LPS-like: first two world axes flipped (non-RAS orientation)
    return aff


@pytest.mark.parametrize("affine", [make_affine(oblique=True), _oblique_lps_affine()], ids=["oblique", "oblique-lps"])
def test_round_trip_is_identical(tmp_path, affine):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(9, 10, 11)).astype(np.float32)
    label = (rng.random((9, 10, 11)) > 0.8).astype(np.uint8) * 3
    _save(image, tmp_path / "a.nii.gz", affine)
    _save(label, tmp_path / "a_seg.nii.gz", affine)
    first = load_case(tmp_path / "a.nii.gz", tmp_path / "a_seg.nii.gz")
    assert nib.aff2axcodes(first.affine) == nib.aff2axcodes(affine)
    save_image(first.image[0], tmp_path / "b.nii.gz", first.affine, first.header)
    save_label(first.label, tmp_path / "b_seg.nii.gz", first.affine, first.header)
    second = load_case(tmp_path / "b.nii.gz", tmp_path / "b_seg.nii.gz")
    np.testing.assert_array_equal(second.image, first.image)
    np.testing.assert_array_equal(second.label, first.label)
    np.testing.assert_array_equal(second.affine, first.affine)
    assert second.label.dtype.kind == "u"


def test_integer_source_dtype_is_kept(tmp_path):
    data = np.arange(64, dtype=np.int16).reshape(4, 4, 4) * 7
    _save(data, tmp_path / "i16.nii.gz")
    case = load_case(tmp_path / "i16.nii.gz")
    assert case.image_dtype == np.int16
    save_image(case.image[0], tmp_path / "o.nii.gz", case.affine, case.header, case.image_dtype)
    assert nib.load(tmp_path / "o.nii.gz").get_data_dtype() == np.int16
    save_image(case.image[0] + 0.5, tmp_path / "f.nii.gz", case.affine, case.header, case.image_dtype)
    assert nib.load(tmp_path / "f.nii.gz").get_data_dtype() == np.float32  # does not fit int16


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.nii.gz"
    save_image(np.ones((4, 4, 4), np.float32), target, make_affine())
    before = target.read_bytes()

    def full_disk(fd, data):
        os.write(fd, b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_mod, "_write_all", full_disk)
    with pytest.raises(LesionMixError, match=r"Could not write '.*keep.nii.gz': the disk is full"):
        save_image(np.zeros((4, 4, 4), np.float32), target, make_affine())
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.nii.gz"]


# ---------------------------------------------------------------- discovery

def test_discover_plain_pairs_with_all_label_suffixes(tmp_path):
    for i, suffix in enumerate(["_seg", "_label", "_mask"]):
        write_case(make_case(seed=i), tmp_path, f"sub{i}", label_suffix=suffix)
    _save(np.ones((24, 28, 20), np.uint8), tmp_path / "sub0_brainmask.nii.gz")
    _save(np.ones((24, 28, 20), np.float32), tmp_path / "unlabelled.nii.gz")
    ds = discover_dataset(tmp_path)
    assert ds.layout == "pairs"
    assert ds.case_ids == ["sub0", "sub1", "sub2"]
    assert ds["sub0"].brain_mask_path.endswith("sub0_brainmask.nii.gz")
    assert ds["sub0"].load_brain_mask().all()
    assert ds["sub1"].label_path.endswith("sub1_label.nii.gz")


def test_discover_nnunet_v2_multichannel(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for cid in ("les_001", "les_002"):
        case = make_case(seed=1, n_channels=2)
        for c in range(2):
            _save(case.image[c], tmp_path / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
        _save(case.label, tmp_path / "labelsTr" / f"{cid}.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    ds = discover_dataset(tmp_path)
    assert ds.layout == "nnunet" and ds.case_ids == ["les_001", "les_002"]
    assert ds.channel_names == {"0": "FLAIR", "1": "T1"} and ds.labels == {"background": 0, "lesion": 1}
    assert ds[0].load().n_channels == 2
    os.remove(tmp_path / "imagesTr" / "les_002_0001.nii.gz")
    with pytest.raises(LesionMixError, match=r"Case 'les_002' .* lacks channel file\(s\) les_002_0001.nii.gz"):
        discover_dataset(tmp_path)


def test_discover_nnunet_v1_without_dataset_json(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    case = make_case(seed=2)
    _save(case.image[0], tmp_path / "imagesTr" / "BRATS_001_0000.nii.gz")
    _save(case.label, tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    ds = discover_dataset(tmp_path)
    assert ds.layout == "nnunet" and ds.case_ids == ["BRATS_001"]


def test_discover_decathlon(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    case = make_case(seed=1, n_channels=2)
    _save(np.moveaxis(case.image, 0, -1), tmp_path / "imagesTr" / "BRATS_007.nii.gz")  # 4D, channels last
    _save(case.label, tmp_path / "labelsTr" / "BRATS_007.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background", "1": "edema"},
        "training": [{"image": "./imagesTr/BRATS_007.nii.gz", "label": "./labelsTr/BRATS_007.nii.gz"}]}))
    ds = discover_dataset(tmp_path)
    assert ds.layout == "msd" and ds.case_ids == ["BRATS_007"]
    assert ds.labels == {"background": 0, "edema": 1}
    loaded = ds[0].load()
    assert loaded.n_channels == 2
    np.testing.assert_array_equal(loaded.image, case.image)


def test_discover_errors(tmp_path):
    with pytest.raises(LesionMixError, match="Dataset folder '.*missing' does not exist"):
        discover_dataset(tmp_path / "missing")
    with pytest.raises(LesionMixError, match="No labelled cases found in"):
        discover_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{oops")
    with pytest.raises(LesionMixError, match="is not valid JSON"):
        discover_dataset(tmp_path)


# ---------------------------------------------------------------- fast NIfTI encoding

def _encode_cases():
    rng = np.random.default_rng(3)
    aff = make_affine(oblique=True)
    vol = rng.normal(size=(5, 6, 7)).astype(np.float32)
    big = nib.Nifti1Header()
    big = big.as_byteswapped(">")
    ext = nib.Nifti1Header()
    ext.extensions.append(nib.nifti1.Nifti1Extension("comment", b"made by a test"))
    scaled = nib.Nifti1Header()
    scaled.set_data_dtype(np.int16)
    scaled.set_slope_inter(2.0, 1.0)
    return {
        "int16": nib.Nifti1Image((vol * 100).astype(np.int16), aff),
        "uint8-label": nib.Nifti1Image((vol > 0).astype(np.uint8) * 3, aff),
        "float32": nib.Nifti1Image(vol, aff),
        "fortran-order": nib.Nifti1Image(np.asfortranarray(vol), aff),
        "strided-view": nib.Nifti1Image(np.arange(8 * 6 * 7, dtype=np.int16).reshape(8, 6, 7)[::2], aff),
        "big-endian-header": nib.Nifti1Image(vol.astype(">f4"), aff, big),
        "extension": nib.Nifti1Image(vol, aff, ext),
        "4d": nib.Nifti1Image(rng.normal(size=(4, 5, 6, 2)).astype(np.float32), aff),
        "scaled-header (nibabel path)": nib.Nifti1Image(vol, aff, scaled),
        "float64 data, float32 header (nibabel path)": nib.Nifti1Image(vol.astype(np.float64), aff,
                                                                       _f32_header()),
        "nifti2": nib.Nifti2Image(vol, aff),
    }


def _f32_header():
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    return hdr


@pytest.mark.parametrize("name", list(_encode_cases()))
def test_encode_nifti_writes_exactly_what_nibabel_writes(tmp_path, name):
    from napari_lesionmix.io.nifti import encode_nifti

    img = _encode_cases()[name]
    ours = encode_nifti(img)
    assert ours[:2] == b"\x1f\x8b"  # a gzip stream
    assert gzip.decompress(ours) == img.to_bytes()
    assert encode_nifti(img, compress=False) == img.to_bytes()
    nib.save(img, tmp_path / "nibabel.nii.gz")
    (tmp_path / "ours.nii.gz").write_bytes(ours)
    assert gzip.decompress((tmp_path / "nibabel.nii.gz").read_bytes()) == gzip.decompress(ours)
    back = nib.load(tmp_path / "ours.nii.gz")
    np.testing.assert_array_equal(back.get_fdata(), nib.load(tmp_path / "nibabel.nii.gz").get_fdata())
    np.testing.assert_array_equal(back.affine, nib.load(tmp_path / "nibabel.nii.gz").affine)


def test_encode_nifti_is_deterministic():
    from napari_lesionmix.io.nifti import encode_nifti

    img = _encode_cases()["int16"]
    assert encode_nifti(img) == encode_nifti(img)  # mtime 0 in the gzip header: no clock in the bytes


@pytest.mark.parametrize(
    "values, kept",
    [([0, 7, -300, 32767], True), ([0.5, 1, 2, 3], False), ([0, 1, 2, 40000], False),
     ([0, 1, 2, -40000], False), ([0, 1, 2, np.nan], False), ([0, 1, 2, 1e12], False)],
    ids=["whole", "fractional", "too-big", "too-small", "nan", "huge"],
)
def test_integer_dtype_is_kept_only_when_exact(tmp_path, values, kept):
    data = np.zeros((4, 4, 4), np.float32)
    data.flat[: len(values)] = values
    with np.errstate(all="raise"):  # no warning may escape the cast check
        save_image(data, tmp_path / "x.nii.gz", make_affine(), None, np.int16)
    back = nib.load(tmp_path / "x.nii.gz")
    assert (back.get_data_dtype() == np.int16) is kept
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """Files are created through the umask (0644 under 022), not mkstemp's owner-only 0600."""
    from napari_lesionmix.io.atomic import atomic_path, write_json_atomic

    old = os.umask(0o022)
    try:
        save_image(np.ones((4, 4, 4), np.float32), tmp_path / "a.nii.gz", make_affine())
        write_json_atomic({"a": 1}, tmp_path / "p.json")
        with atomic_path(tmp_path / "b.nii.gz") as tmp:
            nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), make_affine()), tmp)
        os.umask(0o077)
        save_image(np.ones((4, 4, 4), np.float32), tmp_path / "private.nii.gz", make_affine())
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"a.nii.gz": 0o644, "p.json": 0o644, "b.nii.gz": 0o644, "private.nii.gz": 0o600}


def test_atomic_path_failure_keeps_the_target_and_no_temp(tmp_path):
    from napari_lesionmix.io.atomic import atomic_path

    target = tmp_path / "t.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="writer broke"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer broke")
    with pytest.raises(LesionMixError, match=r"Could not write '.*t.bin': the disk is full"):
        with atomic_path(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"good" and os.listdir(tmp_path) == ["t.bin"]


@pytest.mark.parametrize("kind", ["int16", "scaled", "big-endian", "nifti2", "two-members", "plain-nii", "4d"])
def test_loading_matches_nibabel(tmp_path, kind):
    """The in-memory gzip reader gives exactly nibabel's voxels, scaling included, for every variant."""
    rng = np.random.default_rng(5)
    data = (rng.normal(size=(6, 7, 8)) * 300).astype(np.int16)
    aff = make_affine(oblique=True)
    name = "v.nii" if kind == "plain-nii" else "v.nii.gz"
    if kind == "scaled":
        img = nib.Nifti1Image(data, aff)
        img.header.set_slope_inter(0.5, -3.0)
    elif kind == "big-endian":
        img = nib.Nifti1Image(data.astype(">i2"), aff, nib.Nifti1Header().as_byteswapped(">"))
    elif kind == "nifti2":
        img = nib.Nifti2Image(data, aff)
    elif kind == "4d":
        img = nib.Nifti1Image(np.stack([data, -data], axis=-1), aff)
    else:
        img = nib.Nifti1Image(data, aff)
    path = tmp_path / name
    if kind == "two-members":  # e.g. written by a parallel gzip: two gzip members, one file
        raw = img.to_bytes()
        path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    else:
        nib.save(img, path)
    image, first = load_image(path)
    ref = nib.load(path).get_fdata(dtype=np.float32)
    ref = ref[np.newaxis] if ref.ndim == 3 else np.moveaxis(ref, -1, 0)
    np.testing.assert_array_equal(image, ref)
    np.testing.assert_array_equal(first.affine, nib.load(path).affine)


def test_corrupt_gzip_member_is_named(tmp_path):
    p = _save(np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), tmp_path / "c.nii.gz")
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(LesionMixError, match=r"'.*c.nii.gz' is a corrupt or truncated gzip archive"):
        load_image(p)


@pytest.mark.parametrize("path, case_id", [
    ("/d/brats_2013_pat0001_1/Flair_subtrMeanDivStd.nii.gz", "brats_2013_pat0001_1"),  # BraTS' processed FLAIR
    ("/d/brats_2013_pat0002_1/T1c_subtrMeanDivStd.nii.gz", "brats_2013_pat0002_1"),
    ("/d/patient07/flair.nii.gz", "patient07"),
    ("/d/x/flair_001.nii.gz", "flair_001"),  # a number: a case, not a modality
    ("/d/x/sub-01_0000.nii.gz", "sub-01"),
])
def test_a_file_named_after_its_modality_takes_its_folders_case_id(path, case_id):
    from napari_lesionmix.io.nifti import case_id_from_path

    assert case_id_from_path(path) == case_id


@pytest.mark.parametrize("top, dtype", [(1, np.uint8), (4, np.uint8), (255, np.uint8), (256, np.uint16),
                                        (65535, np.uint16), (70000, np.int32)])
def test_float_labels_in_the_files_order_become_c_ordered_integers(top, dtype):
    """nibabel hands labels over Fortran-ordered: the result is the same integers, C-ordered, whatever the order."""
    from napari_lesionmix.io.nifti import as_label_array

    rng = np.random.default_rng(top)
    values = rng.integers(0, top + 1, (7, 6, 5)).astype(np.float32 if top < 2**24 else np.float64)
    values.flat[0] = top
    for data in (values, np.asfortranarray(values), values[:, ::-1]):
        out = as_label_array(data)
        assert out.dtype == dtype and out.flags["C_CONTIGUOUS"] and np.array_equal(out, data)
    for bad, message in ((0.5, "non-integer values \\(e.g. 0.5\\)"), (-1.0, "negative values"),
                         (np.nan, "NaN or infinite"), (np.inf, "NaN or infinite")):
        broken = np.asfortranarray(values.copy())
        broken[1, 2, 3] = bad
        with pytest.raises(LesionMixError, match=message):
            as_label_array(broken)
