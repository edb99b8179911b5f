"""Phase 3b (paper §3.3.2, §3.4.3, eqs. 23-26): fine-tuning the extractor R on every source."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from ipmn_lightning.attacks.distortions import RandomDistortion
from ipmn_lightning.losses import enhanced_extracting_loss
from ipmn_lightning.metrics.collections import SourceExtractionMetrics
from ipmn_lightning.metrics.functional import quantize_8bit
from ipmn_lightning.modules.base import IPMNModule, freeze
from ipmn_lightning.phases import (
    FROZEN_KEY,
    PHASE3_ENHANCE,
    build,
    check_image_size,
    load_phase1,
    load_phase2,
    load_stealer,
    load_submodule,
    put_on_mask,
    watermark_shape,
)

CLEAN_SOURCES = ("mask", "protected", "recovered_face")


class ExtractorEnhanceModule(IPMNModule):
    """Phase 3b: R learns to find w in x_wmf, x'_wm and every x_sm, and the blank in x_m, x_p, x'_p.

    Each batch builds the mixed set of eqs. 24-26 with the frozen black box (H, w, INN) and the frozen
    stealing models; R starts from the phase-1 extractor.

    Args:
        image_size: side of the square images (linked from the data module).
        phase1_ckpt: phase-1 checkpoint: R's starting weights and architecture.
        phase2_ckpt: phase-2 checkpoint: H, w and the INN.
        stealer_ckpt: one or more phase-3a checkpoints (the simulated attackers).
        mse_scale: scale of every mean MSE term (1e4, DMW).
        lambda_wm: λ'_wm of eq. 23.
        lambda_clean: λ'_clean of eq. 23.
        lambda_cst: λ'_cst of eq. 23.
        quantize: give R every source as the 8-bit file a verifier receives (x_wmf, and x'_p, x'_wm recovered
            from it, x_sm, x_m, x_p), in training and evaluation; ``False``: the float images, clamped to [0, 1].
        lr: Adam learning rate (1e-4, paper §4).
        betas: Adam betas (DMW).
        plateau_factor: ReduceLROnPlateau factor (DMW adversarial stage).
        plateau_patience: ReduceLROnPlateau patience in validation epochs (DMW: 8).
        plateau_interval: when the plateau scheduler looks at ``val/loss``: ``epoch`` (at each training epoch's
            end, DMW) or ``validation`` (after each validation run, every ``trainer.val_check_interval`` batches:
            with a budget in steps the patience then counts validations, not epochs, whatever the data size).
        eval_seed: seed of the Gaussian z used when recovering in validation/test.
        robust_extraction: train R on every source after a random distortion of the kind images meet when
            shared (JPEG, resize, blur, noise, 8-bit rounding; see
            :class:`~ipmn_lightning.attacks.distortions.RandomDistortion`). Not in the paper.
        robust_p_clean: share of training images left undistorted (only 8-bit rounding) when robust.
        robust_jpeg_qualities: JPEG qualities drawn from when robust.
        degrade_stolen: in training, give R each x_sm with probability 0.5 degraded like the output of a weaker
            imitator (a 7x7 Gaussian blur with σ in [0.5, 1.5] or a resize round trip through 40-80% of the side)
            before the rest: a way to reach stealers R never saw (``benchmarks/experiments.py --attempts``). Not in
            the paper.
        null_ckpt: phase-3a checkpoints of null models (``target`` ``plain_inn`` or ``mask``: trained on answers
            without the watermark), whose outputs join the clean sources of eq. 25 in training: R learns that an
            imitation's look is not the watermark (the negatives of Deep Model Watermarking's adversarial stage,
            github.com/ZJZAC/Deep-Model-Watermarking). Not in the paper's equations.
    """

    phase = PHASE3_ENHANCE
    frozen_attributes = ("embedder", "inn", "stealers", "null_models")

    def __init__(
        self,
        image_size: int = 256,
        phase1_ckpt: str | None = None,
        phase2_ckpt: str | None = None,
        stealer_ckpt: list[str] | str | None = None,
        mse_scale: float = 1e4,
        lambda_wm: float = 1.0,
        lambda_clean: float = 1.0,
        lambda_cst: float = 1.0,
        quantize: bool = True,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        plateau_factor: float = 0.2,
        plateau_patience: int = 8,
        plateau_interval: Literal["epoch", "validation"] = "epoch",
        eval_seed: int = 0,
        robust_extraction: bool = False,
        robust_p_clean: float = 0.25,
        robust_jpeg_qualities: tuple[int, ...] = (50, 65, 75, 90),
        degrade_stolen: bool = False,
        null_ckpt: list[str] | str | None = None,
    ) -> None:
        super().__init__(image_size)
        self.save_hyperparameters(ignore=["phase1_ckpt", "phase2_ckpt", "stealer_ckpt", "null_ckpt"])
        self.null_ckpts = [null_ckpt] if isinstance(null_ckpt, str) else list(null_ckpt or [])
        self.phase1_ckpt, self.phase2_ckpt = phase1_ckpt, phase2_ckpt
        self.stealer_ckpts = [stealer_ckpt] if isinstance(stealer_ckpt, str) else list(stealer_ckpt or [])
        self.extractor: nn.Module | None = None  # R, trainable: built here when its architecture is known
        if phase1_ckpt is not None and Path(phase1_ckpt).expanduser().is_file():
            self.extractor = build("extractor", load_phase1(phase1_ckpt)[0]["extractor"])
        self.stealer_names: list[str] = []
        self.distortion: RandomDistortion | None = None
        if robust_extraction:
            self.distortion = RandomDistortion(p_clean=robust_p_clean, jpeg_qualities=tuple(robust_jpeg_qualities))
        self.stolen_degradation: RandomDistortion | None = None
        if degrade_stolen:
            self.stolen_degradation = RandomDistortion(
                p_clean=0.5, kinds=("blur", "resize"), blur_sigma=(0.5, 1.5), resize_scale=(0.4, 0.8)
            )

    # ------------------------------------------------------- frozen networks
    def build_frozen(self, config: dict[str, Any]) -> None:
        """Create the frozen black box and stealers, the watermark/blank and the metrics (R is built elsewhere)."""
        super().build_frozen(config)
        self.embedder = freeze(build("embedder", config["embedder"]))
        self.inn = freeze(build("inn", config["inn"]))
        self.stealers = nn.ModuleList([freeze(build("stealer", c)) for c in config["stealers"]])
        self.null_models = nn.ModuleList([freeze(build("stealer", c)) for c in config.get("null_models", [])])
        self.position = config.get("position", "mask")  # where phase 2 put the watermark (phases.put_on_mask)
        self.stealer_names = unique_names([c["name"] for c in config["stealers"]])
        shape = watermark_shape(config["embedder"])  # (3, size, size), or (L,) for the HiDDeN baseline
        self.register_buffer("watermark", torch.zeros(shape))
        # phase 1's x_clean (its ``blank_value``); ones until ``load_frozen`` copies it, or the state dict restores it
        self.register_buffer("blank", torch.ones(shape))
        watermarked = ["masked_face", "recovered_mask", *(["stolen"] if self.stealer_names else [])]
        watermarked += [f"stolen_{n}" for n in self.stealer_names] if len(self.stealer_names) > 1 else []
        self.val_metrics = SourceExtractionMetrics(watermarked, list(CLEAN_SOURCES), prefix="val/")
        self.test_metrics = SourceExtractionMetrics(watermarked, list(CLEAN_SOURCES), prefix="test/")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also build R from the architecture the checkpoint records, when ``phase1_ckpt`` did not give it."""
        super().on_load_checkpoint(checkpoint)
        if self.extractor is None and checkpoint.get(FROZEN_KEY) is not None:
            self.extractor = build("extractor", checkpoint[FROZEN_KEY]["extractor"])

    def load_frozen(self) -> None:
        """Load R from ``phase1_ckpt``, the black box from ``phase2_ckpt``, the stealers from ``stealer_ckpt``."""
        for argument in ("phase1_ckpt", "phase2_ckpt"):
            if getattr(self, argument) is None:
                raise ValueError(f"ExtractorEnhanceModule needs model.init_args.{argument}")
        if not self.stealer_ckpts:
            self.warn_once("no stealer_ckpt given: R is enhanced on x_wmf and x'_wm only (no simulated attack)")
        configs1, state1 = load_phase1(self.phase1_ckpt)
        configs2, state2 = load_phase2(self.phase2_ckpt)
        check_image_size(configs2["embedder"]["image_size"], self.image_size, "phase2_ckpt")
        stealers = [load_stealer(path) for path in self.stealer_ckpts]
        nulls = [load_stealer(path, "null_ckpt") for path in self.null_ckpts]
        self.build_frozen({**configs2, "extractor": configs1["extractor"], "stealers": [c for c, _ in stealers],
                           "null_models": [c for c, _ in nulls]})  # fmt: skip
        load_submodule(self.embedder, state2, "embedder", f"phase2_ckpt {self.phase2_ckpt}")
        load_submodule(self.inn, state2, "inn", f"phase2_ckpt {self.phase2_ckpt}")
        if self.extractor is None:  # phase1_ckpt appeared after __init__
            self.extractor = build("extractor", configs1["extractor"])
        load_submodule(self.extractor, state1, "extractor", f"phase1_ckpt {self.phase1_ckpt}")
        for module, (_, state), path in zip(self.stealers, stealers, self.stealer_ckpts):
            load_submodule(module, state, "stealer", f"stealer_ckpt {path}")
        for module, (_, state), path in zip(self.null_models, nulls, self.null_ckpts):
            load_submodule(module, state, "stealer", f"null_ckpt {path}")
        self.watermark.copy_(state2["watermark"])
        self.blank.copy_(state1["blank"])  # R keeps the x_clean target of phase 1 (its blank_value)

    # ------------------------------------------------------------------ model
    def forward(self, image: Tensor) -> Tensor:
        """R's extracted watermark, (B, 3, H, W)."""
        return self.extractor(image)

    @torch.no_grad()
    def sources(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Every image source of eqs. 24-25 for a batch, each (B, 3, H, W) in [0, 1] (8-bit when ``quantize``)."""
        protected, mask = batch["protected"], batch["mask"]
        masked_face, lost = put_on_mask(self.inn, self.embedder, self.watermark, protected, mask, self.position)
        masked_face = quantize_8bit(masked_face) if self.hparams.quantize else masked_face.clamp(0, 1)
        z = torch.randn(lost.shape, generator=generator, device=lost.device, dtype=lost.dtype)
        recovered_face, recovered_mask = self.inn.put_off(masked_face, z=z)
        out = {
            "masked_face": masked_face,
            "recovered_mask": recovered_mask.clamp(0, 1),
            "mask": mask,
            "protected": protected,
            "recovered_face": recovered_face.clamp(0, 1),
        }
        for name, stealer in zip(self.stealer_names, self.stealers):
            out[f"stolen_{name}"] = stealer(protected, batch["replacement"])
        # a verifier only ever receives image files: R is trained and scored on the sources as they arrive
        received = quantize_8bit if self.hparams.quantize else (lambda image: image.clamp(0, 1))
        return {name: received(image) for name, image in out.items()}

    def _extract_all(self, sources: dict[str, Tensor], distort: bool = False) -> dict[str, Tensor]:
        names = list(sources)
        images = torch.cat([sources[n] for n in names])
        if distort and self.distortion is not None:
            images = self.distortion(images)
        extracted = self.extractor(images)
        return dict(zip(names, extracted.chunk(len(names))))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """ℓ'_wext on the mixed batch (eqs. 23-26)."""
        sources = self.sources(batch)
        if self.stolen_degradation is not None:
            for name in [k for k in sources if k.startswith("stolen_")]:
                sources[name] = self.stolen_degradation(sources[name])
        negatives = {}
        with torch.no_grad():  # the null models' answers: clean images for R (the ``null_ckpt`` argument)
            for index, model in enumerate(self.null_models):
                negatives[f"null_{index}"] = quantize_8bit(model(batch["protected"], batch["replacement"]))
        extracted = self._extract_all({**sources, **negatives}, distort=True)
        watermarked = [v for k, v in extracted.items() if k not in CLEAN_SOURCES and k not in negatives]
        clean = [extracted[k] for k in (*CLEAN_SOURCES, *negatives)]
        hp = self.hparams
        losses = enhanced_extracting_loss(
            watermarked, clean, self.watermark, self.blank,
            mse_scale=hp.mse_scale, lambda_wm=hp.lambda_wm, lambda_clean=hp.lambda_clean, lambda_cst=hp.lambda_cst,
        )  # fmt: skip
        size = batch["protected"].shape[0]
        self.log_dict({f"train/{k}": losses[k].detach() for k in ("wm", "clean", "cst")}, batch_size=size)
        self.log("train/loss", losses["wext"].detach(), prog_bar=True, batch_size=size)
        return losses["wext"]

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam on R with ReduceLROnPlateau on the validation loss (per epoch, or per validation run)."""
        hp = self.hparams
        opt = torch.optim.Adam(self.extractor.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        scheduler = ReduceLROnPlateau(opt, mode="min", factor=hp.plateau_factor, patience=hp.plateau_patience)
        config: dict[str, Any] = {"scheduler": scheduler, "monitor": "val/loss", "strict": False}
        if hp.get("plateau_interval", "epoch") == "validation":
            every = self._trainer.val_check_interval if self._trainer is not None else None
            if self._trainer is not None and self._trainer.fast_dev_run:  # a smoke run validates after its 1 batch
                every = 1
            if not isinstance(every, int) or isinstance(every, bool):
                raise ValueError(
                    "plateau_interval=validation needs validation every N batches: set trainer.val_check_interval "
                    f"to an integer and trainer.check_val_every_n_epoch to null (got val_check_interval={every!r})"
                )
            # Lightning steps a plateau scheduler of interval "step" after that batch's validation run
            config.update(interval="step", frequency=every)
        return {"optimizer": opt, "lr_scheduler": config}

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: Literal["val", "test"]) -> None:
        generator = torch.Generator(device=batch["protected"].device).manual_seed(self.hparams.eval_seed + batch_idx)
        sources = self.sources(batch, generator)
        extracted = self._extract_all(sources)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        stolen = [k for k in extracted if k.startswith("stolen_")]
        for name, output in extracted.items():
            if name.startswith("stolen_"):
                if len(stolen) > 1:
                    metrics.update(name, output, self.watermark)
                metrics.update("stolen", output, self.watermark)
            else:
                metrics.update(name, output, self.watermark)
        hp = self.hparams
        loss = enhanced_extracting_loss(
            [v for k, v in extracted.items() if k not in CLEAN_SOURCES], [extracted[k] for k in CLEAN_SOURCES],
            self.watermark, self.blank, mse_scale=hp.mse_scale, lambda_wm=hp.lambda_wm,
            lambda_clean=hp.lambda_clean, lambda_cst=0.0,
        )["wext"]  # fmt: skip
        size = batch["protected"].shape[0]
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=size, prog_bar=stage == "val")
        for name, metric in metrics.items():
            self.log(name, metric, batch_size=size)
        if batch_idx == 0 and stage == "val":
            order = [k for k in extracted if k not in CLEAN_SOURCES] + list(CLEAN_SOURCES)
            self.log_image_grid("val/images", [sources[k] for k in order] + [extracted[k] for k in order])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """NC/SR_E per watermarked source and the false-positive rate per clean source."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The validation metrics on the test split."""
        self._evaluate(batch, batch_idx, "test")


def unique_names(names: list[str]) -> list[str]:
    """Make stealer names unique (``unet``, ``unet_2``) so each gets its own metrics."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out
