"""IP audit benchmark (issue 24): is every stolen model caught, whatever its architecture, and no innocent one?

    nice python benchmarks/ip_audit.py --run runs/demo --out runs/ip_audit
    # then: cp runs/ip_audit/ip_audit.{json,md} benchmarks/results/ (ip_audit_demo.*)

From a run's phase-1 and phase-2 checkpoints (``--run``: ``phase1/checkpoints/last.ckpt``,
``phase2/checkpoints/last.ckpt``; ``--verifier_ckpt`` picks another R, e.g. an enhancement's) it

1. trains, with ``ipmn fit`` of ``--steal_config`` for ``--steps`` optimizer steps each (checkpoints every third
   of the way, for the curve), the *thieves*: the paper's four stealers (``cnet``, ``res9``, ``res16``, ``unet``;
   plain L2 on the service's answers x_wmf), ``attn`` (an image-to-image transformer) and ``res9_careful``
   (L1, augmented queries, cosine schedule); and the *null models*, independent models of the same job that
   never saw the watermark (:data:`NULLS`: the same INN on the plain mask, or the plain face swap x_m);
2. writes a fresh challenge (``ipmn audit challenge``: synthetic faces from streams no shipped config draws, or
   ``--challenge_root``), the genuine service's answers, and every model's answers (``ipmn audit answer``);
3. audits every final model with ``ipmn audit run`` (thieves against all null models; each null model against
   the others, leave-one-out), and measures per image: SR_E (NC > 0.95) of every checkpoint and its
   imitation PSNR (8-bit, against the genuine answers); clean faces' and genuine x_wmf's SR_E;
4. checks the p-value's calibration (:func:`ipmn_lightning.audit.statistics.calibration`: each null model held
   out in turn, its answers bootstrapped).

Writes ``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>_curve.png`` (mean NC and SR_E against the
imitation PSNR; ``--name``, default ``ip_audit``). Models and answers already in ``<out>`` are reused, so a
second R (``--verifier_ckpt``, another ``--name``) is measured on the same answers.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ipmn_lightning.audit.answer import answer_challenge
from ipmn_lightning.audit.challenge import read_challenge
from ipmn_lightning.audit.keyed import keyed_scores
from ipmn_lightning.audit.reference import challenge_masks, read_reference, write_reference
from ipmn_lightning.audit.statistics import MIN_BETWEEN_SD_KEYED, calibration
from ipmn_lightning.console.main import main as ipmn
from ipmn_lightning.core.files import atomic_save_image, atomic_write_text
from ipmn_lightning.data.images import load_image
from ipmn_lightning.inference.bundle import export_service_bundle, export_verifier_bundle
from ipmn_lightning.inference.facade import IPMN

#: The thieves: name -> phase-3a init arguments (the paper's four, then issue 24's two).
THIEVES: dict[str, dict[str, Any]] = {
    "cnet": {"stealer": "cnet"},
    "res9": {"stealer": "res9"},
    "res16": {"stealer": "res16"},
    "unet": {"stealer": "unet"},
    "attn": {"stealer": "attn"},
    "res9_careful": {"stealer": "res9", "loss": "l1", "augment": True, "lr_schedule": "cosine"},
}
#: The null models: never trained on a watermarked answer.
NULLS: dict[str, dict[str, Any]] = {
    "null_unet_plain_inn": {"stealer": "unet", "target": "plain_inn"},
    "null_res9_mask": {"stealer": "res9", "target": "mask"},
    "null_attn_plain_inn": {"stealer": "attn", "target": "plain_inn"},
    "null_res16_mask": {"stealer": "res16", "target": "mask"},
}
ALPHA = 1e-6


def train(name: str, init: dict[str, Any], args: argparse.Namespace, p1: Path, p2: Path) -> list[Path]:
    """Train one model with ``ipmn fit`` (unless done); its checkpoints, in step order."""
    root = args.out / "models" / name
    folder = root / "checkpoints"
    done = root / "done.json"
    if not done.is_file():
        every = args.checkpoint_every or max(args.steps // 3, 1)
        callbacks = root / "callbacks.yaml"
        callbacks.parent.mkdir(parents=True, exist_ok=True)
        callbacks.write_text(
            "trainer:\n  enable_checkpointing: true\n  callbacks:\n"
            "    - class_path: pytorch_lightning.callbacks.ModelCheckpoint\n"
            f"      init_args: {{dirpath: {folder}, filename: 'step{{step:05d}}', every_n_train_steps: {every}, "
            "save_top_k: -1, auto_insert_metric_name: false}\n"
        )
        command = [sys.executable, "-m", "ipmn_lightning", "fit", "--config", args.data, "--config", args.steal_config,
                   "--config", str(callbacks), f"--trainer.default_root_dir={root}",
                   f"--trainer.max_steps={args.steps}",
                   f"--model.init_args.phase1_ckpt={p1}", f"--model.init_args.phase2_ckpt={p2}",
                   "--trainer.enable_progress_bar=false", "--trainer.logger=false",
                   *[f"--model.init_args.{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in init.items()],
                   *args.fit_args]  # fmt: skip
        tic = time.time()
        print(f"training {name}: {' '.join(command[3:])}", flush=True)
        subprocess.run(command, check=True)
        atomic_write_text(done, json.dumps({"seconds": time.time() - tic, "init": init}) + "\n")
    return sorted(folder.glob("step*.ckpt"))


def write_genuine(challenge: Path, manifest: dict[str, Any], service_bundle: Path, size: int, out: Path) -> None:
    """The genuine service's answers x_wmf to the challenge, with the x_m of :func:`challenge_masks` (synthetic:
    the challenge's; photos: the landmark swap at 128 px, as the faces pipeline makes its masks). Pairs without a
    face found get no genuine answer (the imitation PSNR is over the others)."""
    service = IPMN.load(service_bundle=service_bundle)
    protected = {pair["id"]: pair["protected"]["file"] for pair in manifest["pairs"]}
    for pair_id, x_m in challenge_masks(challenge, manifest, size).items():
        if x_m is None:
            continue
        x_p = load_image(challenge / protected[pair_id], size)
        atomic_save_image(out / f"{pair_id}.png", service.protect(x_p[None], x_m[None])[0])


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.stem.removeprefix("step"))


def ncs_of(model: IPMN, folder: Path, size: int) -> dict[str, float]:
    files = sorted(folder.glob("*.png"))
    images = torch.stack([load_image(f, size) for f in files])
    values = [v.nc for start in range(0, len(files), 64) for v in model.verify(images[start : start + 64])]
    return dict(zip((f.stem for f in files), values))


def keyed_of(reference: dict[str, Any], folder: Path, size: int) -> list[float]:
    """The keyed scores of a folder's answers to the reference's pairs (those it has an answer for)."""
    index = [k for k, i in enumerate(reference["ids"]) if (folder / f"{i}.png").is_file()]
    answers = torch.stack([load_image(folder / f"{reference['ids'][k]}.png", size) for k in index])
    return keyed_scores(answers, reference["mask"][index], reference["residual"][index]).tolist()


def psnr_8bit(folder: Path, reference: Path, size: int) -> float:
    """Mean per-image PSNR of ``folder``'s answers against ``reference``'s (same stems), in dB."""
    values = []
    for file in sorted(reference.glob("*.png")):
        a, b = load_image(folder / file.name, size), load_image(file, size)
        mse = float(((a - b) ** 2).mean())
        values.append(10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item())
    return sum(values) / len(values)


def audit(
    suspect: Path, nulls: list[Path], args: argparse.Namespace, report: Path, keyed: bool = False
) -> dict[str, Any]:
    """``ipmn audit run`` of one suspect against the null models' answers (the mean NC, or the keyed score)."""
    extra = ["--reference", str(args.reference)] if keyed else []
    code = ipmn(["audit", "run", "--bundle", str(args.verifier), "--responses", str(suspect),
                 "--null", json.dumps([str(p) for p in nulls]), "--challenge", str(args.out / "challenge"),
                 "--report", str(report), "--alpha", str(ALPHA), "--overwrite", "true", *extra])  # fmt: skip
    result = json.loads(report.read_text())
    return {"exit_code": code, "p_value": result["p_value"], "statistic": result["statistic"], "z": result["z"],
            "effect_size": result["effect_size"], "verdict": result["verdict"], "n": result["n"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the pipeline output with phase1/ and phase2/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default="configs/data/synthetic.yaml")
    parser.add_argument("--steal_config", default="configs/demo/phase3_steal.yaml")
    parser.add_argument("--steps", type=int, default=384, help="optimizer steps per model (demo: 3 epochs)")
    parser.add_argument(
        "--checkpoint_every", type=int, default=None, help="steps between checkpoints (default: a third of --steps)"
    )
    parser.add_argument("--n", type=int, default=200, help="challenge pairs")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument(
        "--challenge_root", default=None, help="a folder of faces never trained on (default: synthetic)"
    )
    parser.add_argument("--verifier_ckpt", default=None, help="R's checkpoint (default: the run's phase 1)")
    parser.add_argument("--models", default=None, help="comma-separated subset of the thieves and null models")
    parser.add_argument("--name", default="ip_audit", help="name of the result files (another R: another name)")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per null model")
    parser.add_argument(
        "--fit_arg",
        dest="fit_args",
        action="append",
        default=[],
        help="one more argument for every `ipmn fit`, e.g. --fit_arg=--trainer.accelerator=gpu",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    p1, p2 = args.run / "phase1/checkpoints/last.ckpt", args.run / "phase2/checkpoints/last.ckpt"
    chosen = set(args.models.split(",")) if args.models else None
    thieves = {k: v for k, v in THIEVES.items() if chosen is None or k in chosen}
    nulls = {k: v for k, v in NULLS.items() if chosen is None or k in chosen}
    started = time.time()
    checkpoints = {name: train(name, init, args, p1, p2) for name, init in {**thieves, **nulls}.items()}

    args.verifier = args.out / f"verifier_{args.name}.safetensors"
    export_verifier_bundle(args.verifier_ckpt or p1, args.verifier)
    export_service_bundle(p2, args.out / "service.safetensors")
    challenge = args.out / "challenge"
    if not challenge.exists():
        source = ["--root", args.challenge_root] if args.challenge_root else ["--source", "synthetic"]
        assert ipmn(["audit", "challenge", *source, "--n", str(args.n), "--image_size", str(args.image_size),
                     "--out", str(challenge)]) == 0  # fmt: skip
    manifest = read_challenge(challenge)
    size = int(manifest["image_size"])
    verifier = IPMN.load(verifier_bundle=args.verifier)
    answers = args.out / "answers"
    genuine = answers / "genuine"
    if not genuine.exists():
        write_genuine(challenge, manifest, args.out / "service.safetensors", size, genuine)
    args.reference = args.out / "reference.safetensors"
    if not args.reference.exists():
        write_reference(str(args.out / "service.safetensors"), str(challenge), str(args.reference))
    reference = read_reference(args.reference, str(challenge))
    rows: dict[str, Any] = {}
    final_ncs: dict[str, list[float]] = {}  # each model's last checkpoint's NCs, for the calibration
    final_keyed: dict[str, list[float]] = {}  # and its keyed scores
    for name, files in checkpoints.items():
        steps = []
        for checkpoint in files:
            folder = answers / f"{name}@{step_of(checkpoint)}"
            if not folder.exists():
                answer_challenge(str(checkpoint), str(challenge), str(folder))
            nc = list(ncs_of(verifier, folder, size).values())
            keyed = keyed_of(reference, folder, size)
            steps.append({
                "step": step_of(checkpoint), "answers": str(folder), "mean_nc": sum(nc) / len(nc),
                "mean_keyed": sum(keyed) / len(keyed),
                "sr_e": sum(v > verifier.threshold for v in nc) / len(nc),
                "imitation_psnr": psnr_8bit(folder, genuine, size) if genuine.exists() else None,
            })  # fmt: skip
        final_ncs[name] = nc
        final_keyed[name] = keyed
        rows[name] = {"role": "thief" if name in thieves else "null", "init": {**thieves, **nulls}[name],
                      "steps": steps, **steps[-1]}  # fmt: skip
    final = {name: Path(row["answers"]) for name, row in rows.items()}
    null_names = [n for n in rows if rows[n]["role"] == "null"]
    reports = args.out / f"reports_{args.name}"
    reports.mkdir(exist_ok=True)
    for name, row in rows.items():
        others = [final[n] for n in null_names if n != name]
        if len(others) >= 2:
            row["audit"] = audit(final[name], others, args, reports / f"{name}.json")
            row["keyed_audit"] = audit(final[name], others, args, reports / f"{name}_keyed.json", keyed=True)
    null_ncs = {n: final_ncs[n] for n in null_names}
    table = calibration(null_ncs, resamples=args.resamples) if len(null_ncs) >= 3 else None
    null_keyed = {n: final_keyed[n] for n in null_names}
    keyed_table = (
        calibration(null_keyed, resamples=args.resamples, min_between_sd=MIN_BETWEEN_SD_KEYED)
        if len(null_keyed) >= 3 else None
    )  # fmt: skip
    clean = {
        k: list(ncs_of(verifier, challenge / k, size).values())
        for k in ("protected", "mask")
        if (challenge / k).is_dir()
    }
    genuine_nc = list(ncs_of(verifier, genuine, size).values()) if genuine.exists() else []
    genuine_keyed = keyed_of(reference, genuine, size) if genuine.exists() else []
    result = {
        "benchmark": "ip_audit", "run": str(args.run), "steps": args.steps, "n": len(manifest["pairs"]),
        "challenge": {"source": manifest["source"], "root": manifest["root"], "seed": manifest["seed"]},
        "verifier": str(args.verifier_ckpt or p1), "alpha": ALPHA, "threshold": verifier.threshold,
        "models": rows, "calibration": table, "keyed_calibration": keyed_table,
        "clean_sr_e": {k: sum(v > verifier.threshold for v in ncs) / len(ncs) for k, ncs in clean.items()},
        "clean_mean_nc": {k: sum(ncs) / len(ncs) for k, ncs in clean.items()},
        "genuine_sr_e": sum(v > verifier.threshold for v in genuine_nc) / len(genuine_nc) if genuine_nc else None,
        "genuine_mean_nc": sum(genuine_nc) / len(genuine_nc) if genuine_nc else None,
        "genuine_mean_keyed": sum(genuine_keyed) / len(genuine_keyed) if genuine_keyed else None,
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
        "wall_s": time.time() - started,
    }  # fmt: skip
    atomic_write_text(args.out / f"{args.name}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / f"{args.name}.md", markdown(result))
    figure(result, args.out / f"{args.name}_curve.png")
    print(markdown(result))


def _p(audit_row: dict[str, Any]) -> str:
    if not audit_row:
        return "-"
    return f"{audit_row['p_value']:.3g}" if audit_row["p_value"] > 1e-300 else "< 1e-300"


def _calibration_lines(table: dict[str, Any] | None, what: str) -> list[str]:
    if not table:
        return []
    lines = [f"Calibration of the {what}: each null model held out, the others fitted, {table['trials']} bootstrap "
             "trials", "", "| alpha | share with p < alpha | 95% upper bound |", "|---|---|---|"]  # fmt: skip
    share, upper = table["share_below"], table["upper_95"]
    lines += [f"| {a} | {share[str(a)]:.4f} | {upper[str(a)]:.4f} |" for a in table["alphas"]]
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# IP audit: {result['n']} challenge queries ({result['challenge']['source']}), {result['steps']} steps per "
        f"model, R from {Path(result['verifier']).name}, alpha {result['alpha']:g}",
        "",
        "| model | role | imitation PSNR (dB) | per-image SR_E | mean NC | audit p (mean NC) | mean keyed score | "
        "audit p (keyed) | z (keyed) | verdict (keyed) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["models"].items():
        nc_row, keyed_row = row.get("audit") or {}, row.get("keyed_audit") or {}
        psnr = f"{row['imitation_psnr']:.2f}" if row.get("imitation_psnr") is not None else "-"
        z = f"{keyed_row['z']:.1f}" if keyed_row else "-"
        verdict = keyed_row.get("verdict", "-")
        lines.append(f"| {name} | {row['role']} | {psnr} | {row['sr_e']:.1%} | {row['mean_nc']:.4f} | {_p(nc_row)} | "
                     f"{row['mean_keyed']:.4f} | {_p(keyed_row)} | {z} | {verdict} |")  # fmt: skip
    lines += ["", f"Genuine x_wmf: SR_E {result['genuine_sr_e']}, mean NC {result['genuine_mean_nc']}, mean keyed "
              f"score {result.get('genuine_mean_keyed')}; clean faces: SR_E {result['clean_sr_e']}, mean NC "
              f"{result['clean_mean_nc']}.", ""]  # fmt: skip
    lines += _calibration_lines(result["calibration"], "mean-NC audit")
    lines += _calibration_lines(result.get("keyed_calibration"), "keyed audit")
    lines += ["Curve (per checkpoint): model, step, imitation PSNR, SR_E, mean NC, mean keyed score", ""]
    for name, row in result["models"].items():
        points = "; ".join(
            f"{s['step']}: {s['imitation_psnr'] or 0:.2f} dB, {s['sr_e']:.0%}, {s['mean_nc']:.3f}, "
            f"{s.get('mean_keyed', float('nan')):.3f}"
            for s in row["steps"]
        )
        lines.append(f"- {name}: {points}")
    return "\n".join(lines) + "\n"


def figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), dpi=110)
    for name, row in result["models"].items():
        xs = [s["imitation_psnr"] or 0 for s in row["steps"]]
        style = "--" if row["role"] == "null" else "-"
        axes[0].plot(xs, [s["mean_nc"] for s in row["steps"]], style, marker="o", label=name)
        axes[1].plot(xs, [s["sr_e"] for s in row["steps"]], style, marker="o", label=name)
        axes[2].plot(xs, [s.get("mean_keyed", float("nan")) for s in row["steps"]], style, marker="o", label=name)
    axes[0].set(xlabel="imitation PSNR vs x_wmf (dB)", ylabel="mean NC of R(answer), w")
    axes[1].set(xlabel="imitation PSNR vs x_wmf (dB)", ylabel="per-image SR_E (NC > 0.95)")
    axes[2].set(xlabel="imitation PSNR vs x_wmf (dB)", ylabel="mean keyed score (share of the residual)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
