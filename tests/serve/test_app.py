"""``ipmn serve`` over real HTTP on 127.0.0.1: upload and download, keys, limits, malformed uploads, load."""

from __future__ import annotations

import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from ipmn_lightning.inference.facade import IPMN
from ipmn_lightning.serve.engine import RECORD_KEY
from tests.serve.live import OWNER_KEY, RECEIVER_KEY, live, png, synthetic_face

pytestmark = pytest.mark.timeout(600)


def face_and_mask(seed: int) -> dict[str, bytes]:
    return {"file": png(synthetic_face(seed)), "mask": png(synthetic_face(seed + 1000))}


def test_health_names_the_bundles_and_no_secret(client, service, verifier) -> None:
    answer = client.get("/health")
    assert answer.status == 200
    health = answer.json()
    assert health["status"] == "ok" and health["mode"] in ("crop", "photo")
    assert health["bundles"]["service"]["sha256"] == hashlib.sha256(service.read_bytes()).hexdigest()
    assert health["bundles"]["verifier"]["sha256"] == hashlib.sha256(verifier.read_bytes()).hexdigest()
    assert health["bundles"]["service"]["format"] == "ipmn-service"
    assert health["bundles"]["verifier"]["format"] == "ipmn-verifier"
    assert health["keys"] == {"receiver": True, "owner": True}
    assert RECEIVER_KEY.encode() not in answer.body and OWNER_KEY.encode() not in answer.body
    assert str(service.parent).encode() not in answer.body  # file names only, no server paths


def test_protect_then_recover_over_http(client, engine, service) -> None:
    files = face_and_mask(0)
    protected = client.post_form("/protect", files)
    assert protected.status == 200, protected.body
    assert protected.headers["content-type"] == "image/png"
    image = protected.image()
    size = engine.image_size
    assert image.size == (size, size) and image.mode == "RGB"
    record = json.loads(image.text[RECORD_KEY])
    assert record["service_sha256"] == hashlib.sha256(service.read_bytes()).hexdigest()

    # the service's answer is what the Python API gives for the same face and mask
    ipmn = IPMN.load(service)
    expected = ipmn.protect(Image.open(io.BytesIO(files["file"])), Image.open(io.BytesIO(files["mask"])))
    assert np.array_equal(np.asarray(image), np.asarray(expected))

    recovered = client.post("/recover", protected.body, key=RECEIVER_KEY)
    assert recovered.status == 200, recovered.body
    face, _ = ipmn.recover(image, seed=0)
    assert np.array_equal(np.asarray(recovered.image()), np.asarray(face))
    # the raw body and the X-API-Key header work as well as a form and a Bearer token
    again = client.post("/recover", protected.body, "application/octet-stream", **{"X-API-Key": RECEIVER_KEY})
    assert again.status == 200 and again.body == recovered.body


def test_protect_makes_the_mask_itself(client, engine) -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("cv2")
    answer = client.post("/protect", png(synthetic_face(3)), "image/png")
    if answer.status == 422:  # dlib missed this synthetic face: try the next one
        answer = client.post("/protect", png(synthetic_face(4)), "image/png")
    assert answer.status == 200, answer.body
    assert answer.image().size == (engine.image_size, engine.image_size)


def test_a_photo_without_a_face_is_a_clear_422(client) -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("cv2")
    answer = client.post("/protect", png(Image.new("RGB", (128, 128), (90, 140, 200))), "image/png")
    assert answer.status == 422
    assert "no face" in answer.json()["error"]


def test_recover_needs_the_receivers_key(client) -> None:
    protected = client.post_form("/protect", face_and_mask(1)).body
    missing = client.post("/recover", protected)
    assert missing.status == 401
    assert "Bearer" in missing.headers["www-authenticate"]
    assert "key" in missing.json()["error"]
    wrong = client.post("/recover", protected, key="not-the-key-but-long-enough")
    assert wrong.status == 403
    assert b"not-the-key" not in wrong.body  # never echoed
    owner = client.post("/recover", protected, key=OWNER_KEY)  # the owner is not the receiver
    assert owner.status == 403


def test_verify_and_audit_need_the_owners_key(client) -> None:
    protected = client.post_form("/protect", face_and_mask(2)).body
    assert client.post("/verify", protected).status == 401
    assert client.post("/verify", protected, key=RECEIVER_KEY).status == 403
    verdict = client.post("/verify", protected, key=OWNER_KEY)
    assert verdict.status == 200
    body = verdict.json()
    assert set(body) == {"nc", "threshold", "verified"}
    assert -1 <= body["nc"] <= 1 and isinstance(body["verified"], bool)
    assert client.post("/audit", protected).status == 401
    audit = client.post("/audit", protected, key=OWNER_KEY)
    assert audit.status == 501
    assert "ipmn audit" in audit.json()["error"] and "issue 24" in audit.json()["error"]


def test_keys_not_configured_is_503(engine) -> None:
    from ipmn_lightning.serve.keys import ApiKeys

    for server in live(engine, ApiKeys()):
        answer = server.client.post("/recover", png(synthetic_face(0, 32)), key=RECEIVER_KEY)
        assert answer.status == 503
        assert "IPMN_RECEIVER_KEY" in answer.json()["error"]


def test_oversize_uploads_are_413(engine, keys) -> None:
    for server in live(engine, keys, max_upload_bytes=60_000, max_pixels=300 * 300, rate=1000):
        noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
        big = png(Image.fromarray(noise))  # ~120 kB of incompressible pixels
        assert len(big) > 60_000
        answer = server.client.post("/protect", big)
        assert answer.status == 413 and "limit" in answer.json()["error"]
        assert server.client.post_form("/protect", {"file": big}).status == 413
        many_pixels = png(Image.new("RGB", (400, 400)))  # small file, 160 000 pixels
        assert len(many_pixels) < 60_000
        answer = server.client.post("/protect", many_pixels)
        assert answer.status == 413 and "400×400" in answer.json()["error"]
        assert server.client.get("/health").status == 200  # still serving


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"", "image/png", 400, "empty"),
        (b"this is not an image", "image/png", 415, "not an image"),
        (None, "image/png", 400, "truncated"),  # a PNG cut in half
        (b"hello", "text/plain", 415, "Content-Type"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", 400, "`file`"),
    ],
)
def test_malformed_uploads_get_a_clear_json_error(client, body, content_type, status, words) -> None:
    if body is None:
        whole = png(synthetic_face(5))
        body = whole[: len(whole) // 2]
    answer = client.post("/protect", body, content_type)
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert words in answer.json()["error"]


def test_a_form_without_the_photo_is_400(client) -> None:
    answer = client.post_form("/protect", {"other": png(synthetic_face(0, 32))})
    assert answer.status == 400 and "`file`" in answer.json()["error"]


def test_rate_limit_is_429_with_retry_after(engine, keys) -> None:
    for server in live(engine, keys, rate=3, period=600):
        statuses = [server.client.post("/protect", b"x" * 10).status for _ in range(5)]
        assert statuses[:3] == [415, 415, 415]  # counted before the upload is read
        assert statuses[3:] == [429, 429]
        answer = server.client.post("/protect", b"x")
        assert int(answer.headers["retry-after"]) >= 1 and "too many requests" in answer.json()["error"]
        assert server.client.get("/health").status == 200  # GETs are not limited


def test_56_requests_from_8_clients_all_answered_and_valid(client, engine) -> None:
    inputs = [face_and_mask(seed) for seed in range(7)]
    expected = [client.post_form("/protect", files).body for files in inputs]  # one at a time first

    def one(i: int) -> tuple[int, int, bytes]:
        answer = client.post_form("/protect", inputs[i % 7])
        return i, answer.status, answer.body

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(56)))
    assert len(results) == 56
    for i, status, body in results:
        assert status == 200, body
        image = Image.open(io.BytesIO(body))
        image.load()
        assert image.size == (engine.image_size, engine.image_size)
        assert body == expected[i % 7]  # nothing mixed up between concurrent requests


def test_the_page_loads_nothing_from_elsewhere(client) -> None:
    answer = client.get("/")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.body.decode()
    for element in ('id="drop"', 'id="original"', 'id="protected"', 'id="recovered"', 'id="key"'):
        assert element in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert "default-src 'self'" in answer.headers["content-security-policy"]
