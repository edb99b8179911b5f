"""Photo mode over HTTP: a photo with a face in, the protected photo (same size, record inside) out, and back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.serve.live import OWNER_KEY, RECEIVER_KEY, live, png, synthetic_face

pytest.importorskip("dlib")
pytest.importorskip("cv2")


def photo_with_a_face() -> Image.Image:
    """A 320×240 photo: a synthetic face dlib finds, on a plain background."""
    from ipmn_lightning.serve.engine import _photos

    for seed in range(8):
        face = synthetic_face(seed, 160)
        photo = Image.new("RGB", (320, 240), (200, 190, 170))
        photo.paste(face, (100, 40))
        from ipmn_lightning.faces.analysis import DlibFaceAnalyzer

        if _photos.find_faces(DlibFaceAnalyzer(), np.asarray(photo)):
            return photo
    pytest.skip("dlib found no face in the synthetic photos")


@pytest.fixture(scope="module")
def photo_server(service, receiver, verifier, keys):
    from ipmn_lightning.serve.engine import ServiceEngine

    yield from live(ServiceEngine(service, receiver, verifier, mode="photo"), keys, rate=1000)


def test_photo_in_protected_photo_out_and_recovered(photo_server) -> None:
    client = photo_server.client
    assert client.get("/health").json()["mode"] == "photo"
    photo = photo_with_a_face()
    protected = client.post("/protect", png(photo))
    assert protected.status == 200, protected.body
    image = protected.image()
    assert image.size == photo.size  # the whole photo, not a thumbnail of the face
    from ipmn_lightning.inference.photos import read_photo_record

    record = read_photo_record(image)
    assert record is not None and len(record.regions) == 1
    left, top, right, bottom = record.regions[0].box
    outside = np.ones((photo.height, photo.width), bool)
    outside[top:bottom, left:right] = False
    assert np.array_equal(np.asarray(image)[outside], np.asarray(photo)[outside])

    assert client.post("/recover", protected.body).status == 401
    recovered = client.post("/recover", protected.body, key=RECEIVER_KEY)
    assert recovered.status == 200, recovered.body
    assert recovered.image().size == photo.size
    verdict = client.post("/verify", protected.body, key=OWNER_KEY).json()
    assert len(verdict["regions"]) == 1 and set(verdict) >= {"nc", "threshold", "verified"}


def test_photo_mode_refuses_an_image_without_a_record_or_a_face(photo_server) -> None:
    client = photo_server.client
    plain = png(Image.new("RGB", (200, 150), (90, 140, 200)))
    answer = client.post("/protect", plain)
    assert answer.status == 422 and "no face" in answer.json()["error"]
    answer = client.post("/recover", plain, key=RECEIVER_KEY)
    assert answer.status == 400 and "record" in answer.json()["error"]
