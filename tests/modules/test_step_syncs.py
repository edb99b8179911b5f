"""Host synchronisations in training steps: at most one tensor-to-Python conversion per optimisation step.

On a GPU every conversion of a device tensor to a Python value (``.item()``, ``bool()``/``if`` on a tensor,
``float()``, ``int()``, ``.tolist()``) waits for the queued kernels: the CPU cannot run ahead and the GPU
idles. On the CPU there is no such wait, so the tests count the conversions themselves, by patching them,
inside whole optimisation steps of each phase on a tiny Trainer.

Not counted: conversions made inside ``torch.optim`` (Adam's step counters are CPU tensors on every device
unless ``capturable``/``fused``, so their ``.item()`` is no device sync).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ipmn_lightning.modules import (
    ExtractorEnhanceModule,
    InvertibleMaskModule,
    StealingAttackModule,
    WatermarkPretrainModule,
)
from tests.helpers import SIZE, TINY_PHASE1, TINY_PHASE2, tiny_data, tiny_trainer

CONVERSIONS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__")
TORCH = str(Path(torch.__file__).parent)
OPTIM = str(Path(torch.optim.__file__).parent)


def _call_site() -> str | None:
    """``file:line`` of the first caller outside torch, or ``None`` for a conversion inside ``torch.optim``."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(TORCH):
        if frame.f_code.co_filename.startswith(OPTIM):
            return None
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Record ``file:line name`` of every tensor-to-Python conversion made inside the block."""
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in CONVERSIONS}
    depth = [0]

    def wrap(name: str, original):
        def conversion(self, *args, **kwargs):
            if depth[0] == 0:  # a conversion inside a conversion (item -> __index__) counts once
                site = _call_site()
                if site is not None:
                    calls.append(f"{site} {name}")
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return conversion

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def build(phase: str, checkpoints: dict[str, Path], **kwargs: object) -> torch.nn.Module:
    p1, p2, steal = (str(checkpoints[k]) for k in ("phase1", "phase2", "stealer"))
    if phase == "phase1":
        return WatermarkPretrainModule(image_size=SIZE, **{**TINY_PHASE1, "gradient_clip_val": 1.0, **kwargs})
    if phase == "phase2":
        return InvertibleMaskModule(image_size=SIZE, phase1_ckpt=p1, **{**TINY_PHASE2, **kwargs})
    if phase == "phase3_steal":
        return StealingAttackModule(image_size=SIZE, phase1_ckpt=p1, phase2_ckpt=p2, stealer="cnet", ngf=4, **kwargs)
    return ExtractorEnhanceModule(image_size=SIZE, phase1_ckpt=p1, phase2_ckpt=p2, stealer_ckpt=[steal], **kwargs)


def syncs_per_step(module: torch.nn.Module, steps: int = 3) -> list[list[str]]:
    """Fit ``steps`` steps; the conversions of each whole optimisation step (forward, backward, guards, step).

    Manual optimisation (phases 1, 2) does everything in ``training_step``; automatic optimisation runs
    ``training_step`` and the backward inside the ``optimizer_step`` hook's closure.
    """
    per_step: list[list[str]] = []
    hook = "training_step" if not module.automatic_optimization else "optimizer_step"
    original = getattr(module, hook)

    def counted(*args, **kwargs):
        with count_host_syncs() as calls:
            out = original(*args, **kwargs)
        per_step.append(calls)
        return out

    setattr(module, hook, counted)
    trainer = tiny_trainer(max_epochs=steps, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=tiny_data())
    assert len(per_step) == steps
    return per_step


def test_counter_sees_every_kind_of_conversion():
    x = torch.ones(2)
    with count_host_syncs() as calls:
        x.sum().item()
        bool(x.all())
        float(x.sum())
        int(x.sum())
        x.tolist()
        if torch.isfinite(x).all():
            pass
        f"{x.sum():.3f}"
    assert len(calls) == 7, calls
    assert all(__file__ in c for c in calls)


@pytest.mark.parametrize("phase", ["phase1", "phase2", "phase3_steal", "phase3_enhance"])
def test_at_most_one_host_sync_per_training_step(phase, checkpoints):
    per_step = syncs_per_step(build(phase, checkpoints))
    # phase 2's guards (non-finite loss or gradients, loss spikes, all ranks agreeing) need exactly one:
    # the decision whether to step; the other phases need none
    allowed = 1 if phase == "phase2" else 0
    for calls in per_step:
        assert len(calls) <= allowed, calls


def test_phase2_guards_keep_their_behaviour_with_one_sync(checkpoints):
    """A spiking loss is skipped after warm-up, counted, and still costs one conversion."""
    module = build("phase2", checkpoints, spike_factor=1.5, spike_warmup_steps=1)
    original = module.losses
    calls = [0]

    def spiking_losses(*args, **kwargs):
        out = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:  # the third step's loss is 100x the running average
            out["fp"] = out["fp"] * 100.0
        return out

    module.losses = spiking_losses
    per_step = syncs_per_step(module, steps=4)
    assert [len(c) for c in per_step] == [1, 1, 1, 1]
    assert int(module.skipped_steps) == 1
    assert math.isfinite(float(module.loss_average))


def test_phase2_spike_guard_recovers_from_a_lasting_rise(checkpoints):
    """A loss that rises 100x for good is skipped spike_patience times, then taken as its new level (issue 14).

    Before, the average moved only on taken steps, so every later step was skipped.
    """
    module = build("phase2", checkpoints, spike_factor=10.0, spike_warmup_steps=1)  # default spike_patience: 10
    original = module.losses
    losses: list[torch.Tensor] = []

    def risen_losses(*args, **kwargs):
        out = original(*args, **kwargs)
        if len(losses) >= 2:  # from the third step on, the loss is 100x what it was
            out["fp"] = out["fp"] * 100.0
        losses.append(out["fp"].detach())  # no conversion here: the step's syncs are counted
        return out

    module.losses = risen_losses
    per_step = syncs_per_step(module, steps=16)
    assert [len(c) for c in per_step] == [1] * 16
    assert int(module.skipped_steps) == 10  # steps 3-12; step 13 re-bases the average, 14-16 are taken
    assert float(losses[-1]) / 10.0 < float(module.loss_average) < float(losses[-1]) * 10.0
    assert int(module.spike_run) == 0


class SpikesOnRankOne(InvertibleMaskModule):
    """Phase 2 whose loss spikes 1000x on rank 1 only, from the second step on (module level: DDP pickles it)."""

    def losses(self, *args, **kwargs):
        out = super().losses(*args, **kwargs)
        if self.global_rank == 1 and self.global_step >= 1:
            out["fp"] = out["fp"] * 1000.0
        return out


def test_phase2_ranks_agree_to_skip_under_ddp(checkpoints):
    """A spike on one rank skips the step on both (the verdict's maximum is all-reduced, no host round trip)."""
    module = SpikesOnRankOne(
        image_size=SIZE, phase1_ckpt=str(checkpoints["phase1"]), spike_factor=10.0, spike_warmup_steps=1,
        **TINY_PHASE2,
    )  # fmt: skip
    trainer = tiny_trainer(devices=2, strategy="ddp_spawn", max_epochs=3, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=tiny_data(batch_size=2))
    # rank 0's state comes back: it saw no spike itself, yet skipped the two steps rank 1 rejected
    assert int(module.skipped_steps) == 2
