"""The ``ipmn`` console script: the top of the package, imported by nothing.

``ipmn fit|validate|test|predict`` go to the LightningCLI (:func:`ipmn_lightning.training.lightning_cli.build_cli`);
every other command is a plain typed function, dispatched with ``jsonargparse.auto_cli``, which also generates
``ipmn --help`` and each command's ``--help`` from the signatures and docstrings. The ``ipmn masks`` commands
live in :mod:`ipmn_lightning.console.masks`.

Only the command that runs is imported (:data:`COMMANDS` names each one as ``module:function``); the others
appear in the help as stand-ins carrying their one-line summary (:data:`SUMMARIES`, kept equal to the real
docstrings by a test). So ``ipmn protect --help`` loads neither torch nor Lightning, and ``ipmn --help`` loads
nothing heavy at all.
"""

from __future__ import annotations

import importlib
import json
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import auto_cli

from ipmn_lightning import __version__
from ipmn_lightning.core.errors import IPMNError

_SUMMARY = "invertible privacy-preserving mask network with IP protection (`ipmn COMMAND --help` for each command)"

#: The LightningCLI's subcommands (equal to ``training.lightning_cli.TRAINER_COMMANDS``; a test keeps them so).
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")

#: Every other command as ``module:function``, imported only when it runs or its help is printed.
COMMANDS: dict[str, Any] = {
    "pipeline": "ipmn_lightning.workflows.pipeline:pipeline",
    "evaluate": "ipmn_lightning.workflows.evaluation.run:evaluate",
    "protect": "ipmn_lightning.inference.roles:protect",
    "recover": "ipmn_lightning.inference.roles:recover",
    "verify": "ipmn_lightning.inference.roles:verify",
    "serve": "ipmn_lightning.serve.command:serve",
    "audit": {
        "challenge": "ipmn_lightning.audit.challenge:audit_challenge",
        "query": "ipmn_lightning.audit.query:audit_query",
        "answer": "ipmn_lightning.audit.answer:audit_answer",
        "reference": "ipmn_lightning.audit.reference:audit_reference",
        "run": "ipmn_lightning.audit.verdict:audit_run",
    },
    "masks": {
        "pairs": "ipmn_lightning.console.masks:masks_pairs",
        "generate": "ipmn_lightning.console.masks:masks_generate",
        "check": "ipmn_lightning.console.masks:masks_check",
        "convert-diffface": "ipmn_lightning.diffface.commands:masks_convert_diffface",
    },
}

#: The first line of each command's docstring, for the overview without importing the command.
SUMMARIES = {
    "pipeline": "Train the phases in order, chaining their checkpoints; then export the bundles and evaluate.",
    "evaluate": "Write ``report.md``, ``report.json`` and ``examples.png``: the paper's Tables 2, 3, 4, 10 and "
    "Fig. 5/6.",
    "protect": "Sender: put the watermarked mask on each protected face; writes ``<out>/<stem>.png`` (x_wmf).",
    "recover": "Receiver: take the mask off; writes ``<out>/<stem>_face.png`` (x'_p) and ``<stem>_mask.png`` (x'_wm).",
    "verify": "IP verifier: does each image carry the owner's watermark? Exit code 0 if every image verifies, else 1.",
    "serve": "Serve protect/recover/verify over HTTP with a web page at ``/`` (paper §3.1, Fig. 1).",
    "audit challenge": "Write the owner's challenge: ``n`` fresh query pairs (x_p, x_r) and ``challenge.json``.",
    "audit answer": "Answer a challenge with a phase-3a model (a null model or a simulated thief); writes "
    "``<out>/<id>.png``.",
    "audit reference": "Owner: write the private reference of a challenge for the keyed audit score (``audit run "
    "--reference``).",
    "audit run": "Owner: does a suspect model carry the watermark? Exit code 0 if shown at ``alpha``, 1 if not, 2 "
    "on bad input.",
    "audit query": "Send each challenge image to a suspect endpoint; writes its answers to ``<out>`` and "
    "``responses.json``.",
    "masks pairs": "Write ``pairs.csv`` for a dataset: a deterministic (protected, replacement) pairing per split.",
    "masks generate": "Fill the mask store with generated masks x_m = MG(x_p, x_r); prints a JSON summary.",
    "masks check": "Validate a mask store against its dataset; prints every problem and exits non-zero if any.",
    "masks convert-diffface": "Convert DiffFace's guided-diffusion ``Model.pt`` to a diffusers-layout "
    "safetensors file.",
}

#: The option each role command takes its positional arguments into (``ipmn protect a.jpg b.jpg`` is
#: ``--protected '["a.jpg", "b.jpg"]'``): jsonargparse gives a function no variable-length positional.
POSITIONAL_INPUTS = {"protect": "protected", "recover": "masked", "verify": "images"}

#: Options that take no value (all others, ``--bundle X`` or ``--bundle=X``, take one, except a bool's, below).
_FLAGS = {"-h", "--help", "--print_config"}
#: The words a bool option (``--overwrite``, ``--photo``) takes as its value; bare, it means true.
_BOOL_WORDS = {"true", "false", "yes", "no", "null", "none", "1", "0", "on", "off"}


def _bool_options(command: str) -> set[str]:
    """The ``--name`` of each bool parameter of a role command (their module is light: no torch)."""
    function = load_command(COMMANDS[command])
    hints = typing.get_type_hints(function)
    return {f"--{name}" for name, hint in hints.items() if bool in (typing.get_args(hint) or (hint,))}


def _stand_in(summary: str) -> Callable[[], None]:
    """A command listed in the help by its summary; never run (:func:`main` runs the real one)."""

    def command() -> None:
        raise NotImplementedError("a stand-in of the help")

    command.__doc__ = summary
    return command


def load_command(target: str) -> Callable[..., Any]:
    """The function ``module:function`` names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def command_table(selected: Sequence[str] = ()) -> dict[str, Any]:
    """:data:`COMMANDS` for ``auto_cli``: the ``selected`` command (``("masks", "pairs")``) real, the rest stand-ins."""
    table: dict[str, Any] = {
        name: _stand_in(f"Trainer.{name} of a phase (LightningCLI: ``ipmn {name} --config configs/phase1.yaml``).")
        for name in TRAINER_COMMANDS
    }
    for name, target in COMMANDS.items():
        if isinstance(target, dict):
            table[name] = {
                sub: load_command(sub_target)
                if tuple(selected[:2]) == (name, sub)
                else _stand_in(SUMMARIES[f"{name} {sub}"])
                for sub, sub_target in target.items()
            }
        else:
            table[name] = load_command(target) if tuple(selected[:1]) == (name,) else _stand_in(SUMMARIES[name])
    return table


def rewrite_positionals(args: Sequence[str]) -> list[str]:
    """``protect a.jpg b.jpg --bundle S`` -> ``protect --bundle S --protected '["a.jpg", "b.jpg"]'``.

    Every option of these commands takes a value (a bool's is optional: ``--overwrite`` alone is true), so a
    word that is neither an option nor an option's value is a positional input. One input stays a plain path;
    several become a JSON list. Giving inputs both ways (``ipmn protect a.jpg --protected b.jpg``) is refused.
    """
    args = list(args)
    option = POSITIONAL_INPUTS.get(args[0]) if args else None
    if option is None:
        return args
    kept, inputs, index, bools = [args[0]], [], 1, _bool_options(args[0])
    while index < len(args):
        word = args[index]
        if word == "--":  # everything after is an input, even a name that starts with "-"
            inputs += args[index + 1 :]
            break
        if word.startswith("-"):
            takes_value = "=" not in word and word not in _FLAGS
            if word in bools:  # a bool's value is optional: take the next word only when it is one
                takes_value = index + 1 < len(args) and args[index + 1].lower() in _BOOL_WORDS
            kept += args[index : index + 1 + takes_value]
            index += 1 + takes_value
            continue
        inputs.append(word)
        index += 1
    if not inputs:
        return kept
    if any(w == f"--{option}" or w.startswith(f"--{option}=") for w in kept):
        raise IPMNError(f"ipmn {args[0]}: inputs given both as arguments and as --{option}; use one of them")
    return [*kept, f"--{option}", inputs[0] if len(inputs) == 1 else json.dumps(inputs)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ipmn`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TRAINER_COMMANDS:
        from ipmn_lightning.training.lightning_cli import build_cli  # Lightning loads only for these commands

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
            auto_cli(command_table(), args=args or ["--help"], **options)
        except SystemExit as stop:
            return int(stop.code or 0)
    try:
        if args[0] == "masks":
            from ipmn_lightning.console.masks import rewrite_generator_flags

            args = rewrite_generator_flags(args)
        if args[0] == "audit" and len(args) > 1 and args[1].startswith("--") and args[1] not in _FLAGS:
            args = ["audit", "run", *args[1:]]  # `ipmn audit --bundle ...` is `ipmn audit run --bundle ...`
        args = rewrite_positionals(args)
        return int(auto_cli(command_table(args[:2]), args=args, **options) or 0)
    except IPMNError as err:  # a command that did not catch its own bad input still exits 2 with the message
        print(f"error: {err}", file=sys.stderr)
        return 2
