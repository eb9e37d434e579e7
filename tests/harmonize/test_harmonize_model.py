"""ARHNet building blocks: the ARH module (Eqs. 7-11), networks, losses (Eqs. 2-5), metrics, devices."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from napari_lesionmix.errors import LesionMixError  # noqa: E402
from napari_lesionmix.harmonize import ModelConfig, fmae, fpsnr, mae, psnr  # noqa: E402
from napari_lesionmix.harmonize.arh import ARH, masked_mean_std  # noqa: E402
from napari_lesionmix.harmonize.device import resolve_device  # noqa: E402
from napari_lesionmix.harmonize.losses import (  # noqa: E402
    boundary_band,
    btv_loss,
    d_hinge_loss,
    g_hinge_loss,
    reconstruction_loss,
)
from napari_lesionmix.harmonize.model import Discriminator, Generator, count_parameters  # noqa: E402

TINY = ModelConfig(base_channels=4, depth=2, disc_channels=4, disc_layers=2)


def _cube_mask(n=8, lo=2, hi=5, batch=2):
    m = torch.zeros(batch, 1, n, n, n)
    m[:, :, lo:hi, lo:hi, lo:hi] = 1.0
    return m


def test_masked_mean_std_matches_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, 6, generator=g)
    m = _cube_mask(6, 1, 4)
    mean, std = masked_mean_std(x, 1 - m)
    xb = x.numpy()[0, 1][(1 - m.numpy()[0, 0]) > 0]
    assert mean.shape == (2, 3, 1, 1, 1)
    assert mean[0, 1].item() == pytest.approx(xb.mean(), abs=1e-4)
    assert std[0, 1].item() == pytest.approx(xb.std(), abs=1e-3)


def test_arh_shapes_and_gradients():
    torch.manual_seed(0)
    arh = ARH(4)
    x = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    m = _cube_mask()
    y = arh(x, m)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in arh.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_arh_mask_is_resized_to_the_features():
    arh = ARH(2)
    y = arh(torch.randn(1, 2, 4, 4, 4), _cube_mask(8, 2, 6, batch=1))
    assert y.shape == (1, 2, 4, 4, 4)


def test_arh_background_passes_through_and_sets_the_foreground_style():
    torch.manual_seed(1)
    arh = ARH(3).eval()
    m = _cube_mask(batch=1)
    x = torch.randn(1, 3, 8, 8, 8)
    y = arh(x, m)
    # Foreground values do not leak into the background output (Fb is normalised by background stats only).
    x2 = x + 5.0 * m
    y2 = arh(x2, m)
    bg = (m == 0).expand_as(y)
    assert torch.allclose(y[bg], y2[bg], atol=1e-5)
    # The background's style (mu, sigma of Eqs. 7-8) steers the foreground output.
    x3 = torch.where(m > 0, x, 3.0 * x + 2.0)
    y3 = arh(x3, m)
    fg = (m > 0).expand_as(y)
    assert not torch.allclose(y[fg], y3[fg], atol=1e-3)


def test_generator_is_identity_at_init_and_never_touches_the_background():
    torch.manual_seed(0)
    gen = Generator(TINY)
    x = torch.rand(2, 1, 16, 16, 16)
    m = _cube_mask(16, 5, 11)
    assert torch.equal(gen(x, m), x)  # zero-initialised head: I^ = I~ at the start
    torch.nn.init.normal_(gen.head.weight)
    out = gen(x, m)
    assert out.shape == x.shape
    assert torch.equal(out[m.expand_as(x) == 0], x[m.expand_as(x) == 0])
    assert not torch.equal(out, x)


def test_generator_multichannel_and_discriminator_shapes():
    cfg = ModelConfig(in_channels=2, base_channels=4, depth=2, disc_channels=4, disc_layers=2)
    gen, disc = Generator(cfg), Discriminator(cfg)
    x = torch.rand(1, 2, 16, 16, 16)
    m = _cube_mask(16, 4, 9, batch=1)
    assert gen(x, m).shape == x.shape
    assert disc(x, x, m).shape == (1, 1, 4, 4, 4)
    assert count_parameters(gen) > 0 and count_parameters(disc) > 0


def test_boundary_band_is_dilation_minus_erosion():
    m = torch.zeros(1, 1, 12, 12, 12)
    m[0, 0, 3:9, 4:8, 2:10] = 1
    band = boundary_band(m, 1)[0, 0].numpy() > 0
    mn = m[0, 0].numpy() > 0
    cube = np.ones((3, 3, 3), bool)
    expected = ndi.binary_dilation(mn, cube) & ~ndi.binary_erosion(mn, cube, border_value=1)
    assert np.array_equal(band, expected)


def test_btv_loss_matches_eq5():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 1, 6, 6, 6, generator=g)
    band = torch.zeros_like(img)
    band[0, 0, 2, 3, 1] = 1
    band[0, 0, 4, 1, 4] = 1
    a = img[0, 0].numpy()
    total = 0.0
    for i, j, k in [(2, 3, 1), (4, 1, 4)]:
        total += abs(a[i + 1, j, k] - a[i, j, k]) + abs(a[i, j + 1, k] - a[i, j, k]) + abs(a[i, j, k + 1] - a[i, j, k])
    assert btv_loss(img, band).item() == pytest.approx(total / img.numel(), rel=1e-5)
    assert btv_loss(torch.full_like(img, 0.3), torch.ones_like(img)).item() == 0.0


def test_reconstruction_and_hinge_losses():
    a, b = torch.zeros(1, 1, 2, 2, 2), torch.full((1, 1, 2, 2, 2), 0.5)
    assert reconstruction_loss(a, b).item() == pytest.approx(0.5)
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # E[max(0, 1 - D(I))] + E[max(0, 1 + D(I^))] = (0 + 0.5)/2 + (0 + 1)/2
    assert d_hinge_loss(real, fake).item() == pytest.approx(0.75)
    assert g_hinge_loss(fake).item() == pytest.approx(1.0)


def test_metrics_follow_their_definitions():
    rng = np.random.default_rng(0)
    target = rng.random((1, 6, 6, 6))
    pred = target.copy()
    mask = np.zeros((1, 6, 6, 6), bool)
    mask[0, 2:4, 2:4, 2:4] = True
    pred[mask] += 0.1
    assert mae(pred, target) == pytest.approx(0.1 * 8 / 216)
    assert fmae(pred, target, mask) == pytest.approx(0.1)
    assert fpsnr(pred, target, mask) == pytest.approx(20.0)
    assert psnr(pred, target) == pytest.approx(10 * np.log10(216 / 8 / 0.01))
    assert psnr(target, target) == float("inf")
    with pytest.raises(LesionMixError):
        fmae(pred, target, np.zeros_like(mask))
    with pytest.raises(LesionMixError):
        mae(pred, target[..., :3])


def test_resolve_device_falls_back_to_cpu(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.warns(RuntimeWarning, match="CUDA was requested"):
        assert resolve_device("cuda").type == "cpu"
    with pytest.warns(RuntimeWarning, match="MPS was requested"):
        assert resolve_device("mps").type == "cpu"
    with pytest.raises(LesionMixError, match="tpu"):
        resolve_device("tpu")


def test_resolve_device_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("auto").type == "cuda"


def test_import_does_not_load_torch():
    code = (
        "import sys, numpy as np\n"
        "import napari_lesionmix.harmonize as h\n"
        "img = np.ones((1, 6, 6, 6), np.float32); m = np.zeros((6, 6, 6), bool); m[2:4, 2:4, 2:4] = True\n"
        "h.harmonize(img, m, method='hm'); h.fmae(img, img, m[None]); h.TrainConfig()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_on_cuda_matches_cpu():
    torch.manual_seed(0)
    gen = Generator(TINY)
    torch.nn.init.normal_(gen.head.weight, std=0.1)
    x = torch.rand(2, 1, 16, 16, 16)
    m = _cube_mask(16, 5, 11)
    cpu = gen(x, m)
    gpu = gen.cuda()(x.cuda(), m.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)
