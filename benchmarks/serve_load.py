"""Load benchmark of ``ipmn serve``: requests per second and latency percentiles of ``POST /protect``.

    python benchmarks/serve_load.py                                  # tiny 32-px bundles trained here, crop mode
    python benchmarks/serve_load.py --service S --verifier V --mode photo --photo PHOTO.jpg

The service runs in this process (uvicorn in a thread on a free port of 127.0.0.1) with ``torch`` limited to
``--threads`` (2: the acceptance machine's cores); ``--clients`` threads each send ``--requests / --clients``
requests over fresh HTTP connections after ``--warmup`` requests. Writes ``benchmarks/results/serve_load.json``
and ``.md`` (``--out`` stem).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service")
    parser.add_argument("--verifier")
    parser.add_argument("--mode", choices=("crop", "photo"), default="crop")
    parser.add_argument(
        "--photo", help="the photo to send (default: a 128-px synthetic face, plus a mask in crop mode)"
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from ipmn_lightning.serve.engine import ServiceEngine
    from ipmn_lightning.serve.keys import ApiKeys
    from tests.serve.live import live, png, synthetic_face

    with tempfile.TemporaryDirectory() as tmp:
        service, verifier = args.service, args.verifier
        if service is None or verifier is None:
            from ipmn_lightning.inference.bundle import export_service_bundle, export_verifier_bundle
            from tests.helpers import make_checkpoints

            ckpts = make_checkpoints(Path(tmp) / "ckpts")
            service = export_service_bundle(ckpts["phase2"], Path(tmp) / "service.safetensors")
            verifier = export_verifier_bundle(ckpts["phase1"], Path(tmp) / "verifier.safetensors")
        engine = ServiceEngine(service, service, verifier, mode=args.mode)
        if args.photo:
            files = {"file": Path(args.photo).read_bytes()}
        else:
            files = {"file": png(synthetic_face(0))}
            if args.mode == "crop":
                files["mask"] = png(synthetic_face(1000))
        for server in live(engine, ApiKeys(), rate=10**9):
            client = server.client

            def one(_: int, client=client) -> tuple[int, float]:
                start = time.perf_counter()
                answer = client.post_form("/protect", files)
                return answer.status, time.perf_counter() - start

            for i in range(args.warmup):
                assert one(i)[0] == 200, "warm-up request failed"
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                results = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
        latencies = [t * 1000 for s, t in results if s == 200]
        failed = sum(s != 200 for s, _ in results)
    report = {
        "endpoint": "POST /protect",
        "mode": args.mode,
        "image_size": engine.image_size,
        "bundles": "tiny 32-px test bundles" if args.service is None else str(args.service),
        "photo": args.photo or "128-px synthetic face" + (" + mask" if args.mode == "crop" else ""),
        "requests": args.requests,
        "clients": args.clients,
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "failed": failed,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 1),
            "p90": round(percentile(latencies, 0.90), 1),
            "p99": round(percentile(latencies, 0.99), 1),
            "mean": round(statistics.fmean(latencies), 1),
            "max": round(max(latencies), 1),
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lat = report["latency_ms"]
    md = (
        f"# `ipmn serve` load: {report['endpoint']} ({args.mode} mode, {report['bundles']})\n\n"
        f"{args.requests} requests from {args.clients} concurrent clients, torch on {args.threads} threads, "
        f"{report['cpu_count']} CPUs (shared).\n\n"
        "| requests/s | p50 ms | p90 ms | p99 ms | mean ms | max ms | failed |\n|---|---|---|---|---|---|---|\n"
        f"| {report['requests_per_s']} | {lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['mean']} | {lat['max']} "
        f"| {failed} |\n"
    )
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
