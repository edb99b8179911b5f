"""A live ``ipmn serve`` app on 127.0.0.1 (uvicorn in a thread on a free port), an HTTP client, test photos."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import uvicorn
from PIL import Image

RECEIVER_KEY = "receiver-key-0123456789abcdef"
OWNER_KEY = "owner-key-0123456789abcdef0000"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def image(self) -> Image.Image:
        img = Image.open(io.BytesIO(self.body))
        img.load()
        return img


class Client:
    """A tiny HTTP/1.1 client on http.client (one connection per request, as independent users)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return Answer(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, data: bytes, content_type: str = "image/png", key: str | None = None, **headers):
        headers = {"Content-Type": content_type, **headers}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.request("POST", path, data, headers)

    def post_form(self, path: str, files: dict[str, bytes], key: str | None = None) -> Answer:
        body, content_type = multipart(files)
        return self.post(path, body, content_type, key)


def multipart(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body of PNG files and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_face(seed: int, size: int = 128) -> Image.Image:
    """A built-in synthetic face as a PIL image (dlib finds a face in most of them at 128 px)."""
    from ipmn_lightning.core.images import tensor_to_pil
    from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene

    rng = np.random.default_rng(seed)
    return tensor_to_pil(render_face(sample_identity(rng), sample_scene(rng), size))


class LiveServer:
    """uvicorn serving ``app`` on a socket bound to a free port of 127.0.0.1, in a daemon thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.client = Client(self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def live(engine, keys, **limits) -> Iterator[LiveServer]:
    """A :class:`LiveServer` of ``engine`` with ``keys`` and the ``limits`` (ServeLimits fields), stopped after."""
    from ipmn_lightning.serve.app import create_app
    from ipmn_lightning.serve.limits import ServeLimits

    server = LiveServer(create_app(engine, keys, ServeLimits(**limits)))
    try:
        yield server
    finally:
        server.stop()
