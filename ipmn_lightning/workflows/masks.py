"""Fill a mask store with a :class:`~ipmn_lightning.faces.generators.MaskGenerator` (``ipmn masks generate``).

* ``pairs.csv`` is created when absent, with the pairing rules of ``ipmn masks pairs``.
* Resumable: every finished row is appended to a log (``<store>/.generate/rows-K-of-N.jsonl``, one JSON
  line per row, written after its mask); a rerun skips rows whose log line says ``ok`` and whose mask is
  a readable image of the right size, and does the rest. Masks are written atomically (temporary file +
  rename), so a kill never leaves a truncated mask; at worst the one row in flight is redone.
* Faces first: the landmarks of every image the remaining rows need are found once (in parallel), then
  the masks are made. A row whose replacement face x_r has no detectable face is re-paired with the next
  face of the same split (a seeded order; a different identity where identities are known) that has one;
  a row whose protected face x_p has none cannot be masked: it is reported and, once the whole store is
  done, dropped from ``pairs.csv`` (never a silent copy of x_p), so ``ipmn masks check`` passes.
* ``shard=(K, N)``: the rows whose protected path hashes to K modulo N; N processes or machines sharing
  the store folder fill it without overlap. The shard that finds every row logged rewrites ``pairs.csv``
  with the re-pairings (any later run does it too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ipmn_lightning.data.folder import dataset_layout
from ipmn_lightning.data.images import SPLITS, load_image
from ipmn_lightning.data.mask_store import PAIRS_FILE, PairRecord, make_pairs, read_pairs, save_mask, write_pairs
from ipmn_lightning.faces.generators import MaskGenerator, make_mask_generator

__all__ = ["STATE_DIR", "generate_masks", "parse_shard", "shard_of"]

#: Hidden folder inside the store with the per-shard row logs (hidden: image scans skip it).
STATE_DIR = ".generate"


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """Parse ``"K/N"`` (0 <= K < N).

    Raises:
        ValueError: malformed, naming the expected form.
    """
    if shard is None:
        return 0, 1
    if isinstance(shard, tuple):
        k, n = shard
    else:
        try:
            k_text, n_text = str(shard).split("/")
            k, n = int(k_text), int(n_text)
        except ValueError:
            raise ValueError(f"--shard must look like K/N (e.g. 0/4), got {shard!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"--shard K/N needs N >= 1 and 0 <= K < N, got {k}/{n}")
    return k, n


def shard_of(protected: str, num_shards: int) -> int:
    """The shard of a row: a hash of its protected path (stable when other rows are added or dropped)."""
    return int.from_bytes(hashlib.sha256(protected.encode()).digest()[:8], "big") % num_shards


@dataclass
class _Row:
    split: str
    protected: str
    replacement: str
    mask: str
    status: str  # "ok" | "failed"
    reason: str | None = None
    paired_with: str | None = None  # the replacement of pairs.csv when this row was re-paired


def _read_logs(state: Path) -> dict[str, _Row]:
    rows: dict[str, _Row] = {}
    for log in sorted(state.glob("rows-*.jsonl")):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = _Row(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut by a kill
            rows[row.protected] = row
    return rows


def _mask_ok(path: Path, size: int) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size == (size, size)
    except Exception:  # missing or unreadable: redo it
        return False


# ------------------------------------------------------------------------------ worker side

_WORKER: dict[str, Any] = {}


def _init_worker(generator: MaskGenerator, image_root: str, store: str, image_size: int) -> None:
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(1)
    _WORKER.update(generator=generator, image_root=Path(image_root), store=Path(store), image_size=image_size)


def _load(path: str) -> Any:
    return load_image(_WORKER["image_root"] / path, _WORKER["image_size"], "center")


def _analyze(path: str) -> tuple[str, list[list[float]] | None, str | None]:
    from ipmn_lightning.faces.analysis import to_uint8_array

    try:
        lm = _WORKER["generator"].landmarks(to_uint8_array(_load(path)))
    except Exception as err:  # an unreadable image is a failure of its row, not of the run
        return path, None, f"{type(err).__name__}: {err}"
    return path, (None if lm is None else np.asarray(lm, dtype=float).tolist()), None


def _make(task: tuple[PairRecord, Any, Any]) -> tuple[PairRecord, str | None]:
    record, lp, lr = task
    gen: MaskGenerator = _WORKER["generator"]
    try:
        p, r = _load(record.protected), _load(record.replacement)
        lps = None if lp is None else [np.asarray(lp)]
        lrs = None if lr is None else [np.asarray(lr)]
        out = gen.generate(p[None], r[None], lps, lrs)[0]
    except Exception as err:
        return record, f"{type(err).__name__}: {err}"
    if out.mask is None:
        return record, out.reason or "generator failed"
    save_mask(_WORKER["store"], record, out.mask)
    return record, None


@contextlib.contextmanager
def _mapper(workers: int, init_args: tuple[Any, ...]) -> Iterator[Any]:
    """``imap``-like over tasks: in this process for ``workers <= 1``, else a spawn pool."""
    if workers <= 1:
        saved = dict(_WORKER)
        _init_worker(*init_args)
        try:
            yield lambda fn, items: map(fn, items)
        finally:
            _WORKER.clear()
            _WORKER.update(saved)
        return
    import multiprocessing as mp

    # spawn: dlib/OpenCV/torch state is never forked; workers rebuild the generator from its pickle.
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=4)


def _progress(items: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit="img" if "faces" in desc else "pair", smoothing=0.05)


# --------------------------------------------------------------------------------- driver


def _repair_order(seed: int, protected: str, candidates: Sequence[str]) -> list[str]:
    def key(c: str) -> bytes:
        return hashlib.sha256(f"{seed}\0{protected}\0{c}".encode()).digest()

    return sorted(candidates, key=key)


def generate_masks(
    root: str | os.PathLike[str],
    source: str = "folder",
    store: str | os.PathLike[str] | None = None,
    generator: str | MaskGenerator = "landmark",
    image_size: int = 256,
    workers: int = 1,
    shard: str | tuple[int, int] | None = None,
    seed: int = 0,
    progress: bool = True,
    identity_sample: int = 32,
    max_repair_tries: int = 20,
) -> dict[str, Any]:
    """Fill (or finish filling) a mask store; see the module docstring.

    Args:
        root: the dataset folder (CelebA: the folder holding ``img_align_celeba/``).
        source: ``"celeba"`` or ``"folder"``.
        store: the store folder (default ``<root>/masks_store``).
        generator: a :class:`MaskGenerator` or a name for :func:`make_mask_generator`.
        image_size: masks are ``image_size`` square (x_p and x_r centre-cropped and resized to it, as
            training reads them).
        workers: processes; 1 runs in this process.
        shard: ``"K/N"``: fill only this shard's rows.
        seed: the pairing seed (for a new ``pairs.csv`` and for re-pairing).
        progress: show progress bars (rate and ETA) on stderr.
        identity_sample: embed this many of the new masks with dlib's recogniser (if installed) for the
            identity statistics of the summary; 0 skips them.
        max_repair_tries: replacement candidates tried for a row whose x_r has no face.

    Returns:
        The JSON-able summary: counts per split, failures with reasons, re-pairings, identity statistics.

    Raises:
        MaskStoreError: an existing ``pairs.csv`` is malformed.
        ValueError: a bad shard or generator name.
    """
    start = time.perf_counter()
    k, n = parse_shard(shard)
    root_path = Path(root).expanduser()
    store_path = Path(store).expanduser() if store else root_path / "masks_store"
    image_root, splits, identities = dataset_layout(source, root_path)
    gen = make_mask_generator(generator) if isinstance(generator, str) else generator
    created = False
    if not (store_path / PAIRS_FILE).is_file():
        write_pairs(
            store_path, make_pairs(splits, identities, seed=seed, root=image_root)
        )  # deterministic: shards agree
        created = True
    records = read_pairs(store_path)
    state = store_path / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / f"rows-{k}-of-{n}.jsonl"

    logged = _read_logs(state)
    mine = [r for r in records if shard_of(r.protected, n) == k]
    done: dict[str, _Row] = {}
    todo: list[PairRecord] = []
    for r in mine:
        row = logged.get(r.protected)
        if row is not None and row.status == "ok" and _mask_ok(store_path / row.mask, image_size):
            done[r.protected] = row
        else:
            todo.append(r)

    init_args = (gen, os.fspath(image_root), os.fspath(store_path), image_size)
    landmarks: dict[str, Any] = {}
    read_errors: dict[str, str] = {}
    new_rows: list[_Row] = []
    with _mapper(workers, init_args) as imap:
        need = sorted({p for r in todo for p in (r.protected, r.replacement)})
        for path, lm, err in _progress(imap(_analyze, need), len(need), "finding faces", progress and bool(need)):
            landmarks[path] = lm
            if err:
                read_errors[path] = err

        by_split: dict[str, list[str]] = {s: [r.protected for r in records if r.split == s] for s in SPLITS}
        tasks: list[tuple[PairRecord, Any, Any]] = []
        failures: list[_Row] = []
        for r in todo:
            if landmarks.get(r.protected) is None:
                why = read_errors.get(r.protected, "no face found in the protected image")
                failures.append(_Row(**asdict(r), status="failed", reason=why))
                continue
            rec = r
            if landmarks.get(r.replacement) is None:
                rec = None
                tries = 0
                for c in _repair_order(seed, r.protected, by_split[r.split]):
                    if c in (r.protected, r.replacement):
                        continue
                    if identities is not None and identities.get(c) is not None:
                        if identities.get(c) == identities.get(r.protected):
                            continue
                    if c not in landmarks:
                        landmarks[c] = next(iter(imap(_analyze, [c])))[1]
                    tries += 1
                    if landmarks[c] is not None:
                        rec = replace(r, replacement=c)
                        break
                    if tries >= max_repair_tries:
                        break
                if rec is None:
                    failures.append(
                        _Row(
                            **asdict(r),
                            status="failed",
                            reason=f"no face found in the replacement image, and none in {tries} other faces "
                            f"of split {r.split!r}",
                        )
                    )
                    continue
            tasks.append((rec, landmarks[rec.protected], landmarks[rec.replacement]))
        original = {r.protected: r.replacement for r in todo}
        with open(log_path, "a", encoding="utf-8") as log:
            for row in failures:
                log.write(json.dumps(asdict(row)) + "\n")
                new_rows.append(row)
            log.flush()
            for rec, err in _progress(imap(_make, tasks), len(tasks), "making masks", progress and bool(tasks)):
                was = original[rec.protected]
                row = _Row(
                    **asdict(rec),
                    status="failed" if err else "ok",
                    reason=err,
                    paired_with=was if was != rec.replacement else None,
                )
                log.write(json.dumps(asdict(row)) + "\n")
                log.flush()  # a kill loses at most the row in flight
                new_rows.append(row)

    pairs_updated = _finalize_pairs(store_path, records, _read_logs(state), image_size)
    ok_new = [r for r in new_rows if r.status == "ok"]
    summary: dict[str, Any] = {
        "store": os.fspath(store_path),
        "generator": getattr(gen, "name", type(gen).__name__),
        "image_size": image_size,
        "shard": f"{k}/{n}",
        "pairs_csv_created": created,
        "pairs_csv_updated": pairs_updated,
        "rows": len(mine),
        "already_done": len(done),
        "generated": len(ok_new),
        "failed": len(mine) - len(done) - len(ok_new),
        "per_split": {},
        "failures": [
            {"protected": r.protected, "split": r.split, "reason": r.reason} for r in new_rows if r.status != "ok"
        ],
        "repaired": [
            {"protected": r.protected, "replacement_was": r.paired_with, "replacement": r.replacement}
            for r in ok_new
            if r.paired_with
        ],
        "seconds": round(time.perf_counter() - start, 2),
    }
    for s in SPLITS:
        rows_s = [r for r in mine if r.split == s]
        if rows_s:
            summary["per_split"][s] = {
                "rows": len(rows_s),
                "already_done": sum(r.protected in done for r in rows_s),
                "generated": sum(r.split == s for r in ok_new),
                "failed": sum(r.split == s and r.status != "ok" for r in new_rows),
                "repaired": sum(r.split == s and bool(r.paired_with) for r in ok_new),
            }
    final = read_pairs(store_path)
    summary["warnings"] = [
        f"split {s!r} has no row with a face left; `ipmn masks check` will fail (add faces to the split)"
        for s in SPLITS
        if any(r.split == s for r in records) and not any(r.split == s for r in final)
    ]
    if ok_new and identity_sample > 0:
        summary["identity"] = _identity_stats(image_root, store_path, ok_new[:identity_sample], image_size)
    return summary


def _finalize_pairs(store: Path, records: Sequence[PairRecord], logged: Mapping[str, _Row], image_size: int) -> bool:
    """Once every row is logged, write the re-pairings into ``pairs.csv`` and drop unmaskable rows."""
    if any(r.protected not in logged for r in records):
        return False
    final: list[PairRecord] = []
    for r in records:
        row = logged[r.protected]
        if row.status == "ok":
            final.append(PairRecord(r.split, r.protected, row.replacement, row.mask))
    if final == list(records) or not final:
        return False
    write_pairs(store, final)
    return True


def _identity_stats(image_root: Path, store: Path, rows: Sequence[_Row], image_size: int) -> dict[str, Any]:
    """The dlib distances of a few new masks to their x_p and x_r (skipped without the ``faces`` extra)."""
    import torch

    try:
        from ipmn_lightning.faces.analysis import DlibIdentityEncoder

        enc = DlibIdentityEncoder()
    except ImportError as err:
        return {"skipped": str(err)}

    def batch(paths: Iterable[Path]) -> torch.Tensor:
        return torch.stack([load_image(p, image_size, "center") for p in paths])

    ep, fp = enc.embed(batch(image_root / r.protected for r in rows))
    er, fr = enc.embed(batch(image_root / r.replacement for r in rows))
    em, fm = enc.embed(batch(store / r.mask for r in rows))
    dp, dr = enc.distance(em, ep), enc.distance(em, er)
    both = fm & fp & fr
    return {
        "sample": len(rows),
        "recognizer": f"dlib (Euclidean, same person below {enc.threshold})",
        "face_found_in_mask": float(fm.float().mean()),
        "not_recognised_as_protected": float((~enc.same_person(em, ep)).float().mean()),
        "mean_distance_mask_protected": float(dp[both].mean()) if both.any() else None,
        "mean_distance_mask_replacement": float(dr[both].mean()) if both.any() else None,
    }
