"""ARHNet at the checkpoint's training spacing (harmonize/resample.py): grids, plumbing, records, speed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from napari_lesionmix.harmonize import OutOfDomainWarning, TrainConfig, load_harmonizer, resample  # noqa: E402
from napari_lesionmix.harmonize.checkpoint import save_checkpoint  # noqa: E402
from napari_lesionmix.harmonize.config import ModelConfig  # noqa: E402
from napari_lesionmix.harmonize.inference import harmonize_volume  # noqa: E402
from napari_lesionmix.harmonize.model import Generator  # noqa: E402

DOMAIN_2MM = {
    "quantiles": [],
    "q_min": [],
    "q_max": [],
    "spacing_min": [2.0, 2.0, 2.0],
    "spacing_max": [2.0, 2.0, 2.0],
    "cases": 1,
}


def _checkpoint(path, domain=DOMAIN_2MM, patch=16):
    torch.manual_seed(0)
    cfg = ModelConfig(in_channels=1, base_channels=4, depth=2, disc_channels=4, disc_layers=2)
    gen = Generator(cfg)
    torch.nn.init.normal_(gen.head.weight, std=0.5)
    torch.nn.init.constant_(gen.head.bias, 0.05)
    state = {
        "model_config": cfg.to_dict(),
        "train_config": TrainConfig(patch_size=patch, model=cfg).to_dict(),
        "generator": gen.state_dict(),
        "epoch": 0,
    }
    if domain is not None:
        state["domain"] = domain
    save_checkpoint(state, path)
    return path


@pytest.fixture
def one_mm():
    """A 1 mm image (1, 48, 44, 40) with a blob lesion and a one-voxel one."""
    rng = np.random.default_rng(1)
    img = ndi.gaussian_filter(rng.normal(300, 40, (48, 44, 40)), 1.5).astype(np.float32)[None]
    zz, yy, xx = np.ogrid[:48, :44, :40]
    mask = (zz - 24) ** 2 + (yy - 20) ** 2 + (xx - 18) ** 2 <= 36
    mask[5, 40, 3] = True
    img[0][mask] += 150.0
    return img, mask


class ConstantGenerator(torch.nn.Module):
    """A generator whose difference map is one constant: the grid it runs on cannot matter."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value
        self.voxels = 0

    def difference(self, x, m, flag=None):
        self.voxels += int(x.shape[0]) * int(np.prod(x.shape[2:]))
        return torch.full_like(x, self.value)


def test_the_training_spacing_and_when_it_is_used():
    assert resample.model_spacing(DOMAIN_2MM) == (2.0, 2.0, 2.0)
    assert resample.model_spacing(
        {"spacing_min": [1.0, 1.0, 2.0], "spacing_max": [4.0, 1.0, 2.0]}
    ) == (2.0, 1.0, 2.0)
    assert (
        resample.model_spacing(None) is None
        and resample.model_spacing({"spacing_min": None}) is None
    )
    assert resample.run_spacing((1.0, 1.0, 1.0), (2.0, 2.0, 2.0)) == (2.0, 2.0, 2.0)
    assert resample.run_spacing((1.97, 2.0, 2.05), (2.0, 2.0, 2.0)) == (
        1.97,
        2.0,
        2.05,
    )  # within 5 %: native
    assert resample.run_spacing(None, (2.0, 2.0, 2.0)) is None
    assert resample.run_spacing((1.0, 1.0, 1.0), None) == (1.0, 1.0, 1.0)


def test_a_model_voxel_is_the_mean_of_its_native_block_and_back_is_linear():
    rng = np.random.default_rng(0)
    v = rng.random((8, 6, 10)).astype(np.float32)
    down = resample.to_model_grid(
        v, (2.0, 2.0, 2.0), resample.model_shape(v.shape, (2.0, 2.0, 2.0))
    )
    blocks = v.reshape(4, 2, 3, 2, 5, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(down, blocks, rtol=1e-5, atol=1e-6)
    # A linear ramp on the model grid is a linear ramp at the native voxels (inside the model grid's span).
    i, j, k = np.meshgrid(np.arange(6), np.arange(5), np.arange(7), indexing="ij")
    ramp = (0.5 * i + 2.0 * j - k).astype(np.float32)[None]
    where = np.zeros((12, 10, 14), bool)
    where[1:11, 1:9, 1:13] = True
    got = resample.at_native_voxels(ramp, (2.0, 2.0, 2.0), where)[0]
    ni, nj, nk = np.nonzero(where)
    want = 0.5 * ((ni + 0.5) / 2 - 0.5) + 2.0 * ((nj + 0.5) / 2 - 0.5) - ((nk + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 0.5, 3.0)])
def test_the_model_grid_gives_the_native_result_for_a_grid_free_generator(one_mm, spacing):
    """A constant difference map survives crop, resampling and the nearest extension exactly: the plumbing is right.

    Also anisotropic, with one axis finer and one coarser than the model's (down- and upsampling at once).
    """
    img, mask = one_mm
    m = mask.astype(np.float32)
    native, coarse = ConstantGenerator(0.1), ConstantGenerator(0.1)
    a = harmonize_volume(native, img, m, 16, None, "cpu")
    b = harmonize_volume(
        coarse, img, m, 16, None, "cpu", spacing=spacing, trained_spacing=(2.0, 2.0, 2.0)
    )
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.array_equal(a, img) and np.array_equal(b[:, ~mask], img[:, ~mask])
    if spacing == (1.0, 1.0, 1.0):
        assert (
            coarse.voxels * 4 <= native.voxels
        )  # the generator saw at most a quarter of the voxels


def test_a_spacing_that_cannot_be_resampled_from_runs_natively():
    for bad in [(1.0, float("nan"), 1.0), (0.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (1.0, 1.0)]:
        assert not resample.resamples(bad, (2.0, 2.0, 2.0))
        assert resample.run_spacing(bad, (2.0, 2.0, 2.0)) != (2.0, 2.0, 2.0)
    assert resample.resamples((1.0, 1.0, 1.0), (2.0, 2.0, 2.0)) and not resample.resamples(
        None, (2.0, 2.0, 2.0)
    )


def test_arhnet_runs_at_its_training_spacing_and_records_it(tmp_path, one_mm):
    img, mask = one_mm
    h = load_harmonizer(_checkpoint(tmp_path / "ck2mm.pt"), device="cpu")
    assert h.trained_spacing == (2.0, 2.0, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error", OutOfDomainWarning
        )  # on the model's grid the spacing is in its domain
        out = h.harmonize(img, mask, spacing=(1.0, 1.0, 1.0))
    native = h.harmonize(img, mask)  # spacing unknown: the native grid, as before
    assert np.array_equal(out[:, ~mask], img[:, ~mask]) and np.isfinite(out).all()
    assert not np.array_equal(out, native) and not np.array_equal(out[:, mask], img[:, mask])
    assert h.params(spacing=(1.0, 1.0, 1.0))["ran_at_spacing"] == [2.0, 2.0, 2.0]
    assert h.params(spacing=(2.0, 2.0, 2.0))["ran_at_spacing"] == [2.0, 2.0, 2.0]
    assert "ran_at_spacing" not in h.params() and h.params()["trained_spacing"] == [2.0, 2.0, 2.0]
    # At the training spacing nothing is resampled: the same bytes as the native run.
    assert np.array_equal(h.harmonize(img, mask, spacing=(2.0, 2.0, 2.0)), native)


def test_a_checkpoint_without_a_recorded_spacing_runs_natively_and_still_warns_nothing(
    tmp_path, one_mm
):
    img, mask = one_mm
    h = load_harmonizer(_checkpoint(tmp_path / "old.pt", domain=None), device="cpu")
    assert h.trained_spacing is None
    assert np.array_equal(h.harmonize(img, mask, spacing=(1.0, 1.0, 1.0)), h.harmonize(img, mask))
    assert h.params(spacing=(1.0, 1.0, 1.0))["ran_at_spacing"] == [1.0, 1.0, 1.0]


def test_export_harmonizes_at_the_training_spacing_as_the_library_does(tmp_path):
    """An export of 1 mm cases with a 2 mm checkpoint: each sample is the library's ``harmonize`` of the
    unharmonized sample with the host's spacing, and the manifest says where the generator ran."""
    import json
    import os

    from factories import make_case, write_case

    from napari_lesionmix.export import ExportConfig, export_dataset
    from napari_lesionmix.export.context import ExportContext, make_sample
    from napari_lesionmix.export.plan import make_plan
    from napari_lesionmix.io.nifti import load_case

    src = tmp_path / "src"
    for k in range(3):
        write_case(
            make_case(
                seed=70 + k,
                n_lesions=2,
                case_id=f"c{k}",
                shape=(40, 36, 32),
                spacing=(1.0, 1.0, 1.0),
            ),
            src,
        )
    ck = _checkpoint(tmp_path / "ck.pt")
    config = ExportConfig(
        os.fspath(src),
        os.fspath(tmp_path / "out"),
        n=2,
        seed=0,
        n_folds=0,
        harmonize=os.fspath(ck),
        harmonize_device="cpu",
    )
    export_dataset(config)
    lines = [
        json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    ]
    assert all(r["harmonize"]["ran_at_spacing"] == [2.0, 2.0, 2.0] for r in lines)
    plain = ExportContext(
        make_plan(ExportConfig(os.fspath(src), os.fspath(tmp_path / "o2"), n=2, seed=0, n_folds=0))
    )
    h = load_harmonizer(ck, device="cpu")
    for r in lines:
        _, made = make_sample(plain, r["index"])
        syn = made.synthetic
        want = h.harmonize(syn.image, syn.mask, label=syn.label, spacing=made.host.spacing)
        got = load_case(
            [tmp_path / "out" / "imagesTr" / f"{r['id']}_0000.nii.gz"],
            tmp_path / "out" / "labelsTr" / f"{r['id']}.nii.gz",
        ).image
        np.testing.assert_array_equal(got, want.astype(np.float32))
