"""Hardening of the command line and the role commands against hostile or unusual input (issue 10)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import torch

from ipmn_lightning.console.main import main
from tests.helpers import write_faces

TINY_PHASE1_YAML = """
trainer: {fast_dev_run: true, accelerator: cpu, devices: 1, logger: false, enable_progress_bar: false}
model:
  class_path: ipmn_lightning.modules.WatermarkPretrainModule
  init_args: {ngf: 4, extractor_channels: 8, extractor_dilations: [1, 2], discriminator_widths: [4, 8, 8, 8],
              lambda_vgg: 0.0, vgg_weights: null}
data: {source: synthetic, image_size: 32, batch_size: 2, synthetic_sizes: [4, 2, 2], num_workers: 0}
"""


def fit_args(*extra: str) -> list[str]:
    """``ipmn fit`` of a tiny phase 1 on synthetic faces (one fast_dev_run step)."""
    Path("tiny_phase1.yaml").write_text(TINY_PHASE1_YAML)
    return ["fit", "--config", "tiny_phase1.yaml", *extra]


class _Evil:
    """Unpickling this creates the marker file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


class _Server:
    """A threaded HTTP server on 127.0.0.1 serving ``folder``; stops itself after ``limit_s`` at the latest."""

    def __init__(self, folder: Path, limit_s: float = 60.0) -> None:
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.timer = threading.Timer(limit_s, self.server.shutdown)

    def __enter__(self) -> _Server:
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_remote_ckpt_path_is_loaded_weights_only(tmp_path, capsys):
    served = tmp_path / "served"
    served.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _Evil(marker)}, served / "evil.ckpt")
    assert not marker.exists()
    with _Server(served) as server:
        url = f"http://127.0.0.1:{server.port}/evil.ckpt"
        code = main(fit_args(f"--ckpt_path={url}"))
    assert not marker.exists(), "loading the remote checkpoint ran code from it"
    assert code == 2
    assert "weights-only" in capsys.readouterr().err


def test_local_evil_ckpt_path_and_weights_only_false_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _Evil(marker)}, tmp_path / "evil.ckpt")
    assert main(fit_args(f"--ckpt_path={tmp_path / 'evil.ckpt'}")) == 2
    assert not marker.exists()
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main(fit_args("--weights_only=false")) == 2
    assert "--weights_only false is refused" in capsys.readouterr().err


def test_ckpt_path_of_another_phase_is_refused(checkpoints, capsys):
    code = main(fit_args(f"--ckpt_path={checkpoints['phase2']}"))
    err = capsys.readouterr().err
    assert code == 2 and "'phase2'" in err and "'phase1'" in err
    # a URL is not read before training starts: the module itself refuses the other phase's checkpoint
    from ipmn_lightning.modules import WatermarkPretrainModule
    from ipmn_lightning.phases import CheckpointError
    from tests.helpers import TINY_PHASE1

    module = WatermarkPretrainModule(image_size=32, **TINY_PHASE1)
    with pytest.raises(CheckpointError, match="phase 'phase2' but WatermarkPretrainModule"):
        module.on_load_checkpoint(torch.load(checkpoints["phase2"], weights_only=True))


# ------------------------------------------------------------------------------------------ pairs.csv


@pytest.mark.parametrize("field", ["protected", "replacement"])
@pytest.mark.parametrize("value", ["../outside.jpg", "faces/../../outside.jpg"])
def test_pairs_csv_paths_escaping_the_image_folder_are_refused(tmp_path, field, value):
    from ipmn_lightning.data.mask_store import MaskStoreError, read_pairs

    row = {"protected": "a.jpg", "replacement": "b.jpg", field: value}
    (tmp_path / "pairs.csv").write_text(f"split,protected,replacement,mask\ntrain,{row['protected']},"
                                        f"{row['replacement']},masks/a.png\n")  # fmt: skip
    with pytest.raises(MaskStoreError, match=f"line 2: {field} .* must stay inside the image folder"):
        read_pairs(tmp_path)


def test_pairs_csv_formula_names_are_escaped_and_read_back(tmp_path):
    from ipmn_lightning.data.mask_store import PairRecord, read_pairs, write_pairs

    names = ["=cmd|' /C calc'!A0.jpg", "+1.jpg", "-2.jpg", "@sum.jpg", "'quoted.jpg", "plain.jpg"]
    records = [
        PairRecord("train", name, names[(i + 1) % len(names)], f"masks/{'=' if i == 0 else ''}{i}.png")
        for i, name in enumerate(names)
    ]
    write_pairs(tmp_path, records)
    text = (tmp_path / "pairs.csv").read_text()
    for line in text.splitlines()[1:]:
        for cell in line.split(",")[1:]:
            assert not cell.lstrip('"').startswith(("=", "+", "-", "@")), line
    assert read_pairs(tmp_path) == records


# ------------------------------------------------------------------------------------------ role commands


@pytest.fixture(scope="module")
def service(checkpoints, tmp_path_factory):
    from ipmn_lightning.inference.bundle import export_service_bundle

    return export_service_bundle(checkpoints["phase2"], tmp_path_factory.mktemp("service") / "service.safetensors")


@pytest.fixture(scope="module")
def verifier(checkpoints, tmp_path_factory):
    from ipmn_lightning.inference.bundle import export_verifier_bundle

    return export_verifier_bundle(checkpoints["phase1"], tmp_path_factory.mktemp("verifier") / "verifier.safetensors")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def protect_args(service: Path, faces: Path, masks: Path, out: str | Path, *extra: str) -> list[str]:
    return ["protect", "--bundle", str(service), "--protected", str(faces), "--mask", str(masks), "--out", str(out),
            *extra]  # fmt: skip


@pytest.mark.parametrize("where", ["faces", "faces/sub", "masks"])
def test_protect_never_writes_into_an_input_folder(service, tmp_path, capsys, where):
    faces, masks = write_faces(tmp_path)
    before = {"faces": snapshot(faces), "masks": snapshot(masks)}
    assert main(protect_args(service, faces, masks, tmp_path / where)) == 2
    assert "pass another folder" in capsys.readouterr().err
    assert {"faces": snapshot(faces), "masks": snapshot(masks)} == before
    assert not (tmp_path / "faces" / "sub").exists()


def test_protect_never_replaces_a_single_input_file(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=1)
    before = (faces / "face0.png").read_bytes()
    assert main(protect_args(service, faces / "face0.png", masks / "face0.png", faces)) == 2
    assert "would replace the input file" in capsys.readouterr().err
    assert (faces / "face0.png").read_bytes() == before


def test_recover_refuses_out_equal_to_masked(service, tmp_path, capsys):
    faces, _ = write_faces(tmp_path)
    before = snapshot(faces)
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", str(faces)]) == 2
    assert "--masked folder" in capsys.readouterr().err
    assert snapshot(faces) == before


def test_mask_equal_to_protected_is_refused(service, tmp_path, capsys):
    faces, _ = write_faces(tmp_path)
    assert main(protect_args(service, faces, faces, "out")) == 2
    assert "its own mask" in capsys.readouterr().err
    assert main(protect_args(service, faces / "face0.png", faces / "face0.png", "out")) == 2
    assert "its own mask" in capsys.readouterr().err
    assert not Path("out").exists()


def test_same_stem_twice_is_refused(service, verifier, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=2)
    (faces / "face1.png").rename(faces / "face0.bmp")
    code = main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "out"])
    err = capsys.readouterr().err
    assert code == 2 and "face0.bmp" in err and "face0.png" in err
    assert main(["verify", "--bundle", str(verifier), "--images", str(faces)]) == 2
    assert "same name" in capsys.readouterr().err
    assert main(protect_args(service, faces, masks, "out")) == 2
    assert not Path("out").exists()


def test_a_bad_file_after_the_first_batch_writes_nothing(service, tmp_path, capsys):
    faces, masks = write_faces(tmp_path, n=3)
    (faces / "face9.png").write_bytes(b"not an image at all")
    (masks / "face9.png").write_bytes((masks / "face0.png").read_bytes())
    assert main(protect_args(service, faces, masks, "out", "--batch_size", "1")) == 2
    assert "face9.png" in capsys.readouterr().err
    assert not Path("out").exists() or not list(Path("out").iterdir())


def test_a_file_failing_while_decoding_says_what_was_written(service, tmp_path, capsys):
    faces, _ = write_faces(tmp_path, n=3)
    data = (faces / "face2.png").read_bytes()
    (faces / "face2.png").write_bytes(data[: len(data) // 2])  # header fine, pixel data cut short
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "out", "--batch_size", "1"]) == 2
    err = capsys.readouterr().err
    assert "face2.png" in err and "4 output(s) were already written to out" in err


def test_hidden_and_leftover_temporary_files_are_skipped(service, tmp_path):
    faces, _ = write_faces(tmp_path, n=2)
    (faces / "._face0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (faces / ".face1.k2j4h1.tmp.png").write_bytes((faces / "face1.png").read_bytes()[:40])
    (faces / ".hidden.png").write_bytes(b"junk")
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "out"]) == 0
    assert sorted(p.name for p in Path("out").iterdir()) == [
        "face0_face.png", "face0_mask.png", "face1_face.png", "face1_mask.png"
    ]  # fmt: skip


def test_bad_output_paths_and_devices_fail_before_any_work(service, verifier, tmp_path, capsys, monkeypatch):
    from ipmn_lightning.inference.facade import IPMN

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the networks ran before the arguments were checked")

    for method in ("protect", "recover", "verify"):
        monkeypatch.setattr(IPMN, method, no_work)
    faces, masks = write_faces(tmp_path, n=2)
    Path("a_file").write_text("x")
    assert main(protect_args(service, faces, masks, "a_file")) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(protect_args(service, faces, masks, "a_file/sub")) == 2
    assert "a_file is a file" in capsys.readouterr().err
    Path("a_folder").mkdir()
    assert main(["verify", "--bundle", str(verifier), "--images", str(faces), "--report", "a_folder"]) == 2
    assert "is a folder" in capsys.readouterr().err
    recover = ["recover", "--bundle", str(service), "--masked", str(faces), "--out", "o", "--device"]
    if not torch.cuda.is_available():
        assert main([*recover, "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert main([*recover, "gpu7"]) == 2
    assert "--device" in capsys.readouterr().err
    assert not Path("o").exists()


def test_unwritable_output_folder_fails_before_any_work(service, tmp_path, capsys, monkeypatch):
    """A read-only folder (simulated: the tests may run as root, which ignores permission bits)."""
    import tempfile

    from ipmn_lightning.inference.facade import IPMN

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the networks ran before the output folder was checked")

    faces, _ = write_faces(tmp_path, n=2)
    monkeypatch.setattr(IPMN, "recover", no_work)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["recover", "--bundle", str(service), "--masked", str(faces), "--out", "ro"]) == 2
    assert "not writable" in capsys.readouterr().err


def test_verify_report_never_overwrites_inputs_or_the_bundle(verifier, tmp_path, capsys):
    import json

    faces, _ = write_faces(tmp_path, n=2)
    bundle_bytes, face_bytes = verifier.read_bytes(), (faces / "face0.png").read_bytes()
    args = ["verify", "--bundle", str(verifier), "--images", str(faces), "--report"]
    assert main([*args, str(verifier), "--overwrite", "true"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main([*args, str(faces / "face0.png"), "--overwrite", "true"]) == 2
    assert verifier.read_bytes() == bundle_bytes and (faces / "face0.png").read_bytes() == face_bytes
    Path("report.json").write_text("keep me")
    assert main([*args, "report.json"]) == 2
    assert "--overwrite true" in capsys.readouterr().err
    assert Path("report.json").read_text() == "keep me"
    assert main([*args, "report.json", "--overwrite", "true"]) in (0, 1)
    assert json.loads(Path("report.json").read_text())["total"] == 2


def test_verify_p_value_from_a_reference_folder(verifier, tmp_path, capsys):
    import json

    from ipmn_lightning import IPMN
    from ipmn_lightning.inference.roles import empirical_p_values, fisher_combined_p_value

    faces, masks = write_faces(tmp_path, n=4)
    assert main(["verify", "--bundle", str(verifier), "--images", str(faces), "--report", "r0.json"]) in (0, 1)
    out = capsys.readouterr().out
    assert "no p-value" in out and "--reference" in out
    assert json.loads(Path("r0.json").read_text())["p_value"] is None
    code = main(["verify", "--bundle", str(verifier), "--images", str(faces), "--reference", str(masks),
                 "--report", "r1.json"])  # fmt: skip
    assert code in (0, 1)
    out = capsys.readouterr().out
    assert "Fisher" in out and "at least 1/(N+1) = 0.2" in out
    report = json.loads(Path("r1.json").read_text())
    model = IPMN.load(verifier_bundle=verifier)
    from PIL import Image

    clean = [model.verify(Image.open(p)).nc for p in sorted(masks.iterdir())]
    observed = [row["nc"] for row in report["images"]]
    expected = empirical_p_values(observed, clean)
    assert [row["p_value"] for row in report["images"]] == pytest.approx(expected)
    assert report["p_value"]["combined"] == pytest.approx(fisher_combined_p_value(expected)[1])
    assert report["p_value"]["reference_size"] == 4 and report["p_value"]["per_image_minimum"] == pytest.approx(0.2)


def test_p_value_formulas():
    import math

    from ipmn_lightning.inference.roles import empirical_p_values, fisher_combined_p_value

    assert empirical_p_values([0.9, 0.5, 0.1], [0.2, 0.4, 0.6, 0.8]) == [0.2, 0.6, 1.0]
    assert fisher_combined_p_value([0.3])[1] == pytest.approx(0.3)  # chi2(2) survival of -2 ln p is p
    p1, p2 = 0.2, 0.05
    assert fisher_combined_p_value([p1, p2])[1] == pytest.approx(p1 * p2 * (1 - math.log(p1 * p2)))


def test_verifier_bundle_carries_a_clean_nc_reference(checkpoints, tmp_path, capsys):
    import json

    from ipmn_lightning.inference.bundle import export_verifier_bundle, load_bundle

    bundle = export_verifier_bundle(checkpoints["phase1"], tmp_path / "v.safetensors",
                                    clean_nc_reference=[0.1, 0.2, 0.3])  # fmt: skip
    assert load_bundle(bundle, "ipmn-verifier").config["clean_nc_reference"] == [0.1, 0.2, 0.3]
    faces, _ = write_faces(tmp_path, n=2)
    assert main(["verify", "--bundle", str(bundle), "--images", str(faces), "--report", "r.json"]) in (0, 1)
    report = json.loads(Path("r.json").read_text())
    assert report["p_value"]["reference_size"] == 3 and "clean_nc_reference" in report["p_value"]["reference_source"]
    with pytest.raises(ValueError, match="clean_nc_reference"):
        export_verifier_bundle(checkpoints["phase1"], tmp_path / "w.safetensors", clean_nc_reference=[float("nan")])


# ------------------------------------------------------------------------------------------ pixel formats


def test_16_bit_and_float_images_keep_their_grey_level(tmp_path):
    import numpy as np
    from PIL import Image

    from ipmn_lightning.data.images import ImageReadError, load_image
    from ipmn_lightning.inference.roles import read_images

    Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(np.full((32, 32), 200.0, dtype=np.float32)).save(tmp_path / "f255.tif")
    for name in ("g16.png", "f.tif"):
        with Image.open(tmp_path / name) as raw:
            assert raw.mode in ("I;16", "I", "F")
        image = read_images([tmp_path / name], 32, "reject")[0]
        assert image.mode == "RGB" and np.unique(np.asarray(image)).tolist() == [128], name
        assert load_image(tmp_path / name, 32).mean().item() == pytest.approx(128 / 255)
    with pytest.raises(ImageReadError, match="must hold values in \\[0, 1\\]"):
        read_images([tmp_path / "f255.tif"], 32, "reject")


def test_facade_scales_uint8_tensors_and_refuses_other_integers(service):
    from ipmn_lightning import IPMN

    model = IPMN.load(service_bundle=service)
    generator = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator)
    masks = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator)
    out = model.protect(faces, masks)
    assert out.dtype == torch.float32
    assert torch.equal(out, model.protect(faces.float() / 255, masks.float() / 255))
    with pytest.raises(TypeError, match="uint8"):
        model.protect(faces.int(), masks.int())


def test_huge_images_are_refused_clearly_and_read_reduced(service, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from ipmn_lightning.inference.roles import read_images

    faces, masks = write_faces(tmp_path, n=1)
    big = Image.new("RGB", (512, 384), (200, 100, 50))
    big.save(tmp_path / "big.jpg", quality=95)
    images = read_images([tmp_path / "big.jpg"], 32, "resize")
    assert images[0].size == (32, 32)  # reduced while read, not held at full resolution until the batch
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # so a 32x32 image counts as a decompression bomb
    assert main(protect_args(service, faces, masks, "out")) == 2
    err = capsys.readouterr().err
    assert "too large to read safely" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ bundle headers


def retouch(source: Path, target: Path, changes: dict[str, object], raw_config: str | None = None) -> Path:
    """Copy a bundle with header ``config`` fields changed (dotted names; NaN written as JSON ``NaN``)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    config = json.loads(header["config"])
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        section = config
        for part in path:
            section = section[part]
        section[key] = value
    header["config"] = raw_config if raw_config is not None else json.dumps(config)
    save_file(tensors, str(target), metadata=header)
    return target


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


# ------------------------------------------------------------------------------------------ batch sizes


@pytest.mark.parametrize("batch_size", [0, -2])
def test_non_positive_batch_size_is_refused_up_front(batch_size):
    from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule

    with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {batch_size}"):
        FaceSwapDataModule(image_size=32, batch_size=batch_size, num_workers=0)
    with pytest.raises(ValueError, match="val_batch_size must be an integer >= 1"):
        FaceSwapDataModule(image_size=32, batch_size=2, val_batch_size=batch_size, num_workers=0)


def test_odd_batch_size_is_refused_before_phase_1_trains():
    from ipmn_lightning.modules import WatermarkPretrainModule
    from tests.helpers import TINY_PHASE1, tiny_data, tiny_trainer

    module = WatermarkPretrainModule(image_size=32, **TINY_PHASE1)
    trainer = tiny_trainer()
    with pytest.raises(ValueError, match=r"even batch size .* --data\.batch_size=4"):
        trainer.fit(module, datamodule=tiny_data(batch_size=3))
    assert trainer.global_step == 0


# ------------------------------------------------------------------------------------------ pipeline


def test_rerunning_a_phase_keeps_last_ckpt_the_newest(tmp_path):
    import json
    import os

    from pytorch_lightning.callbacks import ModelCheckpoint

    from ipmn_lightning.modules import WatermarkPretrainModule
    from ipmn_lightning.workflows.pipeline import _checkpoint_callbacks, newest_last_checkpoint
    from tests.helpers import TINY_PHASE1, tiny_data, tiny_trainer

    Path("phase.yaml").write_text("trainer: {}\n")
    folder = tmp_path / "run" / "phase1" / "checkpoints"
    callbacks = json.loads(_checkpoint_callbacks("phase.yaml", folder).split("=", 1)[1])
    steps = []
    for _ in range(2):  # the same phase trained twice into the same folder (a rerun)
        callback = ModelCheckpoint(**callbacks[0]["init_args"])
        trainer = tiny_trainer(enable_checkpointing=True, callbacks=[callback], max_steps=1 + len(steps))
        trainer.fit(WatermarkPretrainModule(image_size=32, **TINY_PHASE1), datamodule=tiny_data())
        steps.append(trainer.global_step)
    assert sorted(p.name for p in folder.glob("last*.ckpt")) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == steps[-1]
    # a folder left by an older version that did write last-v1.ckpt: the newest one is resumed from
    (folder / "last-v1.ckpt").write_bytes((folder / "last.ckpt").read_bytes())
    os.utime(folder / "last.ckpt", ns=(1, 1))
    assert newest_last_checkpoint(folder) == folder / "last-v1.ckpt"
    assert newest_last_checkpoint(tmp_path / "nothing") is None
