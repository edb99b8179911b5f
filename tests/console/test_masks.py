"""The ``ipmn masks`` commands' own parts: the ``--generator.KEY`` flags and the registry's choices."""

from __future__ import annotations

import typing

from ipmn_lightning.console.masks import GeneratorName, masks_generate, rewrite_generator_flags
from ipmn_lightning.faces.generators import GENERATORS


def test_generator_flags_reach_the_options():
    args = ["--root", "r", "--generator", "diffface", "--generator.checkpoint", "c.ckpt", "--generator.devices=2"]
    assert rewrite_generator_flags(args) == [
        "--root", "r", "--generator", "diffface", "--generator_options.checkpoint", "c.ckpt",
        "--generator_options.devices=2",
    ]  # fmt: skip


def test_the_generator_choices_are_the_registry():
    assert typing.get_args(GeneratorName) == tuple(GENERATORS) == ("landmark", "mosaic", "diffface")
    hints = typing.get_type_hints(masks_generate)
    assert typing.get_args(hints["generator"]) == tuple(GENERATORS)
