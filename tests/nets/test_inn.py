from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ipmn_lightning.nets.inn import CouplingBlock, DenseBlock, InvertibleMaskNet
from ipmn_lightning.nets.wavelet import haar_dwt


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 2, size: int = 16, dtype=torch.float64, seed: int = 0):
    g = _gen(seed)
    return (
        torch.rand(b, 3, size, size, generator=g, dtype=dtype),
        torch.rand(b, 3, size, size, generator=g, dtype=dtype),
    )


def _randomise(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    # Non-identity weights everywhere, conv5 included.
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def test_parameter_count_matches_hinet():
    net = InvertibleMaskNet(num_blocks=16, growth=32)
    assert sum(p.numel() for p in net.parameters()) == 4_050_240
    assert sum(p.numel() for p in DenseBlock(12, 12, 32).parameters()) == 84_380


def test_state_dict_layout_is_plain_per_subnet():
    keys = set(InvertibleMaskNet(num_blocks=2).state_dict())
    expected = {
        f"blocks.{i}.{net}.conv{k}.{p}"
        for i in range(2)
        for net in ("phi", "rho", "eta")
        for k in range(1, 6)
        for p in ("weight", "bias")
    }
    assert keys == expected


def test_dense_block_structure():
    block = DenseBlock(4, 3, growth=5).double()
    _randomise(block)
    x = torch.randn(2, 4, 6, 6, generator=_gen(), dtype=torch.float64)
    convs = [block.conv1, block.conv2, block.conv3, block.conv4, block.conv5]
    feats = [x]
    for conv in convs[:4]:
        feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.01))
    expected = convs[4](torch.cat(feats, 1))
    for impl in ("concat", "split"):
        assert torch.allclose(block(x, impl), expected, atol=1e-12)
    assert [c.in_channels for c in convs] == [4, 9, 14, 19, 24]
    assert [c.out_channels for c in convs] == [5, 5, 5, 5, 3]


def test_identity_at_initialisation():
    net = InvertibleMaskNet(num_blocks=2).double()
    protected, watermarked_mask = _images(size=8)
    masked_face, lost = net.put_on(protected, watermarked_mask)
    assert masked_face.shape == (2, 3, 8, 8) and lost.shape == (2, 12, 4, 4)
    assert torch.equal(lost, haar_dwt(protected))
    assert torch.allclose(masked_face, watermarked_mask, atol=1e-14)
    recovered_face, recovered_mask = net.put_off(masked_face, z=lost)
    assert torch.allclose(recovered_face, protected, atol=1e-14)
    assert torch.allclose(recovered_mask, watermarked_mask, atol=1e-14)
    # the untrained parameters are small but not zero, except every conv5
    for name, p in net.named_parameters():
        if ".conv5." in name:
            assert torch.count_nonzero(p) == 0
        else:
            assert 0 < p.abs().max() < 0.1


def test_reset_parameters_restores_identity():
    net = InvertibleMaskNet(num_blocks=2, init_scale=0.02).double()
    _randomise(net)
    net.reset_parameters()
    protected, watermarked_mask = _images()
    masked_face, lost = net.put_on(protected, watermarked_mask)
    assert torch.allclose(masked_face, watermarked_mask, atol=1e-14)
    assert torch.equal(lost, haar_dwt(protected))
    std = torch.cat([p.flatten() for n, p in net.named_parameters() if ".conv5." not in n]).std()
    assert 0.015 < std < 0.025


def test_put_on_put_off_round_trip_random_weights():
    net = InvertibleMaskNet(num_blocks=16).double()
    # std 0.02 moves x_wmf far from x_wm (~2 in max abs) while keeping 16 blocks well conditioned
    _randomise(net, std=0.02)
    protected, watermarked_mask = _images()
    with torch.no_grad():
        masked_face, lost = net.put_on(protected, watermarked_mask)
        recovered_face, recovered_mask = net.put_off(masked_face, z=lost)
    assert (masked_face - watermarked_mask).abs().max() > 0.5  # really not the identity
    assert (lost - haar_dwt(protected)).abs().max() > 0.5
    assert torch.allclose(recovered_face, protected, atol=1e-5, rtol=0)
    assert torch.allclose(recovered_mask, watermarked_mask, atol=1e-5, rtol=0)


def test_wavelet_level_api_is_inverse():
    net = InvertibleMaskNet(num_blocks=2, growth=8).double()
    _randomise(net)
    g = _gen(3)
    host = torch.randn(2, 12, 4, 4, generator=g, dtype=torch.float64)
    hidden = torch.randn(2, 12, 4, 4, generator=g, dtype=torch.float64)
    host_out, hidden_out = net.forward_wavelet(host, hidden)
    assert host_out.is_contiguous() and hidden_out.is_contiguous()
    host_back, hidden_back = net.inverse_wavelet(host_out, hidden_out)
    assert torch.allclose(host_back, host, atol=1e-10)
    assert torch.allclose(hidden_back, hidden, atol=1e-10)
    # put_on is DWT -> forward_wavelet -> IWT on the host; the lost matrix stays in the wavelet domain
    protected, watermarked_mask = _images(size=8)
    masked_face, lost = net.put_on(protected, watermarked_mask)
    host_w, lost_w = net.forward_wavelet(haar_dwt(watermarked_mask), haar_dwt(protected))
    assert torch.allclose(haar_dwt(masked_face), host_w, atol=1e-12)
    assert torch.allclose(lost, lost_w, atol=1e-12)


def test_coupling_block_matches_equations():
    block = CouplingBlock(12, 12, clamp=2.0, growth=8).double()
    _randomise(block, std=0.1)
    g = _gen(1)
    host = torch.randn(1, 12, 4, 4, generator=g, dtype=torch.float64)
    hidden = torch.randn(1, 12, 4, 4, generator=g, dtype=torch.float64)
    host2, hidden2 = block(host, hidden)
    expected_host = host + block.phi(hidden, "concat")
    s = block.rho(expected_host, "concat")
    expected_hidden = hidden * torch.exp(2 * 2.0 * (torch.sigmoid(s) - 0.5)) + block.eta(expected_host, "concat")
    assert torch.allclose(host2, expected_host, atol=1e-12)
    assert torch.allclose(hidden2, expected_hidden, atol=1e-12)
    host_back, hidden_back = block.inverse(host2, hidden2)
    assert torch.allclose(host_back, host, atol=1e-12)
    assert torch.allclose(hidden_back, hidden, atol=1e-12)


@pytest.mark.parametrize("clamp", [0.5, 2.0])
def test_clamp_bounds_the_scale(clamp):
    block = CouplingBlock(clamp=clamp).double()
    s = torch.tensor([-1e6, -30.0, -1.0, 0.0, 1.0, 30.0, 1e6], dtype=torch.float64)
    e = block.scale(s)
    assert torch.all(e >= math.exp(-clamp) - 1e-12) and torch.all(e <= math.exp(clamp) + 1e-12)
    assert torch.isclose(e[0], torch.tensor(math.exp(-clamp), dtype=torch.float64))
    assert torch.isclose(e[-1], torch.tensor(math.exp(clamp), dtype=torch.float64))
    assert e[3] == 1.0


def test_default_z_is_seedable_and_wavelet_shaped():
    net = InvertibleMaskNet(num_blocks=2)
    _randomise(net, std=0.02)
    masked_face = torch.rand(2, 3, 8, 8, generator=_gen())
    a = net.put_off(masked_face, generator=_gen(7))
    b = net.put_off(masked_face, generator=_gen(7))
    c = net.put_off(masked_face, generator=_gen(8))
    assert a[0].shape == (2, 3, 8, 8) and a[1].shape == (2, 3, 8, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # the default z is N(0, 1) in the wavelet domain, drawn with the given generator
    z = torch.randn(2, 12, 4, 4, generator=_gen(7))
    explicit = net.put_off(masked_face, z=z)
    assert torch.equal(a[0], explicit[0]) and torch.equal(a[1], explicit[1])
    assert net.sample_z(torch.empty(2, 12, 4, 4, dtype=torch.float64)).dtype == torch.float64


def test_bad_inputs_raise():
    net = InvertibleMaskNet(num_blocks=1)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="z must have"):
        net.put_off(x, z=torch.randn(1, 12, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        net.put_on(x, torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net.put_on(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="even"):
        net.put_on(torch.rand(1, 3, 7, 8), torch.rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match="impl"):
        InvertibleMaskNet(num_blocks=1, impl="fast")  # type: ignore[arg-type]


def _loss_and_grads(net: InvertibleMaskNet, protected, watermarked_mask, z):
    net.zero_grad()
    masked_face, lost = net.put_on(protected, watermarked_mask)
    recovered_face, recovered_mask = net.put_off(masked_face, z=z)
    loss = (
        3 * (recovered_face - protected).square().sum()
        + (recovered_mask - watermarked_mask).square().sum()
        + (masked_face - watermarked_mask).square().sum()
    )
    loss.backward()
    outs = [t.detach() for t in (masked_face, lost, recovered_face, recovered_mask)]
    return outs, [p.grad.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_split_fast_path_equals_concat_path(dtype, tol):
    concat = InvertibleMaskNet(num_blocks=3, growth=16, impl="concat").to(dtype)
    _randomise(concat, std=0.03)
    split = InvertibleMaskNet(num_blocks=3, growth=16, impl="split").to(dtype)
    split.load_state_dict(concat.state_dict())
    protected, watermarked_mask = _images(size=16, dtype=dtype)
    z = torch.randn(2, 12, 8, 8, generator=_gen(5), dtype=dtype)
    outs_c, grads_c = _loss_and_grads(concat, protected, watermarked_mask, z)
    outs_s, grads_s = _loss_and_grads(split, protected, watermarked_mask, z)
    for a, b in zip(outs_c, outs_s):
        assert a.is_contiguous() and b.is_contiguous()
        assert torch.allclose(a, b, atol=tol, rtol=tol)
    for gc, gs in zip(grads_c, grads_s):
        assert torch.allclose(gc, gs, atol=tol * gc.abs().max().item(), rtol=0)
    assert all(g.abs().sum() > 0 for g in grads_s)


def test_auto_impl_gives_same_result_as_concat_on_cpu():
    auto = InvertibleMaskNet(num_blocks=2, growth=8).double()
    _randomise(auto)
    concat = InvertibleMaskNet(num_blocks=2, growth=8, impl="concat").double()
    concat.load_state_dict(auto.state_dict())
    protected, watermarked_mask = _images(size=8)
    for a, b in zip(auto.put_on(protected, watermarked_mask), concat.put_on(protected, watermarked_mask)):
        assert torch.allclose(a, b, atol=1e-12)
    auto.impl = "concat"
    assert all(block.impl == "concat" for block in auto.blocks)
    with pytest.raises(ValueError, match="impl"):
        auto.impl = "fast"  # type: ignore[assignment]
