"""Whole-volume harmonization: ARHNet patches, baselines, checkpoints and the ``harmonize`` CLI."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from napari_lesionmix.cli import main  # noqa: E402
from napari_lesionmix.errors import Cancelled, LesionMixError  # noqa: E402
from napari_lesionmix.harmonize import (  # noqa: E402
    SHIPPED_CHECKPOINT,
    ModelConfig,
    TrainConfig,
    fmae,
    harmonize,
    load_harmonizer,
)
from napari_lesionmix.harmonize.baselines import histogram_matching, match_to_reference  # noqa: E402
from napari_lesionmix.harmonize.checkpoint import save_checkpoint  # noqa: E402
from napari_lesionmix.harmonize.data import minmax_scale, perturb  # noqa: E402
from napari_lesionmix.harmonize.inference import plan_patches  # noqa: E402
from napari_lesionmix.harmonize.model import Generator  # noqa: E402

TINY = ModelConfig(base_channels=4, depth=2, disc_channels=4, disc_layers=2)


def write_tiny_checkpoint(path, in_channels=1, patch=16, seed=0):
    """A random (non-identity) generator saved as a slim checkpoint."""
    torch.manual_seed(seed)
    cfg = ModelConfig(in_channels=in_channels, base_channels=4, depth=2, disc_channels=4, disc_layers=2)
    gen = Generator(cfg)
    torch.nn.init.normal_(gen.head.weight, std=0.5)
    torch.nn.init.constant_(gen.head.bias, 0.05)
    save_checkpoint({"model_config": cfg.to_dict(),
                     "train_config": TrainConfig(patch_size=patch, model=cfg).to_dict(),
                     "generator": gen.state_dict(), "epoch": 0}, path)
    return path


@pytest.fixture
def volume():
    """An image (1, 40, 36, 30) with three lesions: two small, one larger than a 16^3 patch."""
    rng = np.random.default_rng(0)
    img = ndi.gaussian_filter(rng.normal(300, 40, (40, 36, 30)), 1.5).astype(np.float32)[None]
    mask = np.zeros((40, 36, 30), bool)
    mask[5:9, 5:9, 5:8] = True
    mask[30:33, 28:31, 24:27] = True
    mask[12:34, 10:30, 8:22] = True  # 22 x 20 x 14: tiled
    mask[20, 1, 1] = True  # a one-voxel component near the border
    img[0][mask] += 120.0
    return img, mask


@pytest.fixture
def tiny_ckpt(tmp_path):
    return write_tiny_checkpoint(tmp_path / "tiny.pt")


def test_plan_covers_every_component_and_tiles_large_ones(volume):
    _, mask = volume
    comps, plan = plan_patches(mask, 16, margin=2)
    covered = np.zeros(mask.shape, bool)
    for idx, (oi, oj, ok) in plan:
        sl = (slice(max(oi, 0), oi + 16), slice(max(oj, 0), oj + 16), slice(max(ok, 0), ok + 16))
        covered[sl] |= comps[sl] == idx
    assert np.array_equal(covered, mask)
    per_comp = np.bincount([idx for idx, _ in plan])
    assert per_comp.max() > 1 and sorted(per_comp[1:])[:3] == [1, 1, 1]


@pytest.mark.parametrize("method", ["arhnet", "hm", "composite"])
def test_outside_mask_is_bit_identical(volume, tiny_ckpt, method):
    img, mask = volume
    soft = mask * np.float32(0.75)
    soft[5:9, 5:9, 5:8] = 1.0
    calls = []
    out = harmonize(img, soft, method=tiny_ckpt if method == "arhnet" else method, device="cpu",
                    progress=lambda d, t: calls.append((d, t)))
    assert out.shape == img.shape and out.dtype == img.dtype
    assert np.array_equal(out[:, ~mask], img[:, ~mask])
    assert calls and calls[-1][0] == calls[-1][1]
    if method != "composite":
        assert np.all(np.any(out != img, axis=0)[mask] | (method == "hm"))
        assert not np.array_equal(out[:, mask], img[:, mask])


def test_arhnet_output_in_original_scale_and_blends_tiles(volume, tiny_ckpt):
    img, mask = volume
    h = load_harmonizer(tiny_ckpt, device="cpu")
    out = h.harmonize(img, mask)
    # Same result whatever the intensity unit: the change scales with (max - min).
    out10 = h.harmonize(img * 10.0, mask)
    assert np.allclose(out10, out * 10.0, rtol=1e-4, atol=1e-2)
    # No seams: inside the tiled lesion the change varies smoothly (blended tiles).
    change = (out - img)[0][12:34, 10:30, 8:22]
    assert np.abs(np.diff(change, axis=0)).max() < np.abs(change).max()
    p = h.params()
    assert p["method"] == "arhnet" and len(p["checkpoint_sha256"]) == 64


def test_empty_mask_returns_a_copy(tiny_ckpt):
    img = np.random.default_rng(1).random((1, 12, 12, 12), dtype=np.float32)
    out = harmonize(img, np.zeros((12, 12, 12)), method=tiny_ckpt, device="cpu")
    assert np.array_equal(out, img) and out is not img


def test_histogram_matching_maps_to_the_ring():
    rng = np.random.default_rng(2)
    img = rng.normal(100, 5, (1, 20, 20, 20)).astype(np.float32)
    mask = np.zeros((20, 20, 20), bool)
    mask[8:12, 8:12, 8:12] = True
    img[0][mask] = rng.normal(300, 30, mask.sum())
    out = histogram_matching(img, mask, ring_width=2)
    ring = ndi.binary_dilation(mask, np.ones((3, 3, 3)), iterations=2) & ~mask
    assert abs(out[0][mask].mean() - img[0][ring].mean()) < 2.0
    assert abs(out[0][mask].std() - img[0][ring].std()) < 1.5
    # Rank order inside the lesion is kept.
    assert np.array_equal(np.argsort(out[0][mask]), np.argsort(img[0][mask]))
    assert np.allclose(match_to_reference(np.array([3.0, 1.0, 2.0]), np.array([10.0, 20.0, 30.0])), [30, 10, 20])


def test_channel_count_mismatch_is_a_clear_error(volume, tiny_ckpt):
    img, mask = volume
    with pytest.raises(LesionMixError, match=r"tiny\.pt.*1 channel\(s\) but the image has 2"):
        harmonize(np.concatenate([img, img]), mask, method=tiny_ckpt, device="cpu")


def test_bad_checkpoints_name_the_file(tmp_path, tiny_ckpt):
    missing = tmp_path / "missing.pt"
    with pytest.raises(LesionMixError, match="missing.pt' does not exist"):
        load_harmonizer(missing)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(LesionMixError, match="notes.pt' is not a readable PyTorch file"):
        load_harmonizer(text)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_ckpt.read_bytes()[: tiny_ckpt.stat().st_size // 2])
    with pytest.raises(LesionMixError, match="truncated.pt' is not a readable PyTorch file"):
        load_harmonizer(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(LesionMixError, match="foreign.pt' is not an ARHNet checkpoint"):
        load_harmonizer(foreign)
    # Weights of one width declared as another.
    mismatched = tmp_path / "mismatched.pt"
    gen = Generator(ModelConfig(base_channels=6, depth=2))
    save_checkpoint({"model_config": TINY.to_dict(), "generator": gen.state_dict()}, mismatched)
    with pytest.raises(LesionMixError, match="mismatched.pt' does not match the ARHNet generator"):
        load_harmonizer(mismatched)
    with pytest.raises(LesionMixError, match="not one of arhnet"):
        load_harmonizer("histogram")


def test_cli_harmonize_writes_channels_and_params(tmp_path, volume, tiny_ckpt):
    img, mask = volume
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = (4.0, -3.0, 7.0)
    nib.save(nib.Nifti1Image(img[0], aff), tmp_path / "syn.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff), tmp_path / "roi.nii.gz")
    for method_args in (["--model", str(tiny_ckpt)], ["--method", "hm"]):
        out = tmp_path / ("out_" + method_args[-1][-5:].replace(".", ""))
        code = main(["harmonize", "--image", str(tmp_path / "syn.nii.gz"), "--mask", str(tmp_path / "roi.nii.gz"),
                     *method_args, "--device", "cpu", "--out", str(out)])
        assert code == 0
        res = nib.load(out / "image_0000.nii.gz")
        assert np.allclose(res.affine, aff)
        data = np.asarray(res.dataobj, dtype=np.float32)
        assert np.array_equal(data[~mask], img[0][~mask])
        assert not np.array_equal(data[mask], img[0][mask])
        params = json.loads((out / "params.json").read_text())
        assert params["params"]["mask_voxels"] == int(mask.sum())
    assert main(["harmonize", "--image", str(tmp_path / "syn.nii.gz"), "--mask", str(tmp_path / "roi.nii.gz"),
                 "--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.skipif(not SHIPPED_CHECKPOINT.is_file(), reason="shipped checkpoint not built")
def test_shipped_checkpoint_harmonizes_a_held_out_sample_case(sample_dataset):
    """The shipped model undoes an Eq. 1 perturbation of a held-out case better than doing nothing."""
    case = sample_dataset["sub-10"].load()
    mask = case.label > 0
    scaled, lo, hi = minmax_scale(case.image)
    for alpha, lam in ((0.25, 0.2), (-0.2, -0.15)):
        composite = perturb(scaled, mask, alpha, lam)
        out = harmonize(composite, mask, method="arhnet", device="cpu")
        assert np.array_equal(out[:, ~mask], composite[:, ~mask])
        assert fmae(out, scaled, mask[None]) < fmae(composite, scaled, mask[None])


def test_label_masks_count_as_binary(volume, tiny_ckpt):
    img, mask = volume
    labels = mask.astype(np.uint8) * 2
    a = harmonize(img, mask, method=tiny_ckpt, device="cpu")
    b = harmonize(img, labels, method=tiny_ckpt, device="cpu")
    assert np.array_equal(a, b)
    with pytest.raises(LesionMixError, match=r"\[0, 1\]"):
        harmonize(img, mask * 2.0, method="hm")


def test_histogram_matching_ignores_background_padding_at_the_brain_edge():
    """A lesion touching the skull-stripped background must not be matched to the zeros around it."""
    from napari_lesionmix.harmonize.baselines import histogram_matching

    rng = np.random.default_rng(0)
    image = np.zeros((1, 20, 20, 20), np.float32)
    image[0, :, :, :12] = rng.normal(100, 5, (20, 20, 12))  # "brain" on one side, 0 outside
    mask = np.zeros((20, 20, 20), bool)
    mask[8:12, 8:12, 8:14] = True  # lesion crossing the brain edge at k = 12
    image[0][mask & (np.indices(mask.shape)[2] < 12)] = 160.0
    out = histogram_matching(image, mask)
    tissue = mask & (image[0] > 0)
    assert out[0][tissue].min() >= image[0][~mask & (image[0] > 0)].min() - 1e-3  # no black holes
    np.testing.assert_array_equal(out[0][mask & (image[0] == 0)], 0)  # padding stays padding
    np.testing.assert_array_equal(out[0][~mask], image[0][~mask])


def test_cli_harmonize_never_replaces_its_inputs_nor_writes_nan(tmp_path, volume, tiny_ckpt, capsys):
    """The hostile-user cases of harmonize: its own sample folder as --out, NaN weights, a bad mask, no CUDA."""
    img, mask = volume
    sample = tmp_path / "cm"
    sample.mkdir()
    nib.save(nib.Nifti1Image(img[0], np.eye(4)), sample / "image_0000.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), sample / "mask.nii.gz")
    (sample / "params.json").write_text('{"params": {"method": "carvemix"}}')
    before = {p.name: p.read_bytes() for p in sample.iterdir()}
    base = ["harmonize", "--image", str(sample / "image_0000.nii.gz"), "--mask", str(sample / "mask.nii.gz"),
            "--method", "hm", "--device", "cpu"]
    for out in ([str(sample)], [str(sample), "--overwrite"]):
        assert main([*base, "--out", *out]) == 2
        assert "would replace the input" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in sample.iterdir()} == before
    out = tmp_path / "harm"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    # A checkpoint with NaN weights: an error, nothing written.
    ckpt = torch.load(tiny_ckpt, weights_only=False)
    for tensor in ckpt["generator"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    torch.save(ckpt, tmp_path / "nan.pt")
    nan_args = ["harmonize", "--image", str(sample / "image_0000.nii.gz"), "--mask", str(sample / "mask.nii.gz"),
                "--model", str(tmp_path / "nan.pt"), "--device", "cpu", "--out", str(tmp_path / "nan")]
    assert main(nan_args) == 2
    assert "gave NaN or infinite voxels" in capsys.readouterr().err and not (tmp_path / "nan").exists()
    # A mask outside [0, 1] names the file and the range found.
    nib.save(nib.Nifti1Image(mask.astype(np.float32) * 3, np.eye(4)), tmp_path / "m3.nii.gz")
    assert main([*base[:4], str(tmp_path / "m3.nii.gz"), *base[5:], "--out", str(tmp_path / "m3")]) == 2
    assert re.search(r"Mask '.*m3.nii.gz' holds values from 0 to 3", capsys.readouterr().err)
    # No CUDA here: one plain warning line, not Python's file-and-line format.
    if not torch.cuda.is_available():
        cuda = [*base[:5], "--model", str(tiny_ckpt), "--device", "cuda", "--out", str(tmp_path / "cuda")]
        assert main(cuda) == 0
        err = capsys.readouterr().err
        assert "lesionmix harmonize: warning: CUDA was requested but is not available; using the CPU." in err
        assert ".py:" not in err


def test_train_harmonizer_keeps_an_existing_checkpoint(tmp_path, tiny_ckpt, capsys):
    before = tiny_ckpt.read_bytes()
    assert main(["train-harmonizer", "--dataset", str(tmp_path), "--out", str(tiny_ckpt)]) == 2
    assert "Checkpoint '" in capsys.readouterr().err and tiny_ckpt.read_bytes() == before


def test_arhnet_cancel_stops_between_patches_and_changes_nothing(volume, tiny_ckpt):
    img, mask = volume
    original = img.copy()
    h = load_harmonizer(tiny_ckpt, device="cpu", batch_size=1)
    total = len(plan_patches(mask, h.patch_size, h.margin)[1])
    assert total >= 4
    calls = []
    with pytest.raises(Cancelled, match=f"after 2 of {total} patch"):
        h.harmonize(img, mask, progress=lambda d, t: calls.append(d), should_stop=lambda: len(calls) >= 2)
    assert calls == [1, 2] and np.array_equal(img, original)
    assert not h.generator.training  # its mode restored
    # Without a stop the same harmonizer still runs to the end.
    out = h.harmonize(img, mask, should_stop=lambda: False)
    assert not np.array_equal(out[:, mask], img[:, mask])
