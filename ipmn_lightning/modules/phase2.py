"""Phase 2 (paper §3.4.2): the invertible network that puts the watermarked mask on and takes it off."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim.lr_scheduler import StepLR

from ipmn_lightning.losses import privacy_loss
from ipmn_lightning.metrics.collections import ImagePairMetrics
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.modules.base import IPMNModule, freeze
from ipmn_lightning.nets.embedder import WatermarkEmbedder
from ipmn_lightning.nets.inn import InvertibleMaskNet
from ipmn_lightning.phases import (
    PHASE2,
    WatermarkPosition,
    build,
    check_image_size,
    load_phase1,
    load_submodule,
    put_on_mask,
    watermark_shape,
)

PAIRS = {
    # metric key: (reference, estimate) — the three image pairs of Table 2
    "recovered": ("protected", "recovered_face"),
    "masked": ("watermarked_mask", "masked_face"),
    "recovered_mask": ("watermarked_mask", "recovered_mask"),
    # and the pair of Table 5: what the watermark and the hidden face cost the mask together
    "masked_vs_mask": ("mask", "masked_face"),
}

#: Why a phase-2 step is skipped, indexed by :meth:`InvertibleMaskModule.step_verdict`'s code ("" = not skipped).
SKIP_REASONS = ("", "spike", "nonfinite_grad", "nonfinite")


class InvertibleMaskModule(IPMNModule):
    """Phase 2: train the putting-on/putting-off mask network (eqs. 3-8) on ℓ_fp (eqs. 19-22).

    The frozen phase-1 embedder H computes x_wm = H(x_m, w) on the fly; only the INN is optimised. Two variants
    of the paper's experiments train through the same module (``watermark_position``): IMN (Table 7, no
    watermark: the INN hides x_p in x_m itself) and the watermark embedded into the masked face after the INN
    (Tables 5-6: x_wmf = H(x_mf, w), recovered by the INN from x_wmf; H stays frozen and the INN learns through it).

    Args:
        image_size: side of the square images (linked from the data module).
        phase1_ckpt: phase-1 checkpoint giving H and the watermark (loaded in ``setup``, frozen; not needed
            to reload a phase-2 checkpoint).
        num_blocks: K coupling blocks (16, paper §4).
        clamp: clamp of the affine scale (2.0, HiNet).
        growth: growth channels of the dense blocks (32, HiNet).
        wavelet: DWT implementation.
        lambda_recover: λ1 of eq. 19 (3, IMN).
        lambda_guide: λ2 of eq. 19.
        lambda_distortion: λ3 of eq. 19.
        lambda_low: weight of HiNet's low-frequency term (not in eq. 19; 0).
        lr: Adam learning rate (1e-5, paper §4).
        betas: Adam betas (HiNet/IMN).
        eps: Adam epsilon (HiNet/IMN).
        weight_decay: Adam L2 weight decay (HiNet/IMN).
        lr_step_epochs: StepLR step in epochs — the paper's "weight decay is set as 1000" read as HiNet's
            ``weight_step``.
        lr_step_steps: StepLR step in training batches instead (``None``: ``lr_step_epochs``). A budget in steps
            (``trainer.max_steps``) needs a schedule in steps, so that a small and a large training set get the
            same schedule (the demo configs); the paper configs keep epochs.
        lr_gamma: StepLR factor.
        gradient_clip_val: max gradient norm (``None``: no clipping); HiNet-style training explodes without it.
            ``train/clip_fraction`` (per epoch) is the share of steps it clipped, ``train/grad_norm`` the norm before.
        spike_factor: skip a step whose loss exceeds this multiple of the running loss average (``None``: off).
        spike_warmup_steps: steps before the spike guard is armed (the loss falls fast at first).
        spike_patience: after this many consecutive spike skips the next spike is taken and the average re-based
            to its loss: a rise that lasts is the loss's new level, not a bad batch.
        lpips_net: LPIPS backbone for validation/test, used only when its weights are in the torch hub cache.
        eval_seed: seed of the Gaussian z drawn for validation/test recovery.
        watermark_position: ``mask`` (IPMN: x_wm = H(x_m, w) is the INN's host), ``masked_face`` (the ablation of
            Tables 5-6: H(x_mf, w) after the INN) or ``none`` (IMN: the host is x_m, no watermark). In the metrics
            ``watermarked_mask`` is then the host the INN saw (x_m for both variants).
    """

    phase = PHASE2
    frozen_attributes = ("embedder",)

    def __init__(
        self,
        image_size: int = 256,
        phase1_ckpt: str | None = None,
        num_blocks: int = 16,
        clamp: float = 2.0,
        growth: int = 32,
        wavelet: Literal["haar", "pytorch_wavelets"] = "haar",
        lambda_recover: float = 3.0,
        lambda_guide: float = 1.0,
        lambda_distortion: float = 1.0,
        lambda_low: float = 0.0,
        lr: float = 1e-5,
        betas: tuple[float, float] = (0.5, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 1e-5,
        lr_step_epochs: int = 1000,
        lr_step_steps: int | None = None,
        lr_gamma: float = 0.5,
        gradient_clip_val: float | None = 10.0,
        spike_factor: float | None = 100.0,
        spike_warmup_steps: int = 100,
        spike_patience: int = 10,
        lpips_net: Literal["alex", "vgg", "squeeze"] | None = "alex",
        eval_seed: int = 0,
        watermark_position: WatermarkPosition = "mask",
    ) -> None:
        super().__init__(image_size)
        self.save_hyperparameters(ignore=["phase1_ckpt"])
        self.phase1_ckpt = phase1_ckpt
        self.automatic_optimization = False
        self.inn = InvertibleMaskNet(num_blocks=num_blocks, clamp=clamp, growth=growth, wavelet=wavelet)
        self.embedder: WatermarkEmbedder | None = None
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("loss_average", torch.full((), math.nan))
        # consecutive steps judged a spike; not saved (checkpoints stay loadable across versions): a resume
        # restarts the count, costing at most spike_patience more skips of a lasting rise
        self.register_buffer("spike_run", torch.zeros((), dtype=torch.long), persistent=False)
        self.grad_norm: Tensor | None = None
        self.val_metrics = ImagePairMetrics(PAIRS, prefix="val/", lpips_net=lpips_net)
        self.test_metrics = ImagePairMetrics(PAIRS, prefix="test/", lpips_net=lpips_net)

    # ------------------------------------------------------- frozen networks
    def build_frozen(self, config: dict[str, Any]) -> None:
        """Create the frozen H and the watermark buffer from the recorded phase-1 architecture."""
        super().build_frozen(config)
        self.embedder = freeze(build("embedder", config["embedder"]))
        self.register_buffer("watermark", torch.zeros(watermark_shape(config["embedder"])))

    def load_frozen(self) -> None:
        """Load H and w from ``phase1_ckpt``."""
        if self.phase1_ckpt is None:
            raise ValueError(
                "InvertibleMaskModule needs the phase-1 checkpoint: set model.init_args.phase1_ckpt "
                "(e.g. --model.init_args.phase1_ckpt=runs/phase1/checkpoints/last.ckpt)"
            )
        configs, state = load_phase1(self.phase1_ckpt)
        check_image_size(configs["embedder"]["image_size"], self.image_size, "phase1_ckpt")
        self.build_frozen({"embedder": configs["embedder"]})
        load_submodule(self.embedder, state, "embedder", f"phase1_ckpt {self.phase1_ckpt}")
        self.watermark.copy_(state["watermark"])

    # ------------------------------------------------------------------ model
    def watermark_mask(self, mask: Tensor) -> Tensor:
        """The INN's host, (B, 3, H, W) in [0, 1]: x_wm = H(x_m, w) with the frozen phase-1 H.

        x_m itself when the watermark goes elsewhere (``watermark_position`` ``masked_face`` or ``none``).
        """
        if self.embedder is None:
            raise RuntimeError("the phase-1 embedder is not loaded; set phase1_ckpt or load a phase-2 checkpoint")
        if self.hparams.watermark_position != "mask":
            return mask
        with torch.no_grad():
            return self.embedder(mask, self.watermark)

    def forward(self, protected: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Sender side: (x_wmf, M) = f(x_p, H(x_m, w)) (eqs. 2 and 5), or the variant's black box."""
        return put_on_mask(self.inn, self.embedder, self.watermark, protected, mask, self.hparams.watermark_position)

    def run_inn(self, protected: Tensor, watermarked_mask: Tensor, z: Tensor | None = None) -> dict[str, Tensor]:
        """Put on and take off in the wavelet domain (HiNet: no IWT→DWT round trip of x_wmf).

        Returns:
            ``masked_face``, ``recovered_face``, ``recovered_mask`` (B, 3, H, W) and the LL subbands.
        """
        inn = self.inn
        host = inn.dwt(watermarked_mask)
        host_out, lost = inn.forward_wavelet(host, inn.dwt(protected))
        masked_face = inn.iwt(host_out)
        if self.hparams.watermark_position == "masked_face":
            # the ablation: w goes into the INN's output; the receiver's INN must undo H's change as well
            masked_face = self.embedder(masked_face, self.watermark)
            host_out = inn.dwt(masked_face)
        if z is None:
            z = torch.randn_like(lost)
        host_rec, hidden_rec = inn.inverse_wavelet(host_out, z)
        return {
            "masked_face": masked_face,
            "recovered_face": inn.iwt(hidden_rec),
            "recovered_mask": inn.iwt(host_rec),
            "masked_face_ll": host_out[:, :3],
            "watermarked_mask_ll": host[:, :3],
        }

    def losses(self, protected: Tensor, watermarked_mask: Tensor, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """ℓ_fp of eq. 19 and its terms."""
        hp = self.hparams
        return privacy_loss(
            protected, out["recovered_face"], watermarked_mask, out["recovered_mask"], out["masked_face"],
            lambda_recover=hp.lambda_recover, lambda_guide=hp.lambda_guide,
            lambda_distortion=hp.lambda_distortion, lambda_low=hp.lambda_low,
            masked_face_ll=out["masked_face_ll"], watermarked_mask_ll=out["watermarked_mask_ll"],
        )  # fmt: skip

    # --------------------------------------------------------------- training
    def step_verdict(self, loss: Tensor, grads: list[Tensor]) -> tuple[str | None, float]:
        """Whether to skip this step, from every guard at once and agreed across DDP ranks, with one host sync.

        The guards are a non-finite loss, a non-finite gradient (one fused 2-norm over all of ``grads``: it is
        non-finite exactly when some element is, or when the norm itself overflows float32, which clipping could
        not repair either) and, after ``spike_warmup_steps``, a loss above ``spike_factor`` times the running
        average. They are combined on the device into one code (0 ok, 1 spike, 2 non-finite gradient, 3 non-finite
        loss); with several ranks its maximum is all-reduced without a host sync (each rank also reads its own
        code), and the single ``tolist()`` of (local code, agreed code, loss) is the step's only conversion.

        Args:
            loss: the scalar training loss (with or without graph).
            grads: the gradients of the trained parameters after the backward (may be empty).

        Returns:
            (the reason — ``nonfinite``, ``nonfinite_grad``, ``spike``, ``other_rank`` — or ``None`` to step,
            the loss as a Python float).
        """
        hp = self.hparams
        value = loss.detach().float()
        code = (~torch.isfinite(value)).float() * 3
        self.grad_norm = None
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            code = torch.maximum(code, (~torch.isfinite(norm)).float() * 2)
            self.grad_norm = norm  # logged by training_step: how often clipping fires
        if hp.spike_factor is not None and self.global_step >= hp.spike_warmup_steps:
            average = self.loss_average.float()
            spike = torch.isfinite(average) & (value > hp.spike_factor * average)
            # The average moves only on taken steps and the weights never change while skipping, so a lasting rise
            # would be skipped forever. A run of more than spike_patience spikes is the loss's new level: that step
            # is taken and re-bases the average (update_loss_average). Chosen over feeding skipped losses into the
            # average at a slower rate: an isolated outlier of any size still leaves the average untouched, and a
            # lasting rise of any size is recovered from after the same spike_patience skips.
            self.spike_run.copy_(torch.where(spike, self.spike_run + 1, 0))
            code = torch.maximum(code, (spike & (self.spike_run <= hp.spike_patience)).float())
        agreed = code
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and self._trainer is not None and self.trainer.world_size > 1:
            agreed = code.clone()
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX)  # queued, no host sync
        local_code, agreed_code, loss_value = torch.stack([code, agreed, value]).tolist()
        reason = SKIP_REASONS[int(local_code)] or ("other_rank" if agreed_code else None)
        return reason, loss_value

    def update_loss_average(self, loss: Tensor) -> None:
        """Running average of the loss for the spike guard, after a taken step (no host sync).

        The first step copies the loss, and so does a step taken after more than ``spike_patience`` spikes in a row.
        """
        value = loss.detach().to(self.loss_average.dtype)
        average = self.loss_average
        rebase = ~torch.isfinite(average) | (self.spike_run > self.hparams.spike_patience)
        average.copy_(torch.where(rebase, value, 0.98 * average + 0.02 * value))
        self.spike_run.zero_()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One guarded optimisation step of the INN on ℓ_fp, with one host synchronisation (:meth:`step_verdict`).

        The backward always runs (every DDP rank joins the gradient all-reduce); a step that a guard rejects on
        any rank drops its gradients on every rank and is counted in ``skipped_steps``.
        """
        opt = self.optimizers()
        protected = batch["protected"]
        watermarked_mask = self.watermark_mask(batch["mask"])
        out = self.run_inn(protected, watermarked_mask)
        losses = self.losses(protected, watermarked_mask, out)
        loss = losses["fp"]
        size = protected.shape[0]
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        skip, loss_value = self.step_verdict(loss, [p.grad for p in self.inn.parameters() if p.grad is not None])
        if skip is None:
            self.clip_gradients(opt, self.hparams.gradient_clip_val, "norm")
            opt.step()
            self.update_loss_average(loss)
            if self.grad_norm is not None:
                self.log("train/grad_norm", self.grad_norm, batch_size=size)  # before clipping
                if self.hparams.gradient_clip_val is not None:
                    # a device tensor averaged over the epoch's taken steps: the share of them that clipping changed
                    clipped = (self.grad_norm > self.hparams.gradient_clip_val).float()
                    self.log("train/clip_fraction", clipped, on_step=False, on_epoch=True, batch_size=1)
        else:
            opt.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.warn_once(f"skipped an INN step ({skip}, loss {loss_value:.4g}); see train/skipped_steps")
        self.log("train/skipped_steps", self.skipped_steps.float(), batch_size=size)
        if math.isfinite(loss_value):
            self.log_dict(
                {f"train/{k}": losses[k].detach() / size for k in ("recover", "guide", "distortion", "low")},
                batch_size=size,
            )
            self.log("train/loss", loss.detach() / size, prog_bar=True, batch_size=size)

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[StepLR]]:
        """Adam (HiNet/IMN settings) with StepLR stepped by hand: once per epoch, or per step (``lr_step_steps``)."""
        hp = self.hparams
        opt = torch.optim.Adam(
            self.inn.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay
        )
        step_size = hp.lr_step_steps if hp.get("lr_step_steps") else hp.lr_step_epochs
        return [opt], [StepLR(opt, step_size=step_size, gamma=hp.lr_gamma)]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Step the StepLR schedule once per batch when it counts steps (manual optimization never steps it).

        Per batch, not per taken step: a step the spike guard skipped still counts, as it does in ``max_steps``'
        batches of the other phases; the schedule stays a function of the batches seen, whatever the data size.
        """
        if self.hparams.get("lr_step_steps"):
            self.lr_schedulers().step()

    def on_train_epoch_end(self) -> None:
        """Step the StepLR schedule per epoch (manual optimization never steps it); log the learning rate."""
        scheduler = self.lr_schedulers()
        if not self.hparams.get("lr_step_steps"):
            scheduler.step()
        self.log("train/lr", scheduler.get_last_lr()[0])

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: Literal["val", "test"]) -> None:
        protected = batch["protected"]
        watermarked_mask = self.watermark_mask(batch["mask"])
        generator = torch.Generator(device=protected.device).manual_seed(self.hparams.eval_seed + batch_idx)
        masked_face, lost = self(protected, batch["mask"])
        z = torch.randn(lost.shape, generator=generator, device=lost.device, dtype=lost.dtype)
        recovered_face, recovered_mask = self.inn.put_off(masked_face, z=z)
        quantized = quantize_8bit(masked_face)
        recovered_face_q8, recovered_mask_q8 = self.inn.put_off(quantized, z=z)
        images = {
            "protected": protected,
            "mask": batch["mask"],
            "watermarked_mask": watermarked_mask,
            "masked_face": masked_face,
            "recovered_face": recovered_face,
            "recovered_mask": recovered_mask,
        }
        images_q8 = {**images, "masked_face": quantized, "recovered_face": recovered_face_q8,
                     "recovered_mask": recovered_mask_q8}  # fmt: skip
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(images, suffix="")
        metrics.update(images_q8, suffix="_q8")
        size = protected.shape[0]
        hp = self.hparams
        loss = privacy_loss(
            protected, recovered_face, watermarked_mask, recovered_mask, masked_face,
            lambda_recover=hp.lambda_recover, lambda_guide=hp.lambda_guide, lambda_distortion=hp.lambda_distortion,
        )["fp"]  # fmt: skip
        self.log(f"{stage}/loss", loss / size, sync_dist=True, batch_size=size, prog_bar=stage == "val")
        for name, metric in metrics.items():
            self.log(name, metric, batch_size=size, prog_bar=name.endswith("psnr_recovered"))
        if batch_idx == 0 and stage == "val":
            self.log_image_grid(
                "val/images",
                [
                    protected,
                    watermarked_mask,
                    masked_face,
                    recovered_face,
                    recovered_mask,
                    ((masked_face - watermarked_mask).abs() * 10).clamp(0, 1),
                    ((recovered_face - protected).abs() * 10).clamp(0, 1),
                ],
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """PSNR/SSIM(/LPIPS) of the Table 2 pairs, float and 8-bit, and an image grid."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The validation metrics on the test split."""
        self._evaluate(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Masked faces and what an authorised receiver recovers from their 8-bit version."""
        masked_face, _ = self(batch["protected"], batch["mask"])
        recovered_face, recovered_mask = self.inn.put_off(quantize_8bit(masked_face))
        return {
            "index": batch["index"],
            "masked_face": masked_face,
            "recovered_face": recovered_face,
            "recovered_mask": recovered_mask,
        }
