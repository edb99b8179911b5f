"""Bundle headers: every config field is validated; any header, or any image file, ends in a clean error."""

from __future__ import annotations

import pytest

from ipmn_lightning.console.main import main
from tests.helpers.bundles import retouch


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("verifier", "threshold", "abc"),
        ("verifier", "threshold", None),
        ("verifier", "threshold", -1),
        ("verifier", "threshold", float("nan")),
        ("verifier", "image_size", 0),
        ("verifier", "image_size", 10**12),
        ("verifier", "image_size", 64),  # in range, but the watermark tensor is 32 px
        ("verifier", "extractor.channels", 10**7),
        ("verifier", "extractor.dilations", "abc"),
        ("verifier", "clean_nc_reference", [0.5, "x"]),
        ("service", "inn.clamp", float("nan")),
        ("service", "inn.num_blocks", 10**7),
        ("service", "inn.num_blocks", 64),  # in range, but tensors for 64 blocks are not in the file
        ("service", "inn.growth", 1024),  # would be billions of parameters: checked on the meta device
        ("verifier", "extractor.channels", 1024),
        ("service", "inn.num_blocks", 2.5),
        ("service", "embedder.ngf", True),
        ("service", "image_size", "32"),
    ],
)
def test_bundle_header_fields_are_validated(service, verifier, tmp_path, kind, field, value):
    from ipmn_lightning.inference.bundle import BundleError, load_bundle

    source = service if kind == "service" else verifier
    bad = retouch(source, tmp_path / "bad.safetensors", {field: value})
    with pytest.raises(BundleError, match=rf"bad\.safetensors.*{field.split('.')[0]}"):
        load_bundle(bad, f"ipmn-{kind}")


def test_bundle_config_that_is_not_an_object_is_refused(verifier, tmp_path):
    from ipmn_lightning.inference.bundle import BundleError, load_bundle

    for raw in ("[1, 2]", '"text"', "null"):
        with pytest.raises(BundleError, match=r"bad\.safetensors"):
            load_bundle(retouch(verifier, tmp_path / "bad.safetensors", {}, raw_config=raw), "ipmn-verifier")


# ------------------------------------------------------------------------------------------ property-based

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**13), 10**13) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
SERVICE_FIELDS = ["image_size", "embedder", "embedder.image_size", "embedder.ngf", "embedder.num_downs",
                  "embedder.residual", "inn", "inn.num_blocks", "inn.clamp", "inn.growth", "inn.wavelet"]  # fmt: skip
VERIFIER_FIELDS = ["image_size", "threshold", "clean_nc_reference", "extractor", "extractor.channels",
                   "extractor.dilations"]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_bundle_header_gives_a_bundle_or_a_bundle_error(service, verifier, tmp_path, data):
    from ipmn_lightning.inference.bundle import BundleError, load_bundle

    kind = data.draw(st.sampled_from(["service", "verifier"]))
    fields = SERVICE_FIELDS if kind == "service" else VERIFIER_FIELDS
    changes = data.draw(st.dictionaries(st.sampled_from(fields), JSON_VALUES, min_size=1, max_size=3))
    try:
        bad = retouch(service if kind == "service" else verifier, tmp_path / "h.safetensors", changes)
    except (TypeError, KeyError, IndexError):
        return  # a change inside a field an earlier change replaced by a non-object
    try:
        bundle = load_bundle(bad, f"ipmn-{kind}")
    except BundleError as err:
        assert "h.safetensors" in str(err)
        return
    for network in ("embedder", "inn") if kind == "service" else ("extractor",):
        bundle.network(network)  # a header that loads builds its networks


def image_bytes(data: st.DataObject) -> bytes:
    """A small image in a random mode and format, often damaged, or random bytes."""
    import io

    import numpy as np
    from PIL import Image

    choice = data.draw(st.sampled_from(["image", "damaged", "bytes"]))
    if choice == "bytes":
        return data.draw(st.binary(max_size=200))
    mode, fmt = data.draw(st.sampled_from([("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("I;16", "PNG"),
                                            ("P", "PNG"), ("1", "BMP"), ("RGB", "JPEG"), ("F", "TIFF"),
                                            ("I", "TIFF"), ("CMYK", "JPEG"), ("RGB", "WEBP")]))  # fmt: skip
    width, height = data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48))
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if mode == "F":
        scale = data.draw(st.sampled_from([1.0, 300.0]))
        image = Image.fromarray((rng.random((height, width)) * scale).astype("float32"))
    elif mode == "I":
        image = Image.fromarray(rng.integers(-5, 70000, (height, width)).astype("int32"))
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width)).astype("uint16"))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype("uint8")).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    raw = buffer.getvalue()
    if choice == "damaged":
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.binary(max_size=8))
    return raw


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_role_commands_on_any_image_files_exit_cleanly(service, verifier, tmp_path, data, capsys):
    import uuid

    folder = tmp_path / uuid.uuid4().hex
    (folder / "in").mkdir(parents=True)
    suffixes = [".png", ".jpg", ".bmp", ".tif", ".webp"]
    count = data.draw(st.integers(1, 3))
    for index in range(count):
        (folder / "in" / f"img{index}{data.draw(st.sampled_from(suffixes))}").write_bytes(image_bytes(data))
    resize = data.draw(st.sampled_from(["resize", "reject"]))
    command = data.draw(st.sampled_from(["recover", "verify"]))
    if command == "recover":
        args = ["recover", "--bundle", str(service), "--masked", str(folder / "in"), "--out", str(folder / "out")]
    else:
        args = ["verify", "--bundle", str(verifier), "--images", str(folder / "in")]
    code = main([*args, "--resize", resize, "--batch_size", str(data.draw(st.integers(1, 2)))])
    err = capsys.readouterr().err
    assert code in (0, 1, 2) and (command == "verify" or code != 1)
    assert "Traceback" not in err
    if code == 2:
        assert "\nerror: " in "\n" + err  # on its own line, after any progress bar
        assert not (folder / "out").exists() or not list((folder / "out").iterdir()) or "already written" in err
