"""Fixtures of the service tests: the engine of the tiny bundles, the keys and a live server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tests.serve.live import OWNER_KEY, RECEIVER_KEY, Client, LiveServer, live


@pytest.fixture(scope="module")
def engine(service: Path, receiver: Path, verifier: Path):
    from ipmn_lightning.serve.engine import ServiceEngine

    # crop mode: aligned crops and uploaded masks, so the HTTP tests need no dlib; photo mode: test_photo_mode.py
    return ServiceEngine(service, receiver, verifier, mode="crop")  # the receiver holds the INN only (no H, no w)


@pytest.fixture(scope="module")
def keys():
    from ipmn_lightning.serve.keys import ApiKeys

    return ApiKeys(receiver=RECEIVER_KEY, owner=OWNER_KEY)


@pytest.fixture(scope="module")
def server(engine, keys) -> Iterator[LiveServer]:
    """The service with a rate limit high enough for the load tests."""
    yield from live(engine, keys, rate=10_000)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Client:
    return server.client
