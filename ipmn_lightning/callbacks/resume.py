"""Exact resume: per-rank random streams under DDP, and ``--ckpt_path`` resumes that continue a run exactly.

:class:`ExactResume` gives every DDP rank its own random stream and stores the random state (torch, CUDA, numpy,
Python and the training sampler's generator) in checkpoints, so that ``--ckpt_path`` continues a run as if it had
never stopped. The helpers below read and write those states.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

__all__ = ["ExactResume"]


def _train_loaders(trainer: pl.Trainer) -> list[DataLoader]:
    """The training DataLoaders (Lightning's processed ones, e.g. with a DistributedSampler under DDP)."""

    def flatten(obj: Any) -> Iterator[Any]:
        if isinstance(obj, Mapping):
            for value in obj.values():
                yield from flatten(value)
        elif isinstance(obj, list | tuple):
            for value in obj:
                yield from flatten(value)
        else:
            yield obj

    return [loader for loader in flatten(trainer.train_dataloader) if isinstance(loader, DataLoader)]


def _samplers(loader: DataLoader) -> list[Any]:
    samplers = [loader.sampler]
    inner = getattr(loader.batch_sampler, "sampler", None)
    if inner is not None and inner is not loader.sampler:
        samplers.append(inner)
    return samplers


def _train_generators(trainer: pl.Trainer) -> list[torch.Generator]:
    """The generators that decide the training data order (DataLoader and its sampler), each once."""
    generators: list[torch.Generator] = []
    for loader in _train_loaders(trainer):
        sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
        for generator in (loader.generator, getattr(sampler, "generator", None)):
            if isinstance(generator, torch.Generator) and all(generator is not g for g in generators):
                generators.append(generator)
    return generators


def _collect_rng_state() -> dict[str, Any]:
    """The global random states in a form ``torch.load(weights_only=True)`` reads (tensors, ints, tuples).

    Not Lightning's ``_collect_rng_states``: it stores numpy's state as a tuple holding an ndarray, which a
    weights-only load refuses by default, and every checkpoint here is loaded weights-only.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _pending_plateau_updates(trainer: pl.Trainer) -> list[dict[str, Any]]:
    """Plateau updates Lightning will make after this epoch's ``on_train_epoch_end`` (so after a checkpoint)."""
    module = trainer.lightning_module
    if module is None or not module.automatic_optimization:
        return []
    if trainer.fit_loop.epoch_loop.batch_progress.current.ready < trainer.num_training_batches:
        return []  # Lightning updates epoch schedulers only once the epoch's batches are done
    pending = []
    for index, config in enumerate(trainer.lr_scheduler_configs):
        if not config.reduce_on_plateau or config.interval != "epoch":
            continue
        if (trainer.current_epoch + 1) % config.frequency or config.monitor not in trainer.callback_metrics:
            continue
        value = float(trainer.callback_metrics[config.monitor])
        pending.append({"index": index, "value": value, "last_epoch": int(config.scheduler.last_epoch)})
    return pending


def _fast_rng_state() -> tuple[Any, ...]:
    """The global random states as the libraries return them (cheap enough for every batch)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), np.random.get_state(), random.getstate(), cuda


def _set_fast_rng_state(state: tuple[Any, ...]) -> None:
    cpu, numpy_state, python_state, cuda = state
    torch.set_rng_state(cpu)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _seed_all(seed: int) -> None:
    """Seed torch (every device), numpy and Python without touching ``PL_GLOBAL_SEED``."""
    seed %= 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ExactResume(Callback):
    """Per-rank random streams under DDP, and ``--ckpt_path`` resumes that continue a run exactly.

    - **Per-rank seeding.** ``seed_everything`` gives every DDP process the same seed, so the random flips and
      the phase-2 Gaussian ``z`` would repeat on every GPU. Under DDP with ``PL_GLOBAL_SEED`` set, ranks above 0
      are reseeded from (seed, rank, epoch) at the start of every epoch and from (seed, rank, step) after every
      training batch; rank 0 keeps the stream a one-GPU run has. Model weights are not affected: the modules
      are built before fitting and DDP copies rank 0's weights.
    - **Resume.** Checkpoints get the random state of torch, CUDA, numpy and Python, and the state of the
      training DataLoader's and sampler's generators both now and at the start of the epoch, with the number of
      batches the epoch has already drawn. When a fit resumes, the state is restored at ``on_train_start`` and
      the epoch's data iterator is created again from the restored generators (as Lightning does at the start of
      each epoch of an uninterrupted run); after a mid-epoch checkpoint the batches the epoch had already trained
      on are drawn and dropped (data loading only), so the run continues with the batch it would have seen next.
      Under DDP the checkpoint holds rank 0's state; the data shards come from Lightning's seeded
      ``DistributedSampler`` and the other ranks' streams are functions of (seed, rank, position), so every
      rank continues exactly. (Without ``seed_everything`` ranks above 0 get a stream derived from rank 0's.)
    - **Plateau schedulers stepped by Lightning** (automatic optimization, e.g. phase 3b): Lightning updates
      them after ``on_train_epoch_end``, that is after the epoch's checkpoint was written, and does not redo the
      update when it resumes (the monitored value is not in the checkpoint), so a resumed run's patience
      counter would lag one epoch. The monitored value is saved here and the missing update applied on resume.
      (The phase-1 and phase-2 schedulers are stepped by hand before the checkpoint and need nothing.)
    - **Validation during fit** leaves the training random streams as it found them (see
      :meth:`on_validation_end`), as Lightning does for its sanity check.

    The iterator is recreated through Lightning's private ``fit_loop._data_fetcher``: a ``StatefulDataLoader``
    (public) was measured not bit-identical without workers (docs/scaling.md). To give every epoch's iterator a
    known starting state, the first epoch's iterator of a fresh fit is created once more at ``on_train_start``
    (the data order differs from a run without this callback, reproducibly).

    Args:
        per_rank_seed: reseed DDP ranks above 0 as described (needs ``seed_everything``).
        restore: restore the saved random state (and the data position) when a fit resumes from a checkpoint.
    """

    def __init__(self, per_rank_seed: bool = True, restore: bool = True) -> None:
        self.per_rank_seed = per_rank_seed
        self.restore = restore
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, Any] | None = None
        # (epoch, generator states right before that epoch's data iterator was created)
        self._epoch_start: tuple[int, list[Tensor]] | None = None
        self._before_validation: tuple[Any, ...] | None = None

    @property
    def state_key(self) -> str:
        """One entry per checkpoint, whatever the arguments."""
        return type(self).__qualname__

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remember the trainer."""
        self._trainer = trainer
        self._epoch_start = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Forget a state loaded by a run that did not train (``validate``/``test`` with ``ckpt_path``)."""
        self._pending = None
        self._before_validation = None

    def rank_seed(self, trainer: pl.Trainer, kind: str, index: int) -> int | None:
        """The seed of a DDP rank above 0 at epoch or step ``index`` (``None``: the process keeps its stream)."""
        seed = os.environ.get("PL_GLOBAL_SEED")
        if not self.per_rank_seed or trainer.world_size <= 1 or trainer.global_rank == 0 or seed is None:
            return None  # rank 0, one process, or no seed_everything (each process drew its own seed)
        key = f"{seed}:{trainer.global_rank}:{kind}:{index}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little")

    def _reseed_rank(self, trainer: pl.Trainer, kind: str, index: int) -> None:
        seed = self.rank_seed(trainer, kind, index)
        if seed is not None:
            _seed_all(seed)

    def state_dict(self) -> dict[str, Any]:
        """The random state of this process and the data position of the epoch (rank 0's is written)."""
        state: dict[str, Any] = {"rng": _collect_rng_state(), "generators": [], "epoch": -1, "batches": 0}
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            state["generators"] = [g.get_state() for g in _train_generators(trainer)]
            state["epoch"] = trainer.current_epoch
            state["batches"] = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            state["total_batches"] = trainer.fit_loop.epoch_loop.batch_progress.total.ready
            if self._epoch_start is not None and self._epoch_start[0] == trainer.current_epoch:
                state["epoch_generators"] = self._epoch_start[1]
            state["pending_plateau"] = _pending_plateau_updates(trainer)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the state until the data loaders exist (``on_train_start``)."""
        self._pending = state_dict if self.restore else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the saved state and recreate the epoch's data iterator from it (or mark a fresh start)."""
        state, self._pending = self._pending, None
        generators = _train_generators(trainer)
        epoch = trainer.current_epoch
        if not state:
            self._reseed_rank(trainer, "epoch", epoch)
            self._start_epoch(trainer, epoch, generators, None)
            return
        for update in state.get("pending_plateau") or []:
            config = trainer.lr_scheduler_configs[update["index"]]
            if config.reduce_on_plateau and config.scheduler.last_epoch == update["last_epoch"]:
                pl_module.lr_scheduler_step(config.scheduler, torch.tensor(update["value"]))
        saved_epoch, seen = int(state.get("epoch", -1)), int(state.get("batches", 0))
        if saved_epoch < epoch:  # saved at the end of an epoch: this epoch starts from the saved state
            self._restore_rng(trainer, state)
            self._reseed_rank(trainer, "epoch", epoch)
            self._start_epoch(trainer, epoch, generators, state.get("generators"))
        elif seen < trainer.num_training_batches and state.get("epoch_generators") is not None:
            # mid-epoch: replay the epoch's data order up to where it stopped, then continue the random streams
            self._start_epoch(trainer, epoch, generators, state["epoch_generators"], seen)
            self._restore_rng(trainer, state)
            self._reseed_rank(trainer, "step", int(state.get("total_batches", 0)))
        else:  # the epoch's batches are all done; Lightning draws the next epoch's iterator itself
            self._restore_rng(trainer, state)
            self._set_generators(generators, state.get("generators"))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Before Lightning creates this epoch's data iterator: reseed ranks above 0, note the generators."""
        if self._epoch_start is None or self._epoch_start[0] != trainer.current_epoch:
            self._reseed_rank(trainer, "epoch", trainer.current_epoch)
            self._epoch_start = (trainer.current_epoch, [g.get_state() for g in _train_generators(trainer)])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Reseed ranks above 0 for the next batch (their streams resume at any step); note the random state."""
        self._reseed_rank(trainer, "step", trainer.fit_loop.epoch_loop.batch_progress.total.ready)
        # a validation may follow; Lightning creates its data iterator before any validation hook
        self._before_validation = _fast_rng_state()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Undo what validation drew from the training random streams.

        A validation DataLoader without a generator draws a seed from torch's global generator each time its
        iterator is created, which with persistent workers happens once per process: a resumed run's first
        validation would draw once more than the uninterrupted run's. Validation is isolated the way Lightning
        isolates its sanity check.
        """
        state, self._before_validation = self._before_validation, None
        if state is not None and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            _set_fast_rng_state(state)

    @staticmethod
    def _restore_rng(trainer: pl.Trainer, state: Mapping[str, Any]) -> None:
        _set_rng_state(state["rng"])
        if trainer.world_size > 1 and trainer.global_rank > 0:
            # rank 0's state was saved: give this rank a distinct stream derived from it (replaced by the
            # rank's own seed where per-rank seeding is on)
            generator = torch.Generator()
            generator.set_state(state["rng"]["torch"])
            _seed_all(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) + trainer.global_rank)

    @staticmethod
    def _set_generators(generators: list[torch.Generator], states: list[Tensor] | None) -> None:
        if not states:
            return
        if len(states) != len(generators):
            rank_zero_warn(
                f"ExactResume: the checkpoint has {len(states)} training data generators, this run has "
                f"{len(generators)}; the data order after resuming differs from an uninterrupted run"
            )
            return
        for generator, state in zip(generators, states):
            generator.set_state(state)

    def _start_epoch(
        self,
        trainer: pl.Trainer,
        epoch: int,
        generators: list[torch.Generator],
        states: list[Tensor] | None,
        seen: int = 0,
    ) -> None:
        """Create the epoch's data iterator from the generator ``states`` and drop its first ``seen`` batches."""
        self._set_generators(generators, states)
        self._epoch_start = (epoch, [g.get_state() for g in generators])
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is None:
            return
        # Lightning sets the samplers' epoch only after this hook; a DistributedSampler draws its order from it
        for loader in _train_loaders(trainer):
            for sampler in _samplers(loader):
                if callable(getattr(sampler, "set_epoch", None)):
                    sampler.set_epoch(epoch)
        iter(fetcher)  # what Lightning does at the start of every later epoch
        if seen:
            rank_zero_info(f"ExactResume: skipping the {seen} batches epoch {epoch} had already trained on")
            for _ in range(seen):
                next(fetcher.iterator)
