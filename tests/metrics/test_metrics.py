import numpy as np
import pytest
import torch

from ipmn_lightning.metrics.collections import (
    ExtractionSuccessRate,
    ImagePairMetrics,
    NormalizedCorrelation,
    SourceExtractionMetrics,
)
from ipmn_lightning.metrics.functional import normalized_correlation, quantize_8bit, rgb_to_y


def numpy_nc(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.sqrt((a**2).sum() * (b**2).sum()))


def test_nc_matches_numpy():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 8, 8, generator=g)
    x = torch.rand(4, 3, 8, 8, generator=g)
    nc = normalized_correlation(x, w)
    for i in range(4):
        assert nc[i].item() == pytest.approx(numpy_nc(x[i].numpy(), w.numpy()), rel=1e-6)
    assert normalized_correlation(w[None], w).item() == pytest.approx(1.0)


def test_nc_of_white_blank_is_mean_over_rms():
    w = torch.rand(3, 8, 8)
    blank = torch.ones(1, 3, 8, 8)
    expected = w.mean() / w.square().mean().sqrt()
    assert normalized_correlation(blank, w).item() == pytest.approx(expected.item(), rel=1e-6)


def test_centered_nc_is_pearson():
    w = torch.rand(3, 4, 4)
    x = torch.rand(1, 3, 4, 4)
    pearson = np.corrcoef(x.flatten().numpy(), w.flatten().numpy())[0, 1]
    assert normalized_correlation(x, w, centered=True).item() == pytest.approx(pearson, rel=1e-5)


def test_success_rate_counts_threshold():
    w = torch.rand(3, 8, 8)
    batch = torch.stack([w, w, torch.ones_like(w) - w, w * 0.5])  # NC 1, 1, low, 1
    metric = ExtractionSuccessRate(0.95)
    metric.update(batch[:2], w)
    metric.update(batch[2:], w)
    nc = normalized_correlation(batch, w)
    assert metric.compute().item() == pytest.approx((nc > 0.95).float().mean().item())
    mean = NormalizedCorrelation()
    mean.update(batch, w)
    assert mean.compute().item() == pytest.approx(nc.mean().item(), rel=1e-6)


def test_quantize_and_y():
    x = torch.tensor([-0.1, 0.5, 1.2, 0.1234]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    q = quantize_8bit(x)
    assert q.min() >= 0 and q.max() <= 1
    assert torch.allclose(q * 255, (q * 255).round())
    white = rgb_to_y(torch.ones(1, 3, 2, 2))
    assert torch.allclose(white, torch.full_like(white, 235 / 255))


def test_image_pair_metrics_perfect_and_names():
    metrics = ImagePairMetrics({"recovered": ("a", "b")}, prefix="val/", lpips_net=None)
    a = torch.rand(2, 3, 16, 16)
    noisy = (a + 0.01 * torch.randn_like(a)).clamp(0, 1)
    metrics.update({"a": a, "b": noisy})
    metrics.update({"a": a, "b": quantize_8bit(noisy)}, suffix="_q8")
    names = dict(metrics.items())
    assert "val/psnr_recovered" in names and "val/ssim_y_recovered_q8" in names
    assert 35 < names["val/psnr_recovered"].compute().item() < 45


def test_lpips_skipped_without_cached_weights():
    with pytest.warns(UserWarning, match="LPIPS"):
        metrics = ImagePairMetrics({"p": ("a", "b")}, lpips_net="alex")
    assert not any("lpips" in n for n, _ in metrics.items())


def test_source_metrics_names():
    m = SourceExtractionMetrics(["masked_face"], ["mask"], prefix="val/")
    w = torch.rand(3, 8, 8)
    m.update("masked_face", w[None].repeat(2, 1, 1, 1), w)
    m.update("mask", torch.ones(2, 3, 8, 8) - w, w)
    values = m.compute()
    assert values["val/sr_e_masked_face"] == 1.0
    assert "val/fpr_mask" in values and "val/nc_mask" in values
