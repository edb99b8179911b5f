"""Callbacks for scale and tracking: config saving for W&B, resumable random state, a sweep objective.

- :class:`IPMNSaveConfigCallback` replaces LightningCLI's ``SaveConfigCallback``: it never fails because a
  ``config.yaml`` already exists, writes the config next to a W&B run's checkpoints and into the run's files,
  and puts the resolved config into the W&B run config.
- :class:`ExactResume` gives every DDP rank its own random stream and stores the random state (torch,
  CUDA, numpy, Python and the training sampler's generator) in checkpoints, so that ``--ckpt_path`` continues a
  run as if it had never stopped.
- :class:`SweepObjective` logs one number a W&B sweep can optimise when the searched loss weights trade two goals
  against each other (every single metric can be gamed by such a search).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from ipmn_lightning.core.files import atomic_write_text
from ipmn_lightning.phases import PHASE1, PHASE2, PHASE3_STEAL

__all__ = [
    "ExactResume",
    "IPMNSaveConfigCallback",
    "SweepObjective",
    "default_wandb_run_name",
    "free_config_path",
]

# ---------------------------------------------------------------------------------------------- config saving


def free_config_path(directory: str | os.PathLike[str], filename: str = "config.yaml", overwrite: bool = True) -> Path:
    """Where to write a run's config: ``directory/filename``, or the first free ``stem-N.suffix`` next to it.

    Args:
        directory: target folder.
        filename: file name, e.g. ``config.yaml``.
        overwrite: replace an existing file instead of picking a new name.
    """
    path = Path(directory) / filename
    if overwrite or not path.exists():
        return path
    stem, suffix = path.stem, path.suffix
    n = 1
    while (candidate := path.with_name(f"{stem}-{n}{suffix}")).exists():
        n += 1
    return candidate


def _wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def _wandb_run_dir(logger: WandbLogger) -> Path | None:
    """``<save_dir>/<project>/<run id>``: the folder where ModelCheckpoint puts a W&B run's checkpoints."""
    if logger.save_dir is None or logger.version is None:
        return None
    return Path(logger.save_dir) / str(logger.name) / str(logger.version)


class IPMNSaveConfigCallback(SaveConfigCallback):
    """LightningCLI config saving that never aborts a run and feeds Weights & Biases.

    Where the config goes (rank 0 only, written atomically):

    - with a ``WandbLogger`` first in ``trainer.logger``: ``<save_dir>/<project>/<run id>/config.yaml`` (next to the
      run's checkpoints; Lightning's default ``trainer.log_dir`` would be ``save_dir``, shared by every run), a copy in
      the run's files (``wandb.run.dir``, uploaded with the run) and the resolved config under the key ``config`` of
      the W&B run config;
    - otherwise: ``trainer.log_dir/config.yaml`` as LightningCLI does.

    An existing file is replaced when ``overwrite`` is true (the ``ipmn`` default) and kept otherwise, the config
    then going to the next free ``config-N.yaml``: no run ever fails because a ``config.yaml`` already exists.
    No collective call is made on rank 0 alone, so this is safe under DDP. Lightning's ``setup`` is replaced, not
    extended: it raises on an existing file and writes to ``trainer.log_dir``, and the choice of folder cannot move
    to the ``save_config`` hook, which Lightning calls on rank 0 only while ``trainer.log_dir`` is a collective call.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Write the config once per trainer (the first ``setup``)."""
        if self.already_saved:
            return
        # every rank takes part in trainer.log_dir (it broadcasts); only rank 0 writes
        log_dir = trainer.log_dir if self.save_to_log_dir else None
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            if self.save_to_log_dir:
                wandb = _wandb_loggers(trainer)
                run_dir = _wandb_run_dir(wandb[0]) if wandb and trainer.loggers[0] is wandb[0] else None
                directory = run_dir or (Path(log_dir) if log_dir is not None else None)
                if directory is not None:
                    path = free_config_path(directory, self.config_filename, self.overwrite)
                    if self.multifile:  # one file per --config, as LightningCLI writes them
                        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=True)
                    else:
                        atomic_write_text(path, text)
                    rank_zero_info(f"LightningCLI config saved to {path}")
            self._dumped = text
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Put the resolved config into every W&B run: its config (key ``config``) and its files."""
        text = getattr(self, "_dumped", None) or self.parser.dump(self.config, skip_none=False)
        for logger in _wandb_loggers(trainer):
            run = logger.experiment
            config = getattr(run, "config", None)
            if config is not None and hasattr(config, "update"):
                config.update({"config": yaml.safe_load(text)}, allow_val_change=True)
            run_files = getattr(run, "dir", None)
            if isinstance(run_files, str) and run_files and os.path.isdir(run_files):
                atomic_write_text(Path(run_files) / self.config_filename, text)


def default_wandb_run_name(model_class_path: str | None, init_args: Mapping[str, Any] | None = None) -> str | None:
    """The W&B run name of a phase: the module's ``phase`` (``phase1``, ...), plus the stealer in 3a.

    Args:
        model_class_path: ``model.class_path`` of the LightningCLI config.
        init_args: ``model.init_args`` (for the stealer architecture of phase 3a).

    Returns:
        The name, or ``None`` when the class cannot be imported.
    """
    if not model_class_path:
        return None
    from jsonargparse import Namespace

    module_name, _, class_name = model_class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        return None
    phase = getattr(cls, "phase", None) or cls.__name__
    args = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args or {})
    stealer = args.get("stealer")
    return f"{phase}-{stealer}" if stealer and phase == PHASE3_STEAL else str(phase)


# ------------------------------------------------------------------------------------------------ random state


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


# ------------------------------------------------------------------------------------------------------ sweeps

#: Default objectives per phase: a weighted sum of validation metrics, all larger-is-better.
SWEEP_OBJECTIVES: dict[str, dict[str, float]] = {
    # PSNR (dB) of the watermarked mask, minus 1 dB for every 5 % of failed extractions or false positives:
    # searching the loss weights trades invisibility against extraction, so neither alone is the objective
    PHASE1: {"val/psnr_mask": 1.0, "val/sr_e_watermarked": 20.0, "val/fpr_mask": -20.0},
    # mean PSNR (dB) of the 8-bit masked face (x_wmf vs x_wm) and of the face recovered from it (x'_p vs x_p)
    PHASE2: {"val/psnr_masked_q8": 0.5, "val/psnr_recovered_q8": 0.5},
}


class SweepObjective(Callback):
    """Log ``name`` = Σ weight · metric over validation metrics, the number a W&B sweep optimises.

    A sweep over loss weights that optimises one metric would simply buy that metric with the others (e.g. lower
    the invisibility weight to raise NC). The defaults (:data:`SWEEP_OBJECTIVES`) combine the two sides of each
    phase's trade-off; pass ``terms`` to choose your own. Add it from the command line with
    ``--trainer.callbacks+=ipmn_lightning.callbacks.SweepObjective``. The inputs are epoch-level metrics that
    Lightning/torchmetrics already reduced over DDP ranks, so every rank logs the same value.

    Args:
        name: key logged (the sweep's ``metric.name``).
        terms: metric key -> weight; ``None`` picks the defaults of the module's ``phase``.
    """

    def __init__(self, name: str = "val/objective", terms: dict[str, float] | None = None) -> None:
        self.name = name
        self.terms = dict(terms) if terms is not None else None

    def _terms(self, pl_module: pl.LightningModule) -> dict[str, float]:
        if self.terms is not None:
            return self.terms
        phase = getattr(pl_module, "phase", None)
        if phase not in SWEEP_OBJECTIVES:
            raise ValueError(
                f"SweepObjective has no default terms for phase {phase!r}; pass "
                "--trainer.callbacks.init_args.terms='{\"val/metric\": 1.0}'"
            )
        return SWEEP_OBJECTIVES[phase]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Combine this epoch's validation metrics (skipped during the sanity check)."""
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        terms = self._terms(pl_module)
        missing = [key for key in terms if key not in metrics]
        if missing:
            rank_zero_warn(f"SweepObjective: {missing} not logged this epoch; {self.name} not logged")
            return
        value = sum(float(weight) * float(metrics[key]) for key, weight in terms.items())
        pl_module.log(self.name, value, sync_dist=False)
