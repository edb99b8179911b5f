"""Phase 3a (paper §3.3.1, eq. 9, §4.4.1): the attacker's stealing model, trained on black-box queries."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import ConstantLR, LinearLR, LRScheduler, SequentialLR
from torchmetrics.image import PeakSignalNoiseRatio

from ipmn_lightning.metrics.collections import ExtractionSuccessRate, NormalizedCorrelation
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.modules.base import IPMNModule, freeze
from ipmn_lightning.nets.stealing import build_stealer
from ipmn_lightning.phases import (
    PHASE3_STEAL,
    build,
    check_image_size,
    load_phase1,
    load_phase2,
    load_submodule,
    put_on_mask,
    watermark_shape,
)


class StealingAttackModule(IPMNModule):
    """Phase 3a: train a stealing model SM to imitate the black box, x_sm = SM(x_p, x_r) → x_wmf (eq. 9).

    The black box (frozen H, w and INN put-on) answers each query (x_p, x_r) with x_wmf for the batch's
    precomputed mask; the stealer only ever sees (x_p, x_r). Loss: plain L2 (paper §3.4.3).

    Args:
        image_size: side of the square images (linked from the data module).
        phase1_ckpt: phase-1 checkpoint; its extractor R measures how much watermark the stealer copied.
        phase2_ckpt: phase-2 checkpoint; gives H, w and the INN of the black box.
        stealer: the attacker's architecture (paper §4.4.1): ``cnet``, ``res9``, ``res16`` or ``unet``; or
            ``attn``, an image-to-image transformer the paper does not try (issue 24).
        ngf: base width of the stealer.
        res_block: ResNet block of ``res9``/``res16``: the standard two convolutions or the DMW code's one.
        quantize_queries: the attacker receives 8-bit images from the service (as PNG files).
        lr: Adam learning rate (1e-4, paper §4).
        betas: Adam betas (DMW).
        lr_schedule: ``constant``; ``linear_decay`` (the DMW/pix2pix schedule: constant, then linear to 0); or
            ``cosine`` (per optimizer step over ``trainer.max_steps``, a careful attacker's choice; issue 24).
        decay_epochs: epochs of linear decay at the end of training (``linear_decay`` only).
        target: what the imitated service answers. ``watermarked``: x_wmf, the IPMN service (the attack of
            §3.3.1); the other two make the *null models* of ``ipmn audit`` (issue 24), independent models that
            do the same job but never saw the owner's watermark: ``plain_inn``: the same INN putting x_p on the
            plain mask, f(x_p, x_m); ``mask``: the plain face swap x_m.
        loss: ``l2`` (paper §3.4.3) or ``l1`` (a careful attacker's: sharper imitations; issue 24).
        augment: the attacker augments its queries (random flips, shifts up to 1/8 of the side, brightness and
            contrast jitter of ±10%), the same transform on x_p, x_r and x_m, so the service's answer to the
            augmented query is the target.
    """

    phase = PHASE3_STEAL
    frozen_attributes = ("embedder", "inn", "extractor")

    def __init__(
        self,
        image_size: int = 256,
        phase1_ckpt: str | None = None,
        phase2_ckpt: str | None = None,
        stealer: Literal["cnet", "res9", "res16", "unet", "attn"] = "unet",
        ngf: int = 64,
        res_block: Literal["two_conv", "dmw_single_conv"] = "two_conv",
        quantize_queries: bool = True,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_schedule: Literal["constant", "linear_decay", "cosine"] = "constant",
        decay_epochs: int = 150,
        target: Literal["watermarked", "plain_inn", "mask"] = "watermarked",
        loss: Literal["l2", "l1"] = "l2",
        augment: bool = False,
    ) -> None:
        super().__init__(image_size)
        self.save_hyperparameters(ignore=["phase1_ckpt", "phase2_ckpt"])
        self.phase1_ckpt, self.phase2_ckpt = phase1_ckpt, phase2_ckpt
        extra = {"block": res_block} if stealer in ("res9", "res16") else {}
        self.stealer = build_stealer(stealer, image_size=image_size, ngf=ngf, **extra)
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
        self.val_nc = NormalizedCorrelation()
        self.val_sr_e = ExtractionSuccessRate()
        self.test_psnr, self.test_nc, self.test_sr_e = self.val_psnr.clone(), self.val_nc.clone(), self.val_sr_e.clone()

    # ------------------------------------------------------- frozen networks
    def build_frozen(self, config: dict[str, Any]) -> None:
        """Create the frozen black box (H, INN), the phase-1 R and the watermark buffer."""
        super().build_frozen(config)
        self.embedder = freeze(build("embedder", config["embedder"]))
        self.inn = freeze(build("inn", config["inn"]))
        self.extractor = freeze(build("extractor", config["extractor"]))
        self.position = config.get("position", "mask")  # where phase 2 put the watermark (phases.put_on_mask)
        self.register_buffer("watermark", torch.zeros(watermark_shape(config["embedder"])))

    def load_frozen(self) -> None:
        """Load the black box from ``phase2_ckpt`` and R from ``phase1_ckpt``."""
        for argument in ("phase1_ckpt", "phase2_ckpt"):
            if getattr(self, argument) is None:
                raise ValueError(
                    f"StealingAttackModule needs model.init_args.{argument} (the {argument[:6]} checkpoint)"
                )
        configs1, state1 = load_phase1(self.phase1_ckpt)
        configs2, state2 = load_phase2(self.phase2_ckpt)
        check_image_size(configs2["embedder"]["image_size"], self.image_size, "phase2_ckpt")
        self.build_frozen({**configs2, "extractor": configs1["extractor"]})
        load_submodule(self.embedder, state2, "embedder", f"phase2_ckpt {self.phase2_ckpt}")
        load_submodule(self.inn, state2, "inn", f"phase2_ckpt {self.phase2_ckpt}")
        load_submodule(self.extractor, state1, "extractor", f"phase1_ckpt {self.phase1_ckpt}")
        self.watermark.copy_(state2["watermark"])

    # ------------------------------------------------------------------ model
    @torch.no_grad()
    def query_black_box(self, protected: Tensor, mask: Tensor) -> Tensor:
        """The service's answer to a query, (B, 3, H, W) in [0, 1] (8-bit when ``quantize_queries``).

        x_wmf for ``target="watermarked"``; the null models' targets f(x_p, x_m) or x_m otherwise.
        """
        target = self.hparams.get("target", "watermarked")
        if target == "mask":
            answer = mask
        elif target == "plain_inn":
            answer, _ = put_on_mask(self.inn, self.embedder, self.watermark, protected, mask, "none")
        else:
            answer, _ = put_on_mask(self.inn, self.embedder, self.watermark, protected, mask, self.position)
        masked_face = answer
        return quantize_8bit(masked_face) if self.hparams.quantize_queries else masked_face.clamp(0, 1)

    def forward(self, protected: Tensor, replacement: Tensor) -> Tensor:
        """x_sm = SM(x_p, x_r), (B, 3, H, W) in [0, 1]."""
        return self.stealer(protected, replacement)

    def augment_queries(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """The careful attacker's augmentation (``augment``): one random transform per sample, on x_p, x_r, x_m.

        Returns:
            (protected, replacement, mask), each (B, 3, H, W) in [0, 1].
        """
        images = torch.stack([batch["protected"], batch["replacement"], batch["mask"]])  # (3, B, 3, H, W)
        _, b, _, h, w = images.shape
        flip = torch.rand(b, device=images.device) < 0.5
        images = torch.where(flip[None, :, None, None, None], images.flip(-1), images)
        limit = max(h // 8, 1)
        shifted = torch.empty_like(images)
        for i in range(b):  # a shift with reflected borders: the face moves, the image keeps its size
            dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,)))
            padded = F.pad(images[:, i], (limit, limit, limit, limit), mode="reflect")
            shifted[:, i] = padded[..., limit + dy : limit + dy + h, limit + dx : limit + dx + w]
        gain = 1 + 0.2 * (torch.rand(1, b, 1, 1, 1, device=images.device) - 0.5)
        offset = 0.2 * (torch.rand(1, b, 1, 1, 1, device=images.device) - 0.5)
        mean = shifted.mean(dim=(2, 3, 4), keepdim=True)
        jittered = ((shifted - mean) * gain + mean + offset * mean).clamp(0, 1)
        return jittered[0], jittered[1], jittered[2]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """L2 (or L1) between the stealer's output and the black box's answer to the (augmented) query."""
        if self.hparams.get("augment", False):
            protected, replacement, mask = self.augment_queries(batch)
        else:
            protected, replacement, mask = batch["protected"], batch["replacement"], batch["mask"]
        target = self.query_black_box(protected, mask)
        stolen = self.stealer(protected, replacement)
        loss = F.l1_loss(stolen, target) if self.hparams.get("loss", "l2") == "l1" else F.mse_loss(stolen, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=stolen.shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam; optionally the DMW constant-then-linear-decay schedule, stepped per epoch."""
        hp = self.hparams
        opt = torch.optim.Adam(self.stealer.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        if hp.lr_schedule == "constant":
            return {"optimizer": opt}
        if hp.lr_schedule == "cosine":
            steps = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None
            if steps is None:
                raise ValueError("lr_schedule=cosine needs trainer.max_steps (the schedule runs over the steps)")
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        total = (
            self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 2 * hp.decay_epochs
        )
        constant = max(total - hp.decay_epochs, 0)
        scheduler: LRScheduler = SequentialLR(
            opt,
            [ConstantLR(opt, factor=1.0, total_iters=constant), LinearLR(opt, 1.0, 1e-3, total_iters=hp.decay_epochs)],
            milestones=[constant],
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Any], stage: Literal["val", "test"]) -> None:
        target = self.query_black_box(batch["protected"], batch["mask"])
        stolen = self.stealer(batch["protected"], batch["replacement"])
        psnr, nc, sr_e = (
            (self.val_psnr, self.val_nc, self.val_sr_e)
            if stage == "val"
            else (self.test_psnr, self.test_nc, self.test_sr_e)
        )
        extracted = self.extractor(stolen)
        psnr.update(stolen, target)
        nc.update(extracted, self.watermark)
        sr_e.update(extracted, self.watermark)
        size = stolen.shape[0]
        self.log(f"{stage}/loss", F.mse_loss(stolen, target), sync_dist=True, batch_size=size)
        self.log(f"{stage}/psnr_stolen", psnr, batch_size=size, prog_bar=stage == "val")
        self.log(f"{stage}/nc_stolen", nc, batch_size=size)
        self.log(f"{stage}/sr_e_stolen", sr_e, batch_size=size)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """PSNR(x_sm, x_wmf) and the phase-1 extractor's NC/SR_E on x_sm."""
        self._evaluate(batch, "val")
        if batch_idx == 0:
            target = self.query_black_box(batch["protected"], batch["mask"])
            stolen = self.stealer(batch["protected"], batch["replacement"])
            self.log_image_grid("val/images", [batch["protected"], batch["replacement"], target, stolen,
                                               self.extractor(stolen)])  # fmt: skip

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The validation metrics on the test split."""
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """The stealer's outputs."""
        return {"index": batch["index"], "stolen": self.stealer(batch["protected"], batch["replacement"])}
