"""The torch files of the DiffFace wing run without Lightning: each is imported alone in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: The wing's plain-torch modules (networks, guidance nets, sampler, generator, conversion); ``module``,
#: ``predict`` and ``commands`` (which drives ``predict``) are the Lightning side.
TORCH_FILES = ["unet", "arcface", "bisenet", "face_weights", "facenets", "sampler", "generator", "convert"]


@pytest.mark.parametrize("name", TORCH_FILES)
def test_a_torch_file_does_not_import_pytorch_lightning(name):
    code = (
        f"import sys, ipmn_lightning.diffface.{name}; "
        "print(sorted(m for m in ('pytorch_lightning', 'lightning') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_package_names_resolve_lazily():
    """``ipmn_lightning.diffface.X`` for every public name, without the package importing Lightning up front."""
    code = (
        "import sys, ipmn_lightning.diffface as d; before = 'pytorch_lightning' in sys.modules; "
        "[getattr(d, n) for n in d.__all__]; print(before)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
