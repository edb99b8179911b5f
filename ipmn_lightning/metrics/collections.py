"""Watermark metrics of the paper (§4): normalized correlation and extraction success rate.

PSNR, SSIM and LPIPS come from torchmetrics; this module adds the watermark-specific metrics as
``torchmetrics.Metric`` subclasses so that they accumulate correctly across batches and DDP ranks.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

from ipmn_lightning.core.hub import hub_cache_file
from ipmn_lightning.metrics.functional import NC_THRESHOLD, normalized_correlation, rgb_to_y

__all__ = ["ExtractionSuccessRate", "ImagePairMetrics", "NormalizedCorrelation", "SourceExtractionMetrics"]


class NormalizedCorrelation(Metric):
    """Mean normalized correlation between extracted watermarks and the reference watermark.

    Args:
        centered: use the mean-centred (Pearson) NC.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, centered: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.centered = centered
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, extracted: Tensor, watermark: Tensor) -> None:
        """Add a batch: ``extracted`` (B, C, H, W), ``watermark`` (C, H, W) or (B, C, H, W)."""
        nc = normalized_correlation(extracted, watermark, centered=self.centered)
        self.total += nc.double().sum()
        self.count += nc.numel()

    def compute(self) -> Tensor:
        """Mean NC over every image seen."""
        return (self.total / self.count.clamp_min(1)).float()


class ExtractionSuccessRate(Metric):
    """SR_E: the share of images whose extracted watermark has NC above ``threshold`` (paper §4).

    On clean inputs (which should give the blank image) the same quantity is the false-positive rate.

    Args:
        threshold: NC above which an extraction counts as successful.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = NC_THRESHOLD, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("hits", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, extracted: Tensor, watermark: Tensor) -> None:
        """Add a batch: ``extracted`` (B, C, H, W), ``watermark`` (C, H, W) or (B, C, H, W)."""
        nc = normalized_correlation(extracted, watermark)
        self.hits += (nc > self.threshold).sum()
        self.count += nc.numel()

    def compute(self) -> Tensor:
        """Share of successful extractions, in [0, 1]."""
        return self.hits.double().div(self.count.clamp_min(1)).float()


def lpips_weights_cached(net: str) -> bool:
    """Whether the torchvision backbone LPIPS needs is already in the torch hub cache (never downloads)."""
    weights = {"alex": AlexNet_Weights, "vgg": VGG16_Weights, "squeeze": SqueezeNet1_1_Weights}[net]
    return hub_cache_file(weights.IMAGENET1K_V1).is_file()


class ImagePairMetrics(MetricCollection):
    """PSNR and SSIM (RGB and BT.601 Y) and optional LPIPS for named (reference, estimate) image pairs.

    Metric names are ``{prefix}{psnr|ssim|psnr_y|ssim_y|lpips}_{pair}{suffix}``, e.g. ``val/psnr_recovered_q8``.
    PSNR is averaged per image (as the paper's tables are). LPIPS runs only when its backbone weights are
    in the torch hub cache; otherwise it is skipped with one warning, never downloaded. The LPIPS network is
    kept out of the state dict so checkpoints do not depend on it: that is why this is not torchmetrics'
    ``LearnedPerceptualImagePatchSimilarity``, which registers its network as a submodule (one copy per pair and
    suffix, saved in every checkpoint) and downloads the backbone when it is not cached.

    Args:
        pairs: metric key -> (reference image name, estimate image name).
        prefix: prepended to every metric name.
        suffixes: variants updated separately (e.g. float and 8-bit quantised).
        lpips_net: LPIPS backbone, or ``None`` for no LPIPS.
    """

    def __init__(
        self,
        pairs: dict[str, tuple[str, str]],
        prefix: str = "",
        suffixes: tuple[str, ...] = ("", "_q8"),
        lpips_net: str | None = "alex",
    ) -> None:
        lpips_nets: list[torch.nn.Module] = []  # a list keeps the network out of the module tree
        if lpips_net is not None:
            if lpips_weights_cached(lpips_net):
                import lpips  # an optional heavy import, only when LPIPS runs

                lpips_nets.append(lpips.LPIPS(net=lpips_net, verbose=False).eval().requires_grad_(False))
            else:
                warnings.warn(
                    f"LPIPS ({lpips_net}) skipped: its torchvision backbone weights are not in {torch.hub.get_dir()}; "
                    "put them there (or set TORCH_HOME) to get LPIPS, they are never downloaded",
                    stacklevel=2,
                )
        metrics: dict[str, Metric] = {}
        for pair in pairs:
            for suffix in suffixes:
                for channel in ("", "_y"):
                    metrics[f"psnr{channel}_{pair}{suffix}"] = PeakSignalNoiseRatio(
                        data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)
                    )
                    metrics[f"ssim{channel}_{pair}{suffix}"] = StructuralSimilarityIndexMeasure(data_range=1.0)
                if lpips_nets:
                    metrics[f"lpips_{pair}{suffix}"] = MeanMetric()
        super().__init__(metrics, prefix=prefix, compute_groups=False)
        self.pairs, self._lpips = pairs, lpips_nets

    @torch.no_grad()
    def update(self, images: dict[str, Tensor], suffix: str = "") -> None:
        """Update every pair's metrics from ``images`` (name -> (B, 3, H, W) in [0, 1])."""
        for pair, (reference_name, estimate_name) in self.pairs.items():
            reference = images[reference_name].float()
            estimate = images[estimate_name].float().clamp(0, 1)
            for channel, ref, est in (
                ("", reference, estimate),
                ("_y", rgb_to_y(reference), rgb_to_y(estimate)),
            ):
                self[f"psnr{channel}_{pair}{suffix}"].update(est, ref)
                self[f"ssim{channel}_{pair}{suffix}"].update(est, ref)
            if self._lpips:
                net = self._lpips[0].to(reference.device)
                self[f"lpips_{pair}{suffix}"].update(net(estimate, reference, normalize=True).flatten())


class SourceExtractionMetrics(MetricCollection):
    """NC and SR_E of an extractor per image source (paper Tables 3, 4 and 10).

    Watermarked sources log ``{prefix}nc_{source}`` and ``{prefix}sr_e_{source}``; clean sources (which should
    give the blank image) log ``{prefix}nc_{source}`` and the false-positive rate ``{prefix}fpr_{source}``.

    Args:
        watermarked: names of the sources that carry the watermark (e.g. ``masked_face``).
        clean: names of the clean sources (e.g. ``protected``).
        prefix: prepended to every metric name.
        threshold: NC above which an extraction succeeds.
    """

    def __init__(
        self, watermarked: list[str], clean: list[str], prefix: str = "", threshold: float = NC_THRESHOLD
    ) -> None:
        metrics: dict[str, Metric] = {}
        for source in [*watermarked, *clean]:
            metrics[f"nc_{source}"] = NormalizedCorrelation()
            metrics[f"{'fpr' if source in clean else 'sr_e'}_{source}"] = ExtractionSuccessRate(threshold)
        super().__init__(metrics, prefix=prefix, compute_groups=False)
        self.clean = list(clean)

    def update(self, source: str, extracted: Tensor, watermark: Tensor) -> None:
        """Add R's outputs ``extracted`` (B, 3, H, W) on images of ``source``."""
        rate = "fpr" if source in self.clean else "sr_e"
        self[f"nc_{source}"].update(extracted, watermark)
        self[f"{rate}_{source}"].update(extracted, watermark)
