"""The console imports only the command that runs; role commands take their inputs as positional arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ipmn_lightning.console.main import (
    COMMANDS,
    SUMMARIES,
    TRAINER_COMMANDS,
    load_command,
    main,
    rewrite_positionals,
)
from ipmn_lightning.core.errors import IPMNError
from tests.helpers import write_faces


def leaves() -> list[tuple[str, str]]:
    found = []
    for name, target in COMMANDS.items():
        subs = target.items() if isinstance(target, dict) else [(None, target)]
        found += [(f"{name} {sub}" if sub else name, t) for sub, t in subs]
    return found


@pytest.mark.parametrize(("name", "target"), leaves())
def test_each_summary_is_its_commands_first_docstring_line(name: str, target: str) -> None:
    doc = load_command(target).__doc__ or ""
    assert SUMMARIES[name] == doc.strip().splitlines()[0]


def test_the_trainer_commands_are_the_lightning_clis() -> None:
    from ipmn_lightning.training.lightning_cli import TRAINER_COMMANDS as LIGHTNING_CLI_COMMANDS

    assert TRAINER_COMMANDS == LIGHTNING_CLI_COMMANDS


HEAVY = ("torch", "pytorch_lightning", "torchmetrics", "torchvision")


@pytest.mark.parametrize("args", [["--help"], ["protect", "--help"], ["recover", "--help"], ["verify", "--help"]])
def test_help_loads_nothing_heavy(args: list[str]) -> None:
    code = (
        "import sys\nfrom ipmn_lightning.console.main import main\n"
        f"try:\n    code = main({args!r})\nexcept SystemExit as stop:\n    code = stop.code or 0\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\nsys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    if args[0] == "protect":
        assert "positional arguments" in " ".join(result.stdout.split())  # the help says how to pass several


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["protect", "a.jpg", "--bundle", "s"], ["protect", "--bundle", "s", "--protected", "a.jpg"]),
        (
            ["protect", "a.jpg", "--bundle=s", "b.jpg", "--out", "o", "c d.jpg"],
            ["protect", "--bundle=s", "--out", "o", "--protected", json.dumps(["a.jpg", "b.jpg", "c d.jpg"])],
        ),
        (["recover", "--bundle", "r", "p.png"], ["recover", "--bundle", "r", "--masked", "p.png"]),
        (["verify", "--bundle", "v", "--", "-odd.png"], ["verify", "--bundle", "v", "--images", "-odd.png"]),
        (["verify", "--help"], ["verify", "--help"]),
        (["verify", "--overwrite", "a.png"], ["verify", "--overwrite", "--images", "a.png"]),
        (["verify", "--overwrite", "false", "a.png"], ["verify", "--overwrite", "false", "--images", "a.png"]),
        (
            ["recover", "p.png", "--photo", "true", "--seed", "3"],
            ["recover", "--photo", "true", "--seed", "3", "--masked", "p.png"],
        ),
        (["protect", "--bundle", "s", "--protected", "d"], ["protect", "--bundle", "s", "--protected", "d"]),
        (["masks", "pairs", "--root", "r"], ["masks", "pairs", "--root", "r"]),
    ],
)
def test_positional_inputs_become_the_input_option(args: list[str], expected: list[str]) -> None:
    assert rewrite_positionals(args) == expected


def test_inputs_given_both_ways_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(IPMNError, match="both as arguments and as --protected"):
        rewrite_positionals(["protect", "a.jpg", "--protected", "b.jpg"])
    assert main(["protect", "a.jpg", "--protected=b.jpg", "--bundle", "s", "--out", "o"]) == 2
    assert "both as arguments" in capsys.readouterr().err


def test_protect_recover_and_verify_take_files_as_arguments(
    service: Path, verifier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faces, masks = write_faces(tmp_path)
    (masks / "face1.png").unlink()  # every face given has its mask, and every mask its face
    assert main(["protect", str(faces / "face0.png"), str(faces / "face2.png"), "--mask", str(masks),
                 "--bundle", str(service), "--out", "shared"]) == 0  # fmt: skip
    assert sorted(p.name for p in Path("shared").iterdir()) == ["face0.png", "face2.png"]
    assert main(["recover", "shared/face0.png", "shared/face2.png", "--bundle", str(service), "--out", "back"]) == 0
    assert len(list(Path("back").iterdir())) == 4
    capsys.readouterr()
    main(["verify", "shared/face2.png", str(faces / "face1.png"), "--bundle", str(verifier)])
    table = capsys.readouterr().out
    assert "face2.png" in table and "face1.png" in table and "/2 image(s) verified" in table


def test_two_arguments_with_one_stem_are_refused(service: Path, tmp_path: Path, capsys) -> None:
    faces, masks = write_faces(tmp_path, n=1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "face0.png").write_bytes((faces / "face0.png").read_bytes())
    args = ["protect", str(faces / "face0.png"), str(other / "face0.png"), "--mask", str(masks)]
    assert main([*args, "--bundle", str(service), "--out", "o"]) == 2
    assert "face0" in capsys.readouterr().err
    assert not Path("o").exists()
