"""The HiDDeN baseline of paper §4.3.2 (Tables 8-9) as a phase-1 variant: HiDDeN's encoder is H, its decoder R.

IPMN compares itself with HiDDeN (Zhu et al., ECCV 2018) fused with the same putting-on/off INN: HiDDeN's
encoder embeds a bit message into the mask x_m (giving x_wm) in place of H, HiDDeN's decoder replaces R, the INN
of phase 2 is trained as usual on that x_wm, and SR_E is measured with the decoder on x_wmf, x'_wm and x_sm. The
paper reports mask PSNR 37.01 dB (Table 8) and SR_E 0 % on all three (Table 9): the message lives in x_m only.

This module trains the HiDDeN networks and writes a *phase-1* checkpoint, so that phase 2
(``--model.init_args.phase1_ckpt``), phase 3a/3b and ``ipmn evaluate`` take it unchanged:
:func:`~ipmn_lightning.phases.embedder_config` / :func:`~ipmn_lightning.phases.extractor_config` see the
``embedder: hidden`` hyper-parameter and rebuild the HiDDeN networks instead of IPMN's.

The watermark as a message, and what NC and SR_E mean for it:

- the ``watermark`` buffer is the owner's message, an (L,) tensor of ±1 (HiDDeN's bits b mapped to 2b − 1),
  drawn from ``message_seed``; the ``blank`` buffer is zeros (L,) (no message);
- the decoder R outputs (B, L) values in the same ±1 space (regressed with MSE, no output activation);
- NC is the paper's formula on these vectors, i.e. the cosine between the message and the decoded vector,
  and SR_E keeps the paper's rule NC > 0.95. For bits this is strict: a decoded vector of exact ±1 values with
  k of L bits wrong has NC = 1 − 2k/L, so at L = 30 one wrong bit gives 0.933 — SR_E counts images whose
  message is decoded essentially perfectly (all bits right, with values near ±1). The usual HiDDeN measure,
  the bit accuracy (share of sign(decoded) == message), is logged beside it (``val/bit_acc``).

Training follows HiDDeN's ``train_on_batch`` (github.com/ando-khachatryan/HiDDeN @ 556f76d): random ±1 messages per
image and step (so R learns to read any message, not only the owner's), D stepped on cover x_m against encoded x_wm,
then E+R stepped on g = λ_adv·BCE(D(x_wm), cover) + λ_enc·MSE(x_wm, x_m) + λ_dec·MSE(R(x_wm), message), each with
its own Adam (lr 1e-3, Adam's default betas). IPMN's use is noise-free (``noise: identity``); ``noise: distortions``
passes x_wm through :class:`~ipmn_lightning.attacks.distortions.RandomDistortion` before R in training (not HiDDeN's
noise layers, which are not reproduced here).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio

from ipmn_lightning.attacks.distortions import RandomDistortion
from ipmn_lightning.metrics.collections import ExtractionSuccessRate, NormalizedCorrelation
from ipmn_lightning.metrics.functional import NC_THRESHOLD
from ipmn_lightning.modules.base import IPMNModule
from ipmn_lightning.nets.hidden import HiddenDecoder, HiddenDiscriminator, HiddenEncoder, random_messages
from ipmn_lightning.phases import PHASE1


def owner_message(message_length: int, seed: int) -> Tensor:
    """The owner's ±1 message, (L,), the same for the same ``seed`` on every machine."""
    return random_messages(1, message_length, generator=torch.Generator().manual_seed(seed))[0]


def bit_accuracy(decoded: Tensor, message: Tensor) -> Tensor:
    """Per-image share of bits read right: sign(decoded) == message.

    Args:
        decoded: (B, L) decoder outputs.
        message: (L,) or (B, L) ±1 message.

    Returns:
        (B,) bit accuracy in [0, 1].
    """
    return (torch.sign(decoded) == message.expand_as(decoded)).float().mean(dim=1)


def hidden_metrics(prefix: str, threshold: float) -> MetricCollection:
    """NC and SR_E of R's decoded messages against the owner's, under ``prefix``."""
    return MetricCollection(
        {
            "nc_watermarked": NormalizedCorrelation(),
            "sr_e_watermarked": ExtractionSuccessRate(threshold=threshold),
        },
        prefix=prefix,
    )


class HiddenPretrainModule(IPMNModule):
    """HiDDeN's encoder (H), decoder (R) and discriminator trained on masks, as a phase-1 checkpoint.

    Args:
        image_size: side of the square images (linked from the data module).
        message_length: L, bits of the message (30 in HiDDeN).
        channels: width of every HiDDeN block (64).
        encoder_blocks: ConvBNReLU blocks of the encoder before the message is joined (4).
        decoder_blocks: ConvBNReLU blocks of the decoder (7).
        discriminator_blocks: ConvBNReLU blocks of the discriminator (3).
        lambda_encoder: weight of MSE(x_wm, x_m) (0.7 in HiDDeN).
        lambda_decoder: weight of MSE(R(x_wm), message) (1).
        lambda_adversarial: weight of the generator's BCE against D (1e-3).
        lr: learning rate of both Adam optimizers (1e-3: ``torch.optim.Adam``'s default, which HiDDeN uses).
        noise: ``identity`` (R reads x_wm as it is; IPMN §4.3.2) or ``distortions`` (R reads a randomly
            distorted x_wm in training, see :class:`~ipmn_lightning.attacks.distortions.RandomDistortion`; not HiDDeN's
            noise layers).
        message_seed: seed of the owner's ±1 message (the ``watermark`` buffer).
        nc_threshold: NC above which a decoded message counts as extracted (0.95, paper §4; see the module
            docstring for what it means for bits).
        embedder: which phase-1 networks these are; recorded in the hyper-parameters so that the phase registry
            rebuilds HiDDeN's networks from the checkpoint. Only ``hidden``.
    """

    phase = PHASE1

    def __init__(
        self,
        image_size: int = 256,
        message_length: int = 30,
        channels: int = 64,
        encoder_blocks: int = 4,
        decoder_blocks: int = 7,
        discriminator_blocks: int = 3,
        lambda_encoder: float = 0.7,
        lambda_decoder: float = 1.0,
        lambda_adversarial: float = 1e-3,
        lr: float = 1e-3,
        noise: Literal["identity", "distortions"] = "identity",
        message_seed: int = 0,
        nc_threshold: float = NC_THRESHOLD,
        embedder: Literal["hidden"] = "hidden",
    ) -> None:
        super().__init__(image_size)
        if embedder != "hidden":
            raise ValueError(
                f"HiddenPretrainModule trains HiDDeN's networks only (embedder='hidden'), got {embedder!r}"
            )
        if noise not in ("identity", "distortions"):
            raise ValueError(f"noise must be 'identity' or 'distortions', got {noise!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.embedder = HiddenEncoder(image_size, message_length, channels, encoder_blocks)
        self.extractor = HiddenDecoder(message_length, channels, decoder_blocks)
        self.discriminator = HiddenDiscriminator(channels, discriminator_blocks)
        self.distortion = RandomDistortion() if noise == "distortions" else None
        self.register_buffer("watermark", owner_message(message_length, message_seed))
        self.register_buffer("blank", torch.zeros(message_length))
        self.val_watermarked = hidden_metrics("val/", nc_threshold)
        self.test_watermarked = hidden_metrics("test/", nc_threshold)
        self.val_clean = MetricCollection(
            {"nc_clean": NormalizedCorrelation(), "fpr_mask": ExtractionSuccessRate(threshold=nc_threshold)},
            prefix="val/",
        )
        self.test_clean = self.val_clean.clone(prefix="test/")
        self.val_bit_acc, self.test_bit_acc = MeanMetric(), MeanMetric()
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
        self.test_psnr = self.val_psnr.clone()

    # ------------------------------------------------------------------ model
    def forward(self, mask: Tensor) -> Tensor:
        """x_wm = E(x_m, owner's message), (B, 3, H, W) in [0, 1]."""
        return self.embedder(mask, self.watermark)

    def extract(self, image: Tensor) -> Tensor:
        """The decoded message, (B, L)."""
        return self.extractor(image)

    def generator_losses(self, mask: Tensor, watermarked_mask: Tensor, decoded: Tensor, message: Tensor) -> dict:
        """HiDDeN's g and its terms for one batch; the total is under ``g``."""
        hp = self.hparams
        scores = self.discriminator(watermarked_mask)
        adversarial = F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
        encoder = F.mse_loss(watermarked_mask, mask)
        decoder = F.mse_loss(decoded, message.expand_as(decoded))
        total = hp.lambda_adversarial * adversarial + hp.lambda_encoder * encoder + hp.lambda_decoder * decoder
        return {"g": total, "adversarial": adversarial, "encoder": encoder, "decoder": decoder}

    def discriminator_loss(self, mask: Tensor, watermarked_mask: Tensor) -> Tensor:
        """BCE of D: cover x_m → 1, encoded x_wm → 0."""
        cover, encoded = self.discriminator(mask), self.discriminator(watermarked_mask)
        real = F.binary_cross_entropy_with_logits(cover, torch.ones_like(cover))
        return real + F.binary_cross_entropy_with_logits(encoded, torch.zeros_like(encoded))

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One D step on (x_m, detached x_wm), then one E+R step on g, with a random message per image."""
        opt_g, opt_d = self.optimizers()
        mask = batch["mask"]
        message = random_messages(mask.shape[0], self.hparams.message_length, device=mask.device)
        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                encoded = self.embedder(mask, message)
            loss_d = self.discriminator_loss(mask, encoded)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()
        with self.toggled_optimizer(opt_g):
            watermarked_mask = self.embedder(mask, message)
            seen = self.distortion(watermarked_mask) if self.distortion is not None else watermarked_mask
            decoded = self.extractor(seen)
            losses = self.generator_losses(mask, watermarked_mask, decoded, message)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(losses["g"])
            opt_g.step()
        size = mask.shape[0]
        logged = {f"train/{k}": v.detach() for k, v in losses.items() if k != "g"}
        logged["train/loss_d"] = loss_d.detach()
        logged["train/bit_acc"] = bit_accuracy(decoded.detach(), message).mean()
        self.log_dict(logged, batch_size=size)
        self.log("train/loss", losses["g"].detach(), prog_bar=True, batch_size=size)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for E+R and Adam for D (HiDDeN: both ``Adam()`` with the default lr 1e-3)."""
        lr = self.hparams.lr
        opt_g = torch.optim.Adam([*self.embedder.parameters(), *self.extractor.parameters()], lr=lr)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr)
        return [opt_g, opt_d]

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: Literal["val", "test"]) -> None:
        mask = batch["mask"]
        size = mask.shape[0]
        watermarked_mask = self.embedder(mask, self.watermark)
        decoded = self.extractor(watermarked_mask)
        decoded_clean = self.extractor(mask)
        losses = self.generator_losses(mask, watermarked_mask, decoded, self.watermark)
        loss_d = self.discriminator_loss(mask, watermarked_mask)
        watermarked, clean, bit_acc, psnr = (
            (self.val_watermarked, self.val_clean, self.val_bit_acc, self.val_psnr)
            if stage == "val"
            else (self.test_watermarked, self.test_clean, self.test_bit_acc, self.test_psnr)
        )
        watermarked.update(decoded, self.watermark)
        clean.update(decoded_clean, self.watermark)
        bit_acc.update(bit_accuracy(decoded, self.watermark))
        psnr.update(watermarked_mask, mask)
        self.log(f"{stage}/loss", losses["g"], sync_dist=True, batch_size=size, prog_bar=stage == "val")
        self.log(f"{stage}/loss_d", loss_d, sync_dist=True, batch_size=size)
        self.log_dict(watermarked, batch_size=size)
        self.log_dict(clean, batch_size=size)
        self.log(f"{stage}/bit_acc", bit_acc, batch_size=size, prog_bar=stage == "val")
        self.log(f"{stage}/psnr_mask", psnr, batch_size=size, prog_bar=stage == "val")
        if batch_idx == 0 and stage == "val":
            residual = ((watermarked_mask - mask).abs() * 10).clamp(0, 1)
            self.log_image_grid("val/images", [mask, watermarked_mask, residual])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """With the owner's message: PSNR(x_m, x_wm), bit accuracy, NC/SR_E on x_wm, NC/false positives on x_m."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The validation metrics on the test split."""
        self._evaluate(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Watermarked masks (owner's message) and the messages R decodes from them."""
        watermarked_mask = self.embedder(batch["mask"], self.watermark)
        return {
            "index": batch["index"],
            "watermarked_mask": watermarked_mask,
            "extracted": self.extractor(watermarked_mask),
        }
