"""Hostile inputs for the command line: a pickle that runs code when loaded, a local HTTP server to fetch it from."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path


class EvilPayload:
    """Unpickling this creates the marker file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 serving ``folder``; stops itself after ``limit_s`` at the latest."""

    def __init__(self, folder: Path, limit_s: float = 60.0) -> None:
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.timer = threading.Timer(limit_s, self.server.shutdown)

    def __enter__(self) -> LocalServer:
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
