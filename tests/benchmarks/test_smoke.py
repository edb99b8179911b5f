"""Smoke tests of benchmarks/: the HiNet reference equals our INN, and speed.py's JSON has its structure.

``speed.py`` is the entry point of the speed benchmarks; the harness (``harness.py``), the phases' steps
(``phase_steps.py``) and one file per benchmark (``speed_<name>.py``) are imported by file name, as the scripts
import each other. Behaviour only: no timing is asserted (the speed requirements are checked by running
``python benchmarks/speed.py``, see benchmarks/README.md).
"""

from __future__ import annotations

import importlib.util
import json
import math
import runpy
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ipmn_lightning.nets.inn import InvertibleMaskNet
from ipmn_lightning.nets.wavelet import haar_dwt, haar_iwt

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the benchmarks import each other (harness, hinet_reference, ...) by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return _load("hinet_reference")


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    _load("hinet_reference")
    return _load("speed")


def _random_inn(num_blocks: int = 2, growth: int = 8) -> InvertibleMaskNet:
    torch.manual_seed(0)
    inn = InvertibleMaskNet(num_blocks=num_blocks, growth=growth)
    with torch.no_grad():  # conv5 too, so the network is not the identity
        for p in inn.parameters():
            p.normal_(0.0, 0.02)
    return inn


def test_reference_haar_matches_ours(reference: ModuleType) -> None:
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(reference.dwt_slicing(x), haar_dwt(x))
    y = torch.randn(2, 12, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(reference.iwt_scatter(y), haar_iwt(y))


@pytest.mark.parametrize("impl", ["split", "concat"])
def test_reference_equals_our_inn_with_the_same_weights(reference: ModuleType, impl: str) -> None:
    inn = _random_inn()
    inn.impl = impl
    ref = reference.from_invertible_mask_net(inn)
    protected, mask = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        masked, lost = inn.put_on(protected, mask)
        masked_ref, lost_ref = ref.put_on(protected, mask)
        assert (masked - mask).abs().max() > 1e-2  # not the identity: the comparison means something
        z = torch.randn_like(lost)
        face, rec_mask = inn.put_off(masked, z=z)
        face_ref, rec_mask_ref = ref.put_off(masked, z)
    for ours, theirs in ((masked, masked_ref), (lost, lost_ref), (face, face_ref), (rec_mask, rec_mask_ref)):
        assert (ours - theirs).abs().max() <= 1e-5


def test_reference_gradients_match(reference: ModuleType) -> None:
    inn = _random_inn(num_blocks=1, growth=4)
    ref = reference.from_invertible_mask_net(inn)
    protected, mask = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    for net in (inn, ref):
        masked, lost = net.put_on(protected, mask)
        (masked.square().sum() + lost.sum()).backward()
    ours = dict(inn.named_parameters())
    subnets = {hinet: name for name, hinet in reference.SUBNET_NAMES.items()}
    for key, p in ref.named_parameters():
        block, subnet, conv, kind = key.split(".")  # inv1.f.conv1.weight
        ours_key = f"blocks.{int(block[3:]) - 1}.{subnets[subnet]}.{conv}.{kind}"
        torch.testing.assert_close(p.grad, ours[ours_key].grad, atol=1e-5, rtol=1e-4)


def test_copy_weights_rejects_another_architecture(reference: ModuleType) -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        reference.copy_weights(reference.HiNetReference(num_blocks=3, growth=8), _random_inn(num_blocks=2))


def _finite_positive(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_speed_quick_run_writes_the_json_structure(speed: ModuleType, tmp_path: Path) -> None:
    cfg = speed.make_config("cpu", quick=True, image_size=32, data_images=8, data_seconds=0.2, workers=0)
    results = speed.run(cfg, data_root=tmp_path / "data")
    path = speed.write_json(tmp_path / "out" / "speed.json", results)
    loaded = json.loads(path.read_text())
    assert not list(path.parent.glob("*.tmp"))  # written atomically, nothing left behind
    assert loaded["schema_version"] == speed.SCHEMA_VERSION
    assert {"config", "environment", "training", "coupling", "inference", "data", "checks", "elapsed_s"} <= set(loaded)

    names = [r["name"] for r in loaded["training"]]
    assert names == ["phase1", "phase2", "phase2_hinet_reference", "steal_unet", "enhance"]
    for row in loaded["training"]:
        assert row["batch"] == 2 and row["paper_batch"] >= 2 and row["image_size"] == 32
        assert row["repeats"] == 1 and len(row["times_s"]) == 1
        assert _finite_positive(row["step_s"]) and _finite_positive(row["images_per_s"])
        assert row["batch_note"]  # reduced below the paper's batch, and says why
        assert row["peak_mem_mb"] is None or row["peak_mem_mb"] >= 0
        assert row["timed_from_warmup"] is False

    coupling = loaded["coupling"]
    assert coupling["num_blocks"] == speed.TINY_WIDTHS["num_blocks"]
    assert _finite_positive(coupling["speedup"]) and len(coupling["speedup_pairs"]) >= 1
    assert coupling["max_abs_diff"] <= 1e-5 and coupling["equal_ok"] is True
    assert set(coupling["max_abs_diff_per_output"]) == {"masked_face", "recovered_face", "recovered_mask"}

    ops = [(r["name"], r["batch"]) for r in loaded["inference"]]
    assert ops == [("protect", 1), ("recover", 1), ("protect", 2), ("recover", 2)]
    assert all(_finite_positive(r["latency_ms_per_image"]) for r in loaded["inference"])

    assert [r["source"] for r in loaded["data"]] == ["synthetic", "celeba", "folder"]
    for row in loaded["data"]:
        assert row["images"] > 0 and row["batch_shape"] == [2, 3, 32, 32]
        assert _finite_positive(row["ratio_to_phase2"]) and isinstance(row["ratio_ok"], bool)
    assert set(loaded["checks"]) == {
        "coupling_speedup_ok", "coupling_equal_ok", "data_ratio_ok", "inn_fraction_of_peak_ok"
    }  # fmt: skip
    assert "Coupling network step" in speed.format_table(results)

    # issue 16: FLOPs, GFLOP/s and the fraction of the matmul peak measured in the same run
    assert _finite_positive(loaded["peak"]["best"]["fp32"]) and loaded["peak"]["start"]["fp32"]["n"] > 0
    for row in loaded["training"] + loaded["inference"]:
        assert row["flops"] > 0 and _finite_positive(row["gflops_per_s"]), row["name"]
        assert row["fraction_of_peak"] == pytest.approx(row["gflops_per_s"] / loaded["peak"]["best"]["fp32"])
    assert 0 < coupling["ours_flops"] < next(r["flops"] for r in loaded["training"] if r["name"] == "phase2")
    assert _finite_positive(coupling["ours_fraction_of_peak"])
    assert isinstance(loaded["checks"]["inn_fraction_of_peak_ok"], bool)
    assert "of peak" in speed.format_table(results)


def test_gpu_script_dry_run_on_cpu(speed: ModuleType, tmp_path: Path) -> None:
    """benchmarks/gpu.py --dry-run: the GPU benchmark's code paths with tiny networks on CPU (compile left out:
    inductor's CPU compilation alone takes minutes on 2 cores)."""
    gpu = _load("gpu")
    out = tmp_path / "gpu.json"
    gpu.main(["--dry-run", "--sections", "phases,inn_impl,channels_last,bf16_run", "--precisions", "fp32,bf16",
              "--run-steps", "2", "--out", str(out)])  # fmt: skip
    loaded = json.loads(out.read_text())
    assert loaded["dry_run"] is True and _finite_positive(loaded["peak"]["best"]["fp32"])
    phases = [(r["name"], r["precision"]) for r in loaded["phases"]]
    assert phases == [(p, k) for p in ("phase1", "phase2", "steal", "enhance") for k in ("fp32", "bf16")]
    for row in loaded["phases"]:
        assert "error" not in row, row
        assert _finite_positive(row["step_s"]) and row["flops"] > 0 and _finite_positive(row["fraction_of_peak"])
    assert {r["variant"] for r in loaded["inn_impl"]} == {"split", "concat"}
    assert {r["variant"] for r in loaded["channels_last"]} == {"contiguous", "channels_last"}
    runs = loaded["bf16_run"]["runs"]
    assert set(runs) == {"32-true", "bf16-mixed"}
    for r in runs.values():
        assert len(r["loss"]) == 2 and r["nan_steps"] == 0 and r["skipped_steps"] == 0


def test_flop_count_of_a_matmul(speed: ModuleType) -> None:
    harness = _load("harness")
    cfg = harness.make_config("cpu", quick=True)
    a, b = torch.rand(8, 16), torch.rand(16, 4)
    assert harness.count_flops(lambda: a @ b, cfg) == 2 * 8 * 16 * 4
    cfg.flops = False
    assert harness.count_flops(lambda: a @ b, cfg) is None
    assert speed.count_flops is harness.count_flops  # speed.py keeps re-exporting the harness


def test_speed_main_parses_arguments_and_writes_the_file(speed: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    speed.main(
        ["--quick", "--image-size", "32", "--sections", "inference", "--batch", "infer_large=3", "--out", str(out)]
    )
    loaded = json.loads(out.read_text())
    assert [r["batch"] for r in loaded["inference"]] == [1, 1, 3, 3]
    assert loaded["training"] == [] and loaded["coupling"] is None and loaded["checks"]["data_ratio_ok"] is None
    with pytest.raises(SystemExit):
        speed.main(["--quick", "--batch", "nonsense=2", "--out", str(out)])


def test_one_benchmark_file_runs_its_section_alone(speed: ModuleType, tmp_path: Path, monkeypatch) -> None:
    """``python benchmarks/speed_inference.py [speed.py options]`` = ``speed.py --sections inference``."""
    out = tmp_path / "inference.json"
    monkeypatch.setattr(sys, "argv", ["speed_inference.py", "--quick", "--image-size", "32", "--out", str(out)])
    runpy.run_path(str(BENCHMARKS / "speed_inference.py"), run_name="__main__")
    loaded = json.loads(out.read_text())
    assert [r["name"] for r in loaded["inference"]] == ["protect", "recover", "protect", "recover"]
    assert loaded["training"] == [] and loaded["data"] == []


def test_every_benchmark_file_is_under_500_lines() -> None:
    files = sorted(BENCHMARKS.glob("*.py"))
    assert {"harness.py", "phase_steps.py", "speed.py", "speed_training.py"} <= {f.name for f in files}
    assert [f.name for f in files if len(f.read_text().splitlines()) >= 500] == []


def test_fit_batch_halves_on_cuda_out_of_memory_and_says_why(speed: ModuleType) -> None:
    phase_steps = _load("phase_steps")
    cfg = speed.make_config("cpu", quick=True)
    cfg.batches["phase1"] = 8
    tried = []

    def run(b: int) -> int:
        tried.append(b)
        if b > 2:
            raise torch.cuda.OutOfMemoryError("fake OOM")
        return b

    assert phase_steps.fit_batch(cfg, "phase1", run, even=True) == 2
    assert tried == [8, 4, 2] and cfg.batches["phase1"] == 2
    assert "out of memory" in cfg.batch_notes["phase1"]


def test_robustness_benchmark_reports_every_attack(checkpoints, fake_folder, tmp_path) -> None:
    from ipmn_lightning.inference.bundle import export_service_bundle, export_verifier_bundle

    bundles = tmp_path / "run" / "bundles"
    export_service_bundle(checkpoints["phase2"], bundles / "service.safetensors")
    export_verifier_bundle(checkpoints["enhance"], bundles / "verifier.safetensors")
    out = tmp_path / "robustness.json"
    robustness = _load("robustness")
    assert robustness.main(["--run", str(tmp_path / "run"), "--faces", str(fake_folder), "--donors", "2",
                            "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result["sr_e_masked_face"]) == set(robustness.ATTACKS)
    assert result["test_faces"] >= 2 and result["image_size"] == 32
    rates = [*result["sr_e_masked_face"].values(), *result["fpr"].values()]
    rates += [v for k, v in result["forgery_transplant"].items() if k.startswith("x")]
    assert all(0.0 <= r["verified"] <= 1.0 and r["nc_min"] <= r["nc_mean"] <= r["nc_max"] for r in rates)
