"""``ipmn audit query`` against a suspect service over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from ipmn_lightning.console.main import main

uvicorn = pytest.importorskip("uvicorn")
starlette = pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from tests.serve.live import LiveServer, png  # noqa: E402

SECRET = "suspect-api-key-that-must-not-leak"


def imitation(data: bytes) -> bytes:
    """What the suspect answers: the image mirrored (any deterministic image-to-image model)."""
    with Image.open(io.BytesIO(data)) as image:
        return png(ImageOps.mirror(image.convert("RGB")))


def suspect_app() -> Starlette:
    seen: dict[str, int] = {}

    async def body(request: Request) -> bytes:
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
            return await form["file"].read()
        return await request.body()

    async def imitate(request: Request) -> Response:
        if request.headers.get("x-key") != SECRET:
            return Response("no key", status_code=401)
        return Response(imitation(await body(request)), media_type="image/png")

    async def busy(request: Request) -> Response:
        data = await body(request)
        digest = hashlib.sha256(data).hexdigest()
        seen[digest] = seen.get(digest, 0) + 1
        if seen[digest] == 1:  # each image is refused once, as a rate limit would
            return Response("slow down", status_code=429, headers={"Retry-After": "0"})
        return Response(imitation(data), media_type="image/png")

    async def text(request: Request) -> Response:
        return Response("<html>maintenance</html>", media_type="text/html")

    async def broken(request: Request) -> Response:
        return Response("internal error", status_code=500)

    routes = [Route(f"/{f.__name__}", f, methods=["POST"]) for f in (imitate, busy, text, broken)]
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def suspect() -> Iterator[LiveServer]:
    server = LiveServer(suspect_app())
    yield server
    server.stop()


@pytest.fixture
def challenge(tmp_path: Path) -> Path:
    folder = tmp_path / "challenge"
    folder.mkdir()
    for index in range(3):
        image = Image.new("RGB", (24, 16), (40 * index, 90, 200 - 30 * index))
        image.putpixel((1, 1), (255, 255, 255))  # not symmetric: the mirror changes it
        image.save(folder / (f"q{index}.png" if index < 2 else f"q{index}.jpg"))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_answers_are_kept_as_they_came_with_their_hashes(suspect, challenge, capsys) -> None:
    url = f"{suspect.client.url}/imitate"
    Path("headers.txt").write_text(f"# the suspect's key for the owner\nX-Key: {SECRET}\n")
    code = main(["audit", "query", "--challenge", str(challenge), "--suspect_url", url, "--out", "answers",
                 "--headers_file", "headers.txt"])  # fmt: skip
    assert code == 0
    answers = Path("answers")
    assert sorted(p.name for p in answers.iterdir()) == ["q0.png", "q1.png", "q2.png", "responses.json"]
    manifest = json.loads((answers / "responses.json").read_text())
    assert manifest["suspect_url"] == url and len(manifest["answers"]) == 3
    for record in manifest["answers"]:
        query = (challenge / record["challenge"]).read_bytes()
        kept = (answers / record["answer"]).read_bytes()
        assert kept == imitation(query)  # bytes unchanged
        assert record["answer_sha256"] == hashlib.sha256(kept).hexdigest()
        assert record["challenge_sha256"] == hashlib.sha256(query).hexdigest()
        assert record["status"] == 200 and record["content_type"] == "image/png"
    out = capsys.readouterr()
    assert SECRET not in (answers / "responses.json").read_text() + out.out + out.err


def test_a_form_field_and_a_rate_limit(suspect, challenge) -> None:
    url = f"{suspect.client.url}/busy"
    assert main(["audit", "query", "--challenge", str(challenge), "--suspect_url", url, "--out", "a",
                 "--field", "file"]) == 0  # fmt: skip
    assert len(list(Path("a").glob("q*.png"))) == 3


@pytest.mark.parametrize(
    ("route", "message"), [("text", "is not an image"), ("broken", "answered 500"), ("imitate", "answered 401")]
)
def test_a_bad_answer_stops_the_audit_and_leaves_nothing(suspect, challenge, capsys, route, message) -> None:
    url = f"{suspect.client.url}/{route}"
    assert main(["audit", "query", "--challenge", str(challenge), "--suspect_url", url, "--out", "out/a"]) == 2
    assert message in capsys.readouterr().err
    assert not Path("out/a").exists() and list(Path("out").iterdir()) == []  # no staging folder left


def test_no_server_a_bad_url_and_bad_folders(challenge, tmp_path, capsys) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = ["audit", "query", "--challenge", str(challenge), "--out", "x"]
    assert main([*base, "--suspect_url", f"http://127.0.0.1:{port}/protect"]) == 2
    assert "ConnectError" in capsys.readouterr().err
    assert main([*base, "--suspect_url", "ftp://example.org/x"]) == 2
    assert "http:// or https://" in capsys.readouterr().err
    Path("x").mkdir()
    assert main([*base, "--suspect_url", "http://127.0.0.1:1/"]) == 2
    assert "exists" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    nowhere = "http://127.0.0.1:1/"
    assert main(["audit", "query", "--challenge", str(empty), "--suspect_url", nowhere, "--out", "y"]) == 2
    assert "holds no images" in capsys.readouterr().err
    Path("headers.txt").write_text(f"X-Key {SECRET}\n")
    assert main([*base[:-1], "z", "--suspect_url", nowhere, "--headers_file", "headers.txt"]) == 2
    err = capsys.readouterr().err
    assert "line 1: expected 'Name: value'" in err and SECRET not in err
