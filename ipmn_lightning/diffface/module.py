"""DiffFaceModule: train DiffFace's identity-conditioned DDPM on a folder of faces (``configs/diffface.yaml``).

DiffFace's authors released sampling code only (github.com/hxngiee/DiffFace @ b7bef83); this is the training they
describe: guided-diffusion's ADM UNet (:class:`~ipmn_lightning.diffface.unet.DiffFaceUNet`) conditioned on the identity
embedding of each training face, trained with the hybrid loss (``L_simple + L_vlb``, learned-range variance,
1000 linear steps) and an EMA of the weights that is what sampling uses.

Identity embeddings come from :class:`~ipmn_lightning.faces.analysis.DlibIdentityEncoder` (the ``faces``
extra; 128-d, L2-normalised): DiffFace conditions on ArcFace, whose weights this project cannot download, so
``id_dim`` is 128 and checkpoints are tagged ``identity_encoder: dlib`` for the sampler. They are computed once,
before the first step, at ``identity_image_size`` from the original files (a 32-px training image is too small
for a face detector), and cached in a safetensors file keyed by each image's relative path; reruns, resumes and
the other DDP ranks read the cache. A face the detector misses is trained unconditionally (zero embedding).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ipmn_lightning.diffface.unet import DiffFaceUNet, GaussianDiffusion
from ipmn_lightning.modules.base import IPMNModule

__all__ = ["DiffFaceModule", "sample_from_noise"]

CACHE_VERSION = 1


@torch.no_grad()
def sample_from_noise(
    net: DiffFaceUNet, identity: Tensor, steps: int, generator: torch.Generator, diffusion_steps: int = 1000
) -> Tensor:
    """Unguided ancestral sampling from pure noise with ``steps`` respaced steps.

    Args:
        net: the network.
        identity: ``(B, id_dim)`` conditioning embeddings.
        steps: respaced steps (e.g. 50).
        generator: CPU generator.
        diffusion_steps: the training schedule's length.

    Returns:
        ``(B, 3, S, S)`` float in [0, 1].
    """
    device = next(net.parameters()).device
    diff = GaussianDiffusion.linear(diffusion_steps, steps)
    s, b = net.config["image_size"], identity.shape[0]
    shape = (b, net.config["in_channels"], s, s)
    x = torch.randn(shape, generator=generator).to(device)
    for i in range(diff.num_timesteps - 1, -1, -1):
        t = torch.full((b,), i, dtype=torch.long, device=device)
        out = diff.p_mean_variance(net(x, diff.model_timesteps(t).float(), identity).float(), x, t)
        x = out["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * out["log_variance"]) * torch.randn(shape, generator=generator).to(device)
    return ((x + 1) / 2).clamp(0, 1)


class DiffFaceModule(IPMNModule):
    """Identity-conditioned DDPM (DiffFace's generator) with the hybrid loss and EMA weights.

    Batches: the data module's ``protected`` images ``(B, 3, S, S)`` in [0, 1] (``data.faces_only: true``
    serves a face folder without a mask store) and their ``key`` (relative path) or ``index``.

    Args:
        image_size: image side (linked from ``data.image_size``).
        model_channels: first-level width (DiffFace: 256).
        channel_mult: per-level width multipliers (DiffFace at 256 px: 1, 1, 2, 2, 4, 4).
        num_res_blocks: residual blocks per level (DiffFace: 2).
        attention_resolutions: feature sides with attention (DiffFace: 32, 16, 8).
        num_head_channels: channels per attention head (DiffFace: 64).
        dropout: residual-block dropout.
        id_dim: identity embedding size (dlib: 128).
        identity_encoder: ``"dlib"`` (the ``faces`` extra) or ``"none"`` (an unconditional DDPM: every
            embedding is zero).
        identity_cache: the embeddings cache file (default ``<trainer.default_root_dir>/identity_cache.safetensors``).
        identity_image_size: side at which faces are read for the recogniser.
        diffusion_steps: training schedule length (linear betas, as DiffFace).
        lambda_vlb: weight of the variance term (1: guided-diffusion's hybrid loss).
        lr: AdamW learning rate (ADM: 1e-4).
        weight_decay: AdamW weight decay (ADM: 0).
        ema_decay: EMA decay (ADM: 0.9999); the first steps use ``min(decay, (1 + n) / (10 + n))``.
        sample_steps: respaced steps of the validation samples (0: no samples).
        num_val_samples: validation samples drawn (conditioned on the first validation faces).
    """

    phase = "diffface"
    frozen_attributes = ("ema",)

    def __init__(
        self,
        image_size: int = 256,
        model_channels: int = 256,
        channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        num_head_channels: int = 64,
        dropout: float = 0.0,
        id_dim: int = 128,
        identity_encoder: Literal["dlib", "none"] = "dlib",
        identity_cache: str | None = None,
        identity_image_size: int = 160,
        diffusion_steps: int = 1000,
        lambda_vlb: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        ema_decay: float = 0.9999,
        sample_steps: int = 50,
        num_val_samples: int = 8,
    ) -> None:
        super().__init__(image_size)
        self.save_hyperparameters()
        self.net = DiffFaceUNet(
            image_size=image_size,
            model_channels=model_channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            num_head_channels=num_head_channels,
            id_dim=id_dim,
            learn_sigma=True,
            dropout=dropout,
        )
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.diffusion = GaussianDiffusion.linear(diffusion_steps)
        self._identity_rows: dict[str, int] = {}
        self._identity_table: Tensor | None = None
        self._val_batch: dict[str, Any] | None = None
        self._ema_updates = 0

    # ------------------------------------------------------------------------------- identities
    def _cache_path(self) -> Path:
        if self.hparams.identity_cache:
            return Path(self.hparams.identity_cache).expanduser()
        root = self.trainer.default_root_dir if self._trainer is not None else "."
        return Path(root) / "identity_cache.safetensors"

    @staticmethod
    def _items(dataset: Dataset, split: str) -> list[tuple[str, Any]]:
        """(key, loader) of every item: loaders read the original file when there is one."""
        indices = None
        if isinstance(dataset, Subset):
            dataset, indices = dataset.dataset, list(dataset.indices)
        n = len(dataset)  # type: ignore[arg-type]
        indices = indices if indices is not None else list(range(n))
        paths = getattr(dataset, "paths", None)
        if paths is not None:
            root = dataset.image_root  # type: ignore[attr-defined]
            return [(paths[i], root / paths[i]) for i in indices]
        return [(f"{split}:{i}", (dataset, i)) for i in indices]

    def _embed(self, items: list[tuple[str, Any]]) -> Tensor:
        from ipmn_lightning.data.images import load_image
        from ipmn_lightning.faces.analysis import DlibIdentityEncoder, require_faces_extra

        require_faces_extra("DiffFaceModule(identity_encoder='dlib') (or set model.init_args.identity_encoder: none)")
        encoder = DlibIdentityEncoder()
        size = self.hparams.identity_image_size
        rows = []
        for start in range(0, len(items), 64):
            batch = []
            for _, src in items[start : start + 64]:
                if isinstance(src, tuple):
                    batch.append(src[0][src[1]]["protected"])
                else:
                    batch.append(load_image(src, size, "center"))
            emb, _ = encoder.embed(torch.stack(batch))
            rows.append(emb)
        return torch.cat(rows) if rows else torch.zeros(0, self.hparams.id_dim)

    def _load_cache(self, path: Path) -> tuple[list[str], Tensor]:
        from safetensors import safe_open

        if not path.is_file():
            return [], torch.zeros(0, self.hparams.id_dim)
        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                meta = f.metadata() or {}
                table = f.get_tensor("embeddings")
            spec = json.loads(meta.get("spec", "{}"))
            if spec != self._cache_spec():
                return [], torch.zeros(0, self.hparams.id_dim)
            return json.loads(meta["keys"]), table
        except Exception:  # an unreadable cache is recomputed, never trusted
            return [], torch.zeros(0, self.hparams.id_dim)

    def _cache_spec(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "encoder": self.hparams.identity_encoder,
            "image_size": self.hparams.identity_image_size,
        }

    def _prepare_identities(self) -> None:
        """Embed every face of the train/val splits once (local rank 0), cache them, and load the table."""
        if self.hparams.identity_encoder == "none" or self._identity_table is not None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "dataset"):
            raise ValueError("DiffFaceModule needs the ipmn data module (data.faces_only: true for a face folder)")
        items = [it for split in ("train", "val") for it in self._items(dm.dataset(split), split)]
        path = self._cache_path()
        if self.trainer.local_rank == 0:
            keys, table = self._load_cache(path)
            known = set(keys)
            todo = [it for it in items if it[0] not in known]
            if todo:
                rank_zero_info(f"DiffFaceModule: embedding {len(todo)} faces with dlib (cached in {path})")
                new = self._embed(todo)
                keys, table = keys + [k for k, _ in todo], torch.cat([table, new])
                from safetensors.torch import save_file

                from ipmn_lightning.core.files import atomic_path

                meta = {"keys": json.dumps(keys), "spec": json.dumps(self._cache_spec())}
                with atomic_path(path) as tmp:
                    save_file({"embeddings": table.float().contiguous()}, os.fspath(tmp), metadata=meta)
        self.trainer.strategy.barrier("diffface_identity_cache")
        keys, table = self._load_cache(path)
        self._identity_rows = {k: i for i, k in enumerate(keys)}
        found = torch.isfinite(table).all(dim=1)
        self._identity_table = torch.where(found[:, None], torch.nn.functional.normalize(table.nan_to_num(0), dim=1), 0)
        missing = sum(1 for k, _ in items if k in self._identity_rows and not found[self._identity_rows[k]])
        rank_zero_info(
            f"DiffFaceModule: identity embeddings for {len(items) - missing}/{len(items)} faces "
            f"({missing} without a detected face train unconditionally)"
        )

    def setup(self, stage: str) -> None:
        """Compute (or read) the identity cache before the first step."""
        super().setup(stage)
        if stage in ("fit", "validate"):
            self._prepare_identities()

    def identities(self, batch: dict[str, Any], split: str) -> Tensor:
        """``(B, id_dim)`` conditioning of a batch (zeros where unknown or with ``identity_encoder: none``)."""
        b = batch["protected"].shape[0]
        out = torch.zeros(b, self.hparams.id_dim, device=self.device)
        if self._identity_table is None:
            return out
        keys = batch.get("key") or [f"{split}:{int(i)}" for i in batch["index"]]
        rows = [self._identity_rows.get(k, -1) for k in keys]
        idx = torch.tensor([max(r, 0) for r in rows])
        known = torch.tensor([r >= 0 for r in rows], device=self.device)
        table = self._identity_table[idx].to(self.device)
        return torch.where(known[:, None], table, out)

    # ---------------------------------------------------------------------------------- training
    def forward(self, x_t: Tensor, timesteps: Tensor, identity: Tensor) -> Tensor:
        """The network: ``(B, 6, S, S)`` [eps, v] for x_t in [-1, 1]-space at ``timesteps``."""
        return self.net(x_t, timesteps, identity)

    def _loss(self, batch: dict[str, Any], split: str, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x0 = batch["protected"] * 2 - 1
        b = x0.shape[0]
        if generator is None:
            t = torch.randint(0, self.diffusion.num_timesteps, (b,), device=self.device)
            noise = torch.randn_like(x0)
        else:  # validation: the same t and noise every epoch
            t = torch.randint(0, self.diffusion.num_timesteps, (b,), generator=generator).to(self.device)
            noise = torch.randn(x0.shape, generator=generator).to(self.device)
        x_t = self.diffusion.q_sample(x0, t, noise)
        out = self.net(x_t, t.float(), self.identities(batch, split)).float()  # the vb term in fp32 under bf16
        terms = self.diffusion.training_losses(out, x0, x_t, t, noise)
        mse, vb = terms["mse"].mean(), terms["vb"].mean()
        return {"loss": mse + self.hparams.lambda_vlb * vb, "mse": mse, "vb": vb}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One hybrid-loss step on random timesteps."""
        terms = self._loss(batch, "train")
        b = batch["protected"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=b)
        self.log_dict({"train/mse": terms["mse"], "train/vb": terms["vb"]}, batch_size=b)
        return terms["loss"]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA update.

        Lightning calls this once per optimizer step, not per batch, so under ``accumulate_grad_batches: k`` the
        EMA moves once every k batches, with the decay schedule counted in optimizer steps.
        """
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def update_ema(self) -> None:
        """Move the EMA weights towards the network's (ADM's schedule: ``min(decay, (1 + n) / (10 + n))``)."""
        self._ema_updates += 1
        n = self._ema_updates
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        with torch.no_grad():
            ema = list(self.ema.parameters())
            torch._foreach_lerp_(ema, [p.detach() for p in self.net.parameters()], 1 - decay)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Hybrid loss at fixed timesteps and noise (comparable across epochs) with the EMA weights."""
        generator = torch.Generator().manual_seed(10_000 + batch_idx)
        net = self.net
        self.net = self.ema
        try:
            terms = self._loss(batch, "val", generator)
        finally:
            self.net = net
        b = batch["protected"].shape[0]
        self.log("val/loss", terms["loss"], sync_dist=True, batch_size=b, prog_bar=True)
        self.log_dict({"val/mse": terms["mse"], "val/vb": terms["vb"]}, sync_dist=True, batch_size=b)
        if batch_idx == 0:
            self._val_batch = {"protected": batch["protected"][: self.hparams.num_val_samples].detach()}
            self._val_batch["identity"] = self.identities(batch, "val")[: self.hparams.num_val_samples]

    def on_validation_epoch_end(self) -> None:
        """Log real faces over EMA samples conditioned on their identities."""
        if not self.hparams.sample_steps or self._val_batch is None or self.trainer.sanity_checking:
            return
        if self.trainer.is_global_zero:
            samples = sample_from_noise(
                self.ema,
                self._val_batch["identity"],
                self.hparams.sample_steps,
                torch.Generator().manual_seed(0),
                self.hparams.diffusion_steps,
            )
            self.log_image_grid("val/images", [self._val_batch["protected"], samples])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW on the network (the EMA copy is not trained)."""
        return torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the network's architecture, so the sampler rebuilds it from the checkpoint alone."""
        super().on_save_checkpoint(checkpoint)
        config = self.net.config
        checkpoint["diffface_config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
        checkpoint["diffface_ema_updates"] = self._ema_updates

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the EMA step count (the EMA weights come with the state dict)."""
        super().on_load_checkpoint(checkpoint)
        self._ema_updates = int(checkpoint.get("diffface_ema_updates", 0))
