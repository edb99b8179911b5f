from __future__ import annotations

import shutil

import pytest
import torch

from ipmn_lightning.nets.wavelet import HaarDWT, HaarIWT, haar_dwt, haar_iwt, make_wavelet


def _slicing_dwt(x: torch.Tensor) -> torch.Tensor:
    # HiNet's formulation (github.com/TomTomTommi/HiNet @ 5c2682a, modules/Unet_common.py): the reference for the
    # layout and the signs.
    x01 = x[:, :, 0::2, :] / 2
    x02 = x[:, :, 1::2, :] / 2
    x1, x2 = x01[..., 0::2], x02[..., 0::2]
    x3, x4 = x01[..., 1::2], x02[..., 1::2]
    return torch.cat((x1 + x2 + x3 + x4, -x1 - x2 + x3 + x4, -x1 + x2 - x3 + x4, x1 - x2 - x3 + x4), 1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_round_trip(dtype, tol):
    x = torch.rand(2, 3, 16, 12, generator=_gen(), dtype=torch.float64).to(dtype)
    y = haar_dwt(x)
    assert y.shape == (2, 12, 8, 6)
    assert torch.allclose(haar_iwt(y), x, atol=tol, rtol=0)
    # and the other way round: the transform is a bijection of coefficient space
    c = torch.randn(2, 12, 8, 6, generator=_gen(1), dtype=torch.float64).to(dtype)
    assert torch.allclose(haar_dwt(haar_iwt(c)), c, atol=tol * 10, rtol=0)


def test_matches_hinet_slicing():
    x = torch.randn(3, 2, 10, 14, generator=_gen(), dtype=torch.float64)
    assert torch.allclose(haar_dwt(x), _slicing_dwt(x), atol=1e-14, rtol=0)


def test_energy_preserved():
    x = torch.randn(2, 3, 16, 16, generator=_gen(), dtype=torch.float64)
    assert torch.allclose(haar_dwt(x).square().sum(), x.square().sum(), rtol=1e-12)


def test_constant_image_ll_is_twice_the_value():
    c = 0.37
    y = haar_dwt(torch.full((1, 3, 8, 8), c, dtype=torch.float64))
    assert torch.allclose(y[:, :3], torch.full_like(y[:, :3], 2 * c), atol=1e-14)
    assert torch.allclose(y[:, 3:], torch.zeros_like(y[:, 3:]), atol=1e-14)


def test_subband_layout_on_hand_made_image():
    # a = x[0, 0], b = x[1, 0], c = x[0, 1], d = x[1, 1]; two channels, the second scaled by 10
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    img = torch.tensor([[a, c], [b, d]], dtype=torch.float64)
    x = torch.stack((img, 10 * img)).unsqueeze(0)  # (1, 2, 2, 2)
    y = haar_dwt(x).flatten()
    ll = (a + b + c + d) / 2
    hl = (-a - b + c + d) / 2
    lh = (-a + b - c + d) / 2
    hh = (a - b - c + d) / 2
    expected = torch.tensor([ll, 10 * ll, hl, 10 * hl, lh, 10 * lh, hh, 10 * hh], dtype=torch.float64)
    assert torch.allclose(y, expected, atol=1e-14)
    assert torch.allclose(haar_iwt(y.view(1, 8, 1, 1)), x, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_follows_dtype_and_device(dtype):
    x = torch.rand(1, 3, 4, 4).to(dtype)
    y = haar_dwt(x)
    assert y.dtype == dtype and y.device == x.device
    z = haar_iwt(y)
    assert z.dtype == dtype and z.device == x.device


def test_modules_and_non_contiguous_input():
    dwt, iwt = HaarDWT(), HaarIWT()
    assert len(dwt.state_dict()) == 0 and len(iwt.state_dict()) == 0
    x = torch.rand(2, 3, 8, 8, generator=_gen()).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(iwt(dwt(x)), x, atol=1e-6)
    xt = torch.rand(2, 3, 8, 8, generator=_gen()).transpose(-1, -2)
    assert torch.allclose(dwt(xt), _slicing_dwt(xt), atol=1e-6)


def test_odd_size_raises():
    with pytest.raises(ValueError, match="even height and width"):
        haar_dwt(torch.rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match="even height and width"):
        haar_dwt(torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="multiple of 4"):
        haar_iwt(torch.rand(1, 6, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        haar_dwt(torch.rand(3, 8, 8))


def test_gradcheck():
    x = torch.rand(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(haar_dwt, (x,))
    assert torch.autograd.gradgradcheck(haar_dwt, (x,))
    y = torch.rand(1, 8, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(haar_iwt, (y,))
    assert torch.autograd.gradgradcheck(haar_iwt, (y,))


def test_make_wavelet_default_is_builtin():
    dwt, iwt = make_wavelet()
    assert isinstance(dwt, HaarDWT) and isinstance(iwt, HaarIWT)
    with pytest.raises(ValueError, match="choose"):
        make_wavelet("db2")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_agrees_with_pytorch_wavelets(dtype):
    pytest.importorskip("pytorch_wavelets")
    dwt, iwt = make_wavelet("pytorch_wavelets")
    assert len(dwt.state_dict()) == 0 and len(iwt.state_dict()) == 0  # checkpoints are backend-free
    x = torch.rand(2, 3, 8, 6, generator=_gen(), dtype=torch.float64).to(dtype)
    y = dwt(x)
    assert y.dtype == dtype and y.shape == (2, 12, 4, 3)
    # pytorch_wavelets keeps its filters in float32 precision, hence 1e-6
    assert torch.allclose(y, haar_dwt(x), atol=1e-6, rtol=0)
    assert torch.allclose(iwt(haar_dwt(x)), x, atol=1e-6, rtol=0)
    assert torch.allclose(iwt(y), x, atol=1e-6, rtol=0)


def _compile_available() -> bool:
    try:
        import torch._dynamo
    except Exception:
        return False
    return hasattr(torch, "compile")


@pytest.mark.skipif(not _compile_available(), reason="torch.compile unavailable")
def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    fn = torch.compile(lambda x: haar_iwt(haar_dwt(x) * 2.0), fullgraph=True, backend="aot_eager")
    x = torch.rand(2, 3, 8, 8, generator=_gen(), requires_grad=True)
    y = fn(x)
    y.sum().backward()
    assert torch.allclose(y, 2 * x, atol=1e-6)
    assert torch.allclose(x.grad, torch.full_like(x, 2.0))


@pytest.mark.slow
@pytest.mark.skipif(
    not _compile_available() or (shutil.which("c++") is None and shutil.which("g++") is None),
    reason="torch.compile or a C++ compiler for inductor unavailable",
)
def test_torch_compile_inductor():
    torch._dynamo.reset()
    dwt = torch.compile(haar_dwt, fullgraph=True)
    iwt = torch.compile(haar_iwt, fullgraph=True)
    x = torch.rand(2, 3, 8, 8, generator=_gen())
    assert torch.allclose(dwt(x), _slicing_dwt(x), atol=1e-6)
    assert torch.allclose(iwt(dwt(x)), x, atol=1e-6)
