"""Phase 1 (paper §3.4.1): joint pre-training of the watermark embedder H, extractor R and discriminator D."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio

from ipmn_lightning.attacks.distortions import RandomDistortion, jpeg
from ipmn_lightning.data.watermark import blank_nc, default_watermark, load_watermark
from ipmn_lightning.losses import discriminator_loss, watermark_embedding_loss, watermark_extracting_loss
from ipmn_lightning.metrics.collections import ExtractionSuccessRate, NormalizedCorrelation
from ipmn_lightning.metrics.functional import NC_THRESHOLD
from ipmn_lightning.modules.base import IPMNModule
from ipmn_lightning.nets.discriminator import PatchDiscriminator
from ipmn_lightning.nets.embedder import WatermarkEmbedder
from ipmn_lightning.nets.extractor import WatermarkExtractor
from ipmn_lightning.nets.init import init_normal_
from ipmn_lightning.nets.perceptual import VGGFeatures
from ipmn_lightning.phases import PHASE1


def extraction_metrics(prefix: str) -> tuple[MetricCollection, MetricCollection]:
    """NC/SR_E on watermarked inputs and NC/false-positive rate on clean inputs, keys under ``prefix``."""
    watermarked = MetricCollection(
        {
            "nc_watermarked": NormalizedCorrelation(),
            "nc_centered_watermarked": NormalizedCorrelation(centered=True),
            "sr_e_watermarked": ExtractionSuccessRate(),
        },
        prefix=prefix,
    )
    clean = MetricCollection({"nc_clean": NormalizedCorrelation(), "fpr_mask": ExtractionSuccessRate()}, prefix=prefix)
    return watermarked, clean


class WatermarkPretrainModule(IPMNModule):
    """Phase 1: H embeds the watermark in the mask, R extracts it (and a blank from clean masks), D judges.

    Loss: ℓ_IP = λ_wemd ℓ_wemd + λ_wext ℓ_wext (eq. 10) with ℓ_wemd of eqs. 11-14 and ℓ_wext of eqs. 15-18.
    H and R are stepped together on ℓ_IP; D is then stepped on the detached x_wm (DMW update order).

    Args:
        image_size: side of the square images (linked from the data module).
        watermark_path: image file of the owner's watermark w; ``None`` uses the built-in generated logo.
        ngf: base width of the U-Net H.
        num_downs: down-samplings of H; ``None`` derives them from ``image_size`` (7 at 256 px).
        residual_embedder: H predicts a logit-space correction of x_m instead of x_wm itself (not in the
            paper; converges much faster, used by the CPU demo).
        extractor_channels: width of R (128 in the DMW ``HidingRes``).
        extractor_dilations: dilations of R's residual blocks (nine blocks in the paper).
        discriminator_widths: widths of D's strided blocks.
        gan_mode: ``lsgan`` (DMW code) or ``bce`` (the log form of eq. 14).
        mse_scale: scale of every mean-reduced MSE term (1e4 in the DMW code).
        lambda_wemd: λ_wemd of eq. 10.
        lambda_wext: λ_wext of eq. 10.
        lambda_bs: λ_bs of eq. 11.
        lambda_vgg: λ_vgg of eq. 11.
        lambda_adv: λ_adv of eq. 11.
        lambda_wm: λ_wm of eq. 15.
        lambda_clean: λ_clean of eq. 15.
        lambda_cst: λ_cst of eq. 15.
        vgg_weights: VGG16 weights for ℓ_vgg: a torchvision weights name found in the torch hub cache
            (``IMAGENET1K_V1``), a local file, ``random`` (tests), or ``None`` to drop ℓ_vgg with a warning.
        vgg_layer: the VGG layer k of eq. 13.
        blank_value: value of the constant blank image x_clean (1 = white, as DMW's ``clean.png``).
        lr: Adam learning rate of H+R.
        lr_discriminator: Adam learning rate of D (defaults to ``lr``).
        betas: Adam betas.
        plateau_factor: ReduceLROnPlateau factor ("decrease by 0.2", §4).
        plateau_patience: ReduceLROnPlateau patience in validation epochs ("within 5", §4).
        gradient_clip_val: max gradient norm of each optimizer step (``None``: no clipping).
        nc_threshold: NC above which an extraction succeeds (0.95, §4).
        robust_extraction: add a second ℓ_wext (eqs. 15-18) on copies of x_wm and x_m after a random
            distortion of the kind images meet when shared (JPEG, resize, blur, noise, 8-bit rounding; see
            :class:`~ipmn_lightning.attacks.distortions.RandomDistortion`), so that R learns to read through them.
            Not in the paper; validation then also reports ``val/sr_e_jpeg75``.
        robust_p_clean: share of the distorted copies left undistorted (only 8-bit rounding).
        robust_jpeg_qualities: JPEG qualities drawn from.
        robust_embedder_gradient: scale of the gradient that reaches H through the distorted copies. 0 (default)
            leaves H's training as in the paper; 1 also teaches H to embed robustly, which costs image quality
            (the demo at 64 px fell from 33 to 19 dB PSNR(x_m, x_wm) after two epochs).
    """

    phase = PHASE1

    def __init__(
        self,
        image_size: int = 256,
        watermark_path: str | None = None,
        ngf: int = 64,
        num_downs: int | None = None,
        residual_embedder: bool = False,
        extractor_channels: int = 128,
        extractor_dilations: tuple[int, ...] = (2, 2, 2, 2, 4, 4, 4, 4, 1),
        discriminator_widths: tuple[int, ...] = (64, 128, 256, 512),
        gan_mode: Literal["lsgan", "bce"] = "lsgan",
        mse_scale: float = 1e4,
        lambda_wemd: float = 1.0,
        lambda_wext: float = 1.0,
        lambda_bs: float = 1.0,
        lambda_vgg: float = 1.0,
        lambda_adv: float = 0.01,
        lambda_wm: float = 1.0,
        lambda_clean: float = 1.0,
        lambda_cst: float = 1.0,
        vgg_weights: str | None = "IMAGENET1K_V1",
        vgg_layer: Literal["relu1_2", "relu2_2", "relu3_3", "relu4_3"] = "relu2_2",
        blank_value: float = 1.0,
        lr: float = 1e-4,
        lr_discriminator: float | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
        plateau_factor: float = 0.2,
        plateau_patience: int = 5,
        gradient_clip_val: float | None = None,
        nc_threshold: float = NC_THRESHOLD,
        robust_extraction: bool = False,
        robust_p_clean: float = 0.25,
        robust_jpeg_qualities: tuple[int, ...] = (50, 65, 75, 90),
        robust_embedder_gradient: float = 0.0,
    ) -> None:
        super().__init__(image_size)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.embedder = init_normal_(
            WatermarkEmbedder(image_size=image_size, ngf=ngf, num_downs=num_downs, residual=residual_embedder)
        )
        self.extractor = init_normal_(
            WatermarkExtractor(channels=extractor_channels, dilations=tuple(extractor_dilations))
        )
        self.discriminator = init_normal_(PatchDiscriminator(widths=tuple(discriminator_widths)))
        self.vgg: VGGFeatures | None = None
        if lambda_vgg > 0 and vgg_weights is None:
            self.warn_once("vgg_weights is None: the perceptual loss ℓ_vgg (eq. 13) is dropped")
        elif lambda_vgg > 0:
            self.vgg = VGGFeatures(None if vgg_weights == "random" else vgg_weights, layer=vgg_layer)

        watermark = load_watermark(watermark_path, image_size) if watermark_path else default_watermark(image_size)
        nc_blank = blank_nc(watermark, blank_value)
        if nc_blank >= nc_threshold:
            self.warn_once(
                f"NC between the blank image and the watermark {watermark_path} is {nc_blank:.3f} >= {nc_threshold}: "
                "a clean output would count as a successful extraction; "
                "use a watermark with darker or more varied colours"
            )
        self.register_buffer("watermark", watermark)
        self.register_buffer("blank", torch.full_like(watermark, blank_value))
        self.val_watermarked, self.val_clean = extraction_metrics("val/")
        self.test_watermarked, self.test_clean = extraction_metrics("test/")
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
        self.test_psnr = self.val_psnr.clone()
        self.distortion: RandomDistortion | None = None
        if robust_extraction:
            self.distortion = RandomDistortion(p_clean=robust_p_clean, jpeg_qualities=tuple(robust_jpeg_qualities))
            self.val_sr_e_jpeg = ExtractionSuccessRate(threshold=nc_threshold)

    def setup(self, stage: str) -> None:
        """Refuse an odd training batch size before the first step: ℓ_cst (eq. 18) pairs the batch's halves."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        batch_size = getattr(datamodule, "batch_size", None)
        if stage == "fit" and isinstance(batch_size, int) and batch_size % 2:
            raise ValueError(
                f"phase 1 needs an even batch size (the consistency loss, eq. 18, pairs the two halves of each "
                f"batch), got data.batch_size={batch_size}; use e.g. --data.batch_size={batch_size + 1}"
            )
        super().setup(stage)

    # ------------------------------------------------------------------ model
    def forward(self, mask: Tensor) -> Tensor:
        """Embed the watermark: x_wm = H(x_m, w) (eq. 2), (B, 3, H, W) in [0, 1]."""
        return self.embedder(mask, self.watermark)

    def extract(self, image: Tensor) -> Tensor:
        """Extract the watermark with R, (B, 3, H, W)."""
        return self.extractor(image)

    def ip_losses(self, mask: Tensor, watermarked_mask: Tensor, distort: bool = False) -> dict[str, Tensor]:
        """Every term of ℓ_IP (eqs. 10-18) for one batch; the total is under ``ip``.

        With ``distort`` and ``robust_extraction``, R also sees distorted copies of x_wm and x_m; their
        ℓ_wext is added to the total and reported under ``robust``.
        """
        hp = self.hparams
        fake_scores = self.discriminator(watermarked_mask) if hp.lambda_adv > 0 else None
        vgg = (self.vgg(watermarked_mask), self.vgg(mask)) if self.vgg is not None else None
        wemd = watermark_embedding_loss(
            watermarked_mask, mask, fake_scores, vgg,
            mse_scale=hp.mse_scale, lambda_bs=hp.lambda_bs, lambda_vgg=hp.lambda_vgg, lambda_adv=hp.lambda_adv,
            gan_mode=hp.gan_mode,
        )  # fmt: skip
        batch = torch.cat([watermarked_mask, mask])
        robust = distort and self.distortion is not None
        if robust:  # one pass of R over the clean batch and its distorted copy
            gamma = hp.robust_embedder_gradient
            carrier = watermarked_mask.detach().lerp(watermarked_mask, gamma) if gamma != 1 else watermarked_mask
            batch = torch.cat([batch, self.distortion(torch.cat([carrier, mask]))])
        extracted = self.extractor(batch)
        extracted_watermarked, extracted_clean, *distorted = extracted.chunk(4 if robust else 2)
        weights = dict(mse_scale=hp.mse_scale, lambda_wm=hp.lambda_wm, lambda_clean=hp.lambda_clean,
                       lambda_cst=hp.lambda_cst)  # fmt: skip
        wext = watermark_extracting_loss(extracted_watermarked, extracted_clean, self.watermark, self.blank, **weights)
        total = hp.lambda_wemd * wemd["wemd"] + hp.lambda_wext * wext["wext"]
        extra = {}
        if robust:
            extra["robust"] = watermark_extracting_loss(*distorted, self.watermark, self.blank, **weights)["wext"]
            total = total + hp.lambda_wext * extra["robust"]
        return {
            **wemd,
            **wext,
            **extra,
            "ip": total,
            "extracted_watermarked": extracted_watermarked.detach(),
            "extracted_clean": extracted_clean.detach(),
        }

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One H+R step on ℓ_IP, then one D step on the detached watermarked mask."""
        opt_hr, opt_d = self.optimizers()
        mask = batch["mask"]
        with self.toggled_optimizer(opt_hr):
            watermarked_mask = self.embedder(mask, self.watermark)
            losses = self.ip_losses(mask, watermarked_mask, distort=True)
            opt_hr.zero_grad(set_to_none=True)
            self.manual_backward(losses["ip"])
            self.clip_gradients(opt_hr, self.hparams.gradient_clip_val, "norm")
            opt_hr.step()
        with self.toggled_optimizer(opt_d):
            loss_d = discriminator_loss(
                self.discriminator(mask), self.discriminator(watermarked_mask.detach()), self.hparams.gan_mode
            )
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            self.clip_gradients(opt_d, self.hparams.gradient_clip_val, "norm")
            opt_d.step()
        keys = ("ip", "bs", "vgg", "adv", "wm", "clean", "cst", "robust")
        logged = {f"train/{k}": losses[k].detach() for k in keys if k in losses}
        logged["train/loss_d"] = loss_d.detach()
        self.log_dict(logged, prog_bar=False, batch_size=mask.shape[0])
        self.log("train/loss", losses["ip"].detach(), prog_bar=True, batch_size=mask.shape[0])

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[ReduceLROnPlateau]]:
        """Adam for H+R and for D, each with ReduceLROnPlateau stepped by hand on the validation losses."""
        hp = self.hparams
        opt_hr = torch.optim.Adam(
            [*self.embedder.parameters(), *self.extractor.parameters()], lr=hp.lr, betas=tuple(hp.betas)
        )
        opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=hp.lr_discriminator or hp.lr, betas=tuple(hp.betas)
        )
        schedulers = [
            ReduceLROnPlateau(opt, mode="min", factor=hp.plateau_factor, patience=hp.plateau_patience)
            for opt in (opt_hr, opt_d)
        ]
        return [opt_hr, opt_d], schedulers

    def on_validation_epoch_end(self) -> None:
        """Step the plateau schedulers (manual optimization never steps them)."""
        if self.trainer.sanity_checking or self.trainer.state.fn != TrainerFn.FITTING:
            return  # `ipmn validate` has no optimizers or schedulers
        metrics = self.trainer.callback_metrics
        sch_hr, sch_d = self.lr_schedulers()
        if "val/loss" in metrics:
            sch_hr.step(metrics["val/loss"])
        if "val/loss_d" in metrics:
            sch_d.step(metrics["val/loss_d"])
        self.log("train/lr", sch_hr.optimizer.param_groups[0]["lr"], sync_dist=False)

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: Literal["val", "test"]) -> None:
        mask = batch["mask"]
        watermarked_mask = self.embedder(mask, self.watermark)
        if mask.shape[0] % 2:  # eq. 18 pairs batch halves; evaluate odd tails without it
            mask, watermarked_mask = mask[:-1], watermarked_mask[:-1]
        if mask.shape[0] == 0:
            return
        losses = self.ip_losses(mask, watermarked_mask)
        loss_d = discriminator_loss(
            self.discriminator(mask), self.discriminator(watermarked_mask), self.hparams.gan_mode
        )
        size = mask.shape[0]
        self.log(f"{stage}/loss", losses["ip"], sync_dist=True, batch_size=size, prog_bar=stage == "val")
        self.log(f"{stage}/loss_d", loss_d, sync_dist=True, batch_size=size)
        watermarked, clean = (
            (self.val_watermarked, self.val_clean) if stage == "val" else (self.test_watermarked, self.test_clean)
        )
        psnr = self.val_psnr if stage == "val" else self.test_psnr
        watermarked.update(losses["extracted_watermarked"], self.watermark)
        clean.update(losses["extracted_clean"], self.watermark)
        psnr.update(watermarked_mask, mask)
        self.log_dict(watermarked, batch_size=size)
        self.log_dict(clean, batch_size=size)
        self.log(f"{stage}/psnr_mask", psnr, batch_size=size, prog_bar=stage == "val")
        if stage == "val" and self.distortion is not None:
            self.val_sr_e_jpeg.update(self.extractor(jpeg(watermarked_mask, 75)), self.watermark)
            self.log("val/sr_e_jpeg75", self.val_sr_e_jpeg, batch_size=size)
        if batch_idx == 0 and stage == "val":
            self.log_image_grid(
                "val/images",
                [
                    mask,
                    watermarked_mask,
                    ((watermarked_mask - mask).abs() * 10).clamp(0, 1),
                    losses["extracted_watermarked"],
                    losses["extracted_clean"],
                ],
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """NC/SR_E on R(x_wm), NC/false positives on R(x_m), PSNR(x_m, x_wm), and an image grid."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The validation metrics on the test split."""
        self._evaluate(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Watermarked masks and the watermarks R extracts from them."""
        watermarked_mask = self.embedder(batch["mask"], self.watermark)
        return {
            "index": batch["index"],
            "watermarked_mask": watermarked_mask,
            "extracted": self.extractor(watermarked_mask),
        }
