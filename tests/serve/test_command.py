"""``ipmn serve`` as a process: serves, writes no file anywhere (work dir and TMPDIR stay empty), logs no key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.serve.live import RECEIVER_KEY, Client, multipart, png, synthetic_face


def test_serve_process_writes_nothing_and_never_logs_the_key(service, verifier, tmp_path: Path) -> None:
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir(), tmp.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp), "IPMN_RECEIVER_KEY": RECEIVER_KEY, "PYTHONPATH": os.getcwd()}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    args = ["--service", str(service), "--receiver", str(service), "--verifier", str(verifier)]
    command = [sys.executable, "-m", "ipmn_lightning", "serve", *args, "--port", str(port), "--mode", "crop"]
    log = tmp_path / "log.txt"
    with log.open("wb") as out:
        process = subprocess.Popen([*command, "--work_dir", str(work)], env=env, stdout=out, stderr=out, cwd=tmp_path)
        try:
            client = Client(port)
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/health").status == 200:
                        break
                except OSError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
            big = png(Image.fromarray(noise))  # > 1 MiB: Starlette would spool it to a temporary file on disk
            assert len(big) > 1024 * 1024
            body, content_type = multipart({"file": big, "mask": png(synthetic_face(1))})
            protected = client.post("/protect", body, content_type)
            assert protected.status == 200, protected.body
            assert client.post("/recover", protected.body, key=RECEIVER_KEY).status == 200
            assert client.post("/recover", protected.body, key="a-wrong-key-of-some-length").status == 403
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert list(work.iterdir()) == [] and list(tmp.iterdir()) == []
    text = log.read_text()
    assert "POST /protect" in text  # the access log is there ...
    assert RECEIVER_KEY not in text and "a-wrong-key" not in text  # ... without any key


def test_the_service_loads_neither_lightning_nor_torchmetrics() -> None:
    code = (
        "import sys, ipmn_lightning.serve.app, ipmn_lightning.serve.engine; "
        "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'torchmetrics') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
