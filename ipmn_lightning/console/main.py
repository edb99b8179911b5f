"""The ``ipmn`` console script: the top of the package, imported by nothing.

``ipmn fit|validate|test|predict`` go to the LightningCLI (:func:`ipmn_lightning.training.lightning_cli.build_cli`);
every other command is a plain typed function, dispatched with ``jsonargparse.auto_cli`` over :data:`COMMANDS`,
which also generates ``ipmn --help`` and each command's ``--help`` from the signatures and docstrings. The
``ipmn masks`` commands live in :mod:`ipmn_lightning.console.masks`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import auto_cli

from ipmn_lightning import __version__
from ipmn_lightning.console.masks import masks_check, masks_generate, masks_pairs, rewrite_generator_flags
from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.diffface.commands import masks_convert_diffface
from ipmn_lightning.inference.roles import protect, recover, verify
from ipmn_lightning.serve import serve
from ipmn_lightning.training.lightning_cli import TRAINER_COMMANDS, build_cli
from ipmn_lightning.workflows.evaluation import evaluate
from ipmn_lightning.workflows.pipeline import pipeline

_SUMMARY = "invertible privacy-preserving mask network with IP protection (`ipmn COMMAND --help` for each command)"


def _trainer_command(name: str) -> Callable[[], None]:
    """A stand-in listing ``ipmn <name>`` in the help; :func:`main` hands the command to the LightningCLI."""

    def command() -> None:
        raise NotImplementedError(f"`ipmn {name}` runs through the LightningCLI")

    command.__doc__ = f"Trainer.{name} of a phase (LightningCLI: ``ipmn {name} --config configs/phase1.yaml``)."
    return command


COMMANDS: dict[str, Any] = {
    **{name: _trainer_command(name) for name in TRAINER_COMMANDS},
    "pipeline": pipeline,
    "evaluate": evaluate,
    "protect": protect,
    "recover": recover,
    "verify": verify,
    "serve": serve,
    "masks": {
        "pairs": masks_pairs,
        "generate": masks_generate,
        "check": masks_check,
        "convert-diffface": masks_convert_diffface,
    },
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ipmn`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TRAINER_COMMANDS:
        try:
            build_cli(args)
        except IPMNError as err:  # every error on bad input (a checkpoint, a config path, a file) is an IPMNError
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        print(f"ipmn: unknown command {args[0]!r}; run `ipmn --help` for the list", file=sys.stderr)
        return 2
    options = {"prog": "ipmn", "version": __version__, "description": f"ipmn {__version__}: {_SUMMARY}"}
    if not args or args[0].startswith("-"):  # the overview (--help, --version): its exit code, returned
        try:
            auto_cli(COMMANDS, args=args or ["--help"], **options)
        except SystemExit as stop:
            return int(stop.code or 0)
    try:
        return int(auto_cli(COMMANDS, args=rewrite_generator_flags(args), **options) or 0)
    except IPMNError as err:  # a command that did not catch its own bad input still exits 2 with the message
        print(f"error: {err}", file=sys.stderr)
        return 2
