"""FaceSwapDataModule: (protected, replacement, mask) triplets from synthetic faces, CelebA or a folder.

The one Lightning data module of every phase (it was ``ipmn_lightning/data/datamodule.py``). Configs do not
name it: the training CLI (:mod:`ipmn_lightning.training.lightning_cli`) fixes it as the data module, so a
config's ``data:`` section (and ``--data.*`` on the command line) holds its constructor arguments. The
datasets it serves come from :mod:`ipmn_lightning.data`: :mod:`~ipmn_lightning.data.synthetic`,
:mod:`~ipmn_lightning.data.mask_store` (triplets of CelebA or a folder) and
:mod:`~ipmn_lightning.data.face_images` (single faces). It lives apart from ``data`` so that reading images
(the inference layer) never imports Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ipmn_lightning.data.mask_store import FaceSwapPairsDataset, MaskStoreError, check_store, read_pairs
from ipmn_lightning.data.synthetic import SyntheticFaceSwapDataset

Source = Literal["synthetic", "celeba", "folder"]
Split = Literal["train", "val", "test"]
TrainPart = Literal["all", "owner", "attacker"]
IMAGE_KEYS = ("protected", "replacement", "mask")


class FaceSwapDataModule(pl.LightningDataModule):
    """Shared data module of every IPMN phase.

    Batches are dicts with ``protected`` (x_p), ``replacement`` (x_r) and ``mask`` (x_m = MG(x_p, x_r)),
    each (B, 3, S, S) float in [0, 1], and ``index`` (B,) long. Training batches get one random horizontal
    flip per sample, applied to the whole triple so that the pair stays aligned.

    Args:
        source: ``synthetic`` (built-in procedural faces; the true swap is rendered, no files needed),
            ``celeba`` (official layout under ``root``) or ``folder`` (any folder of face images).
        root: dataset folder for ``celeba``/``folder``.
        mask_store: folder with ``pairs.csv`` and the precomputed masks; defaults to ``<root>/masks_store``.
        image_size: side S of the square images (centre-cropped and resized).
        batch_size: training batch size (per device under DDP).
        val_batch_size: validation/test batch size (defaults to ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory (only takes effect when training on a GPU).
        flip: paired random horizontal flip of training triples.
        seed: seed of the synthetic faces and of the folder split.
        synthetic_sizes: number of synthetic (train, val, test) triplets.
        val_fraction: share of a ``folder`` dataset used for validation.
        test_fraction: share of a ``folder`` dataset used for testing.
        check_store: validate the mask store against its images before training (every problem is
            reported at once, before the first epoch).
        train_fraction: train on this share of the training split (``1.0``: all of it).
        train_limit: train on at most this many training triplets (``None``: no limit). With
            ``train_fraction``, the smaller of the two counts. The subset is drawn once from ``seed`` alone,
            so it is the same on every DDP rank (each then reads its share of it), in every epoch and after a
            resume; validation and test splits are never reduced. An epoch is a pass over the subset, so the
            paper's epoch counts cost ``epochs * subset / batch`` steps (see the cost table in README.md).
        train_part: which part of the training split this phase reads (paper §3.3.1): ``all``; ``owner``, the
            images the owner trains phases 1, 2 and 3b on; or ``attacker``, the disjoint rest that the attacker
            queries the black box with (phase 3a). The split is one permutation seeded by ``seed`` alone, the
            attacker's part ``attacker_fraction`` of it; ``train_fraction``/``train_limit`` then reduce the part.
        attacker_fraction: share of the training split that is the attacker's (``train_part``).
        faces_only: serve single faces instead of triplets (``celeba``/``folder`` without a mask store): batches
            hold ``protected`` (the face), ``index`` and ``key`` (its relative path). For models of faces, such
            as the DiffFace DDPM (``configs/diffface.yaml``).
    """

    def __init__(
        self,
        source: Source = "synthetic",
        root: str | None = None,
        mask_store: str | None = None,
        image_size: int = 256,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        flip: bool = True,
        seed: int = 0,
        synthetic_sizes: tuple[int, int, int] = (2000, 200, 200),
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        check_store: bool = True,
        train_fraction: float = 1.0,
        train_limit: int | None = None,
        train_part: TrainPart = "all",
        attacker_fraction: float = 0.5,
        faces_only: bool = False,
    ) -> None:
        super().__init__()
        if image_size < 8 or image_size % 2:
            raise ValueError(f"image_size must be an even number >= 8, got {image_size}")
        if source != "synthetic" and root is None:
            raise ValueError(
                f"source={source!r} needs the dataset folder: set data.root (e.g. --data.root=/data/celeba)"
            )
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction} (e.g. --data.train_fraction=0.1)")
        if not 0.0 < attacker_fraction < 1.0:
            raise ValueError(
                f"attacker_fraction must be in (0, 1), got {attacker_fraction} (e.g. --data.attacker_fraction=0.5)"
            )
        if train_limit is not None and train_limit < 1:
            raise ValueError(f"train_limit must be >= 1 or null, got {train_limit} (e.g. --data.train_limit=20000)")
        for name, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r} (e.g. --data.{name}=8)")
        self.save_hyperparameters()
        self.source = source
        self.root = Path(root).expanduser() if root else None
        self.mask_store = (
            Path(mask_store).expanduser() if mask_store else (self.root / "masks_store" if self.root else None)
        )
        self.image_size = image_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.flip = flip
        self.seed = seed
        self.synthetic_sizes = synthetic_sizes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.check_store = check_store
        self.train_fraction = train_fraction
        self.train_limit = train_limit
        self.train_part = train_part
        self.attacker_fraction = attacker_fraction
        self.faces_only = faces_only
        self._datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ datasets
    def image_root(self) -> Path:
        """Folder that the ``protected``/``replacement`` paths of ``pairs.csv`` are relative to."""
        assert self.root is not None
        return self.root / "img_align_celeba" if self.source == "celeba" else self.root

    def build_dataset(self, split: Split) -> Dataset:
        """Build the dataset of one split (the training split reduced by ``train_fraction``/``train_limit``)."""
        dataset = self._build_full_dataset(split)
        return self.train_subset(dataset) if split == "train" else dataset

    def train_subset(self, dataset: Dataset) -> Dataset:
        """The deterministic training subset of ``dataset``, or ``dataset`` itself when that is all of it.

        First the ``train_part`` (owner's or attacker's share of the n triplets), then ``min(round(train_fraction *
        part), train_limit)`` triplets of it (at least one), drawn without replacement by generators seeded with
        ``seed`` only (no rank, no epoch) and kept in index order.
        """
        n = len(dataset)  # type: ignore[arg-type]
        pool = list(range(n))
        if self.train_part != "all":
            # one permutation for both parties, independent of train_fraction/limit: the parts never overlap
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + 7919)).tolist()
            cut = n - max(1, round(self.attacker_fraction * n))
            pool = sorted(order[:cut] if self.train_part == "owner" else order[cut:])
        k = max(1, round(self.train_fraction * len(pool)))
        if self.train_limit is not None:
            k = min(k, self.train_limit)
        if k >= n:
            return dataset
        if k < len(pool):
            generator = torch.Generator().manual_seed(self.seed)
            pool = sorted(pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist())
        return Subset(dataset, pool)

    def _build_full_dataset(self, split: Split) -> Dataset:
        if self.source == "synthetic":
            length = dict(zip(("train", "val", "test"), self.synthetic_sizes))[split]
            return SyntheticFaceSwapDataset(length, self.image_size, seed=self.seed, split=split)
        if self.faces_only:
            return self._build_faces_dataset(split)
        records = [r for r in read_pairs(self.mask_store) if r.split == split]
        if not records:
            raise ValueError(
                f"{self.mask_store / 'pairs.csv'} has no rows for split {split!r}; regenerate it with "
                f"`ipmn masks pairs --source {self.source} --root {self.root}`"
            )
        return FaceSwapPairsDataset(self.image_root(), self.mask_store, records, self.image_size)

    def _build_faces_dataset(self, split: Split) -> Dataset:
        from ipmn_lightning.data.face_images import FaceImagesDataset

        if self.source == "celeba":
            from ipmn_lightning.data.celeba import read_celeba_splits

            splits = read_celeba_splits(self.root)  # type: ignore[arg-type]
        else:
            from ipmn_lightning.data.folder import folder_splits

            splits = folder_splits(self.root, self.val_fraction, self.test_fraction, self.seed)  # type: ignore[arg-type]
        if split == "train" and not splits["train"]:
            raise ValueError(f"data.root={self.root} has no training images for faces_only=true; add face images")
        return FaceImagesDataset(self.image_root(), splits[split], self.image_size)

    def prepare_data(self) -> None:
        """Validate the mask store once (rank 0) so a mismatch fails before any training starts."""
        if self.source == "synthetic" or not self.check_store or self.faces_only:
            return
        if self.mask_store is None or not (self.mask_store / "pairs.csv").is_file():
            raise MaskStoreError(
                [f"no mask store at {self.mask_store} (pairs.csv missing)"],
                hint=f"write one with `ipmn masks pairs --source {self.source} --root {self.root}`, "
                "run your face-swap generator over it, or point data.mask_store at it",
            )
        problems = check_store(self.mask_store, self.image_root(), self.image_size)
        if problems:
            raise MaskStoreError(problems)

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets the stage needs."""
        wanted: tuple[Split, ...] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }.get(stage or "fit", ("train", "val", "test"))
        for split in wanted:
            if split not in self._datasets:
                self._datasets[split] = self.build_dataset(split)

    def dataset(self, split: Split) -> Dataset:
        """The dataset of ``split``, built on first use."""
        if split not in self._datasets:
            self._datasets[split] = self.build_dataset(split)
        return self._datasets[split]

    # --------------------------------------------------------------- dataloaders
    def _loader(self, split: Split, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        pin = self.pin_memory and torch.cuda.is_available()
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the last partial batch is dropped (eq. 18 pairs batch halves)."""
        return self._loader("train", self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", self.val_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", self.val_batch_size, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, for ``ipmn predict``."""
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Paired horizontal flip on the device: one coin per sample, shared by the three images."""
        trainer = self.trainer
        if self.flip and trainer is not None and trainer.training:
            flip = torch.rand(batch["protected"].shape[0], device=batch["protected"].device) < 0.5
            # no `if flip.any()`: on a GPU that would wait for the device every step (issue 16)
            for key in IMAGE_KEYS:
                if key not in batch:  # faces_only batches hold ``protected`` alone
                    continue
                images = batch[key]
                batch[key] = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        return batch
