"""Shared fixtures: offline guard, a clean working directory, fake datasets in the real layouts, role bundles."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tiny test tensors run faster on one thread than with two threads fighting over busy cores
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture(autouse=True)
def _offline_and_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own folder, with an empty torch hub cache and no way out to the network."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "localhost", "::1"):
            raise RuntimeError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny checkpoints of every phase (32 px), trained for a couple of steps on synthetic faces."""
    from tests.helpers import make_checkpoints

    return make_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def fake_celeba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CelebA in the official layout, with a mask store at <root>/masks_store."""
    root = tmp_path_factory.mktemp("celeba")
    from tests.helpers import load_script

    load_script("make_fake_celeba").make_fake_celeba(root, n=12, size=48)
    return root


@pytest.fixture(scope="session")
def fake_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny folder of face images with a mask store at <root>/masks_store."""
    root = tmp_path_factory.mktemp("folder")
    from tests.helpers import load_script

    load_script("make_fake_folder").make_fake_folder(root, n=10, size=40)
    return root


@pytest.fixture(scope="module")
def service(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service bundle (embedder + INN) exported from the tiny phase 2 checkpoint; one per test module."""
    from ipmn_lightning.inference.bundle import export_service_bundle

    return export_service_bundle(checkpoints["phase2"], tmp_path_factory.mktemp("service") / "service.safetensors")


@pytest.fixture(scope="module")
def receiver(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A receiver bundle (the INN only, no H and no w) exported from the tiny phase 2 checkpoint."""
    from ipmn_lightning.inference.bundle import export_receiver_bundle

    return export_receiver_bundle(checkpoints["phase2"], tmp_path_factory.mktemp("receiver") / "receiver.safetensors")


@pytest.fixture(scope="module")
def verifier(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verifier bundle (extractor + watermark) exported from the tiny phase 1 checkpoint; one per test module."""
    from ipmn_lightning.inference.bundle import export_verifier_bundle

    return export_verifier_bundle(checkpoints["phase1"], tmp_path_factory.mktemp("verifier") / "verifier.safetensors")
