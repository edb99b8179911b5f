"""``ipmn audit query``: send the owner's challenge images to a suspect HTTP endpoint and keep its answers.

The attacker of paper §3.3.1 imitates the protection service through its API; an owner who suspects that a live
service runs such an imitation asks it exactly what the service is asked. Every image of the challenge folder
is posted to ``--suspect_url`` (the image as the request body with its ``Content-Type``, as ``ipmn serve``'s
``POST /protect`` takes it, or as the form field ``--field`` of a ``multipart/form-data`` request) and the image
that comes back is kept as it came: ``<out>/<stem>.<ext>`` with the extension of its ``Content-Type``, bytes
unchanged, and ``<out>/responses.json`` records the URL, and per image the query's and the answer's SHA-256,
the HTTP status and the time taken. The folder then goes to ``ipmn verify --images`` (or the model-level audit
of issue 24) as the suspect's responses.

Nothing is half-written: the answers go to a hidden folder beside ``--out`` that is renamed into place only when
every query was answered with an image; any failure (no connection, a status other than 200 after the retries,
a body that is not an image) stops the command with exit code 2 and the reason, and leaves nothing. A ``429`` or
``503`` answer is retried after its ``Retry-After`` (at most ``--max_wait`` seconds in all per image), so a
rate-limited service is audited at the pace it allows. Headers for the suspect (e.g. the API key it gave the
owner) come from ``--headers_file``, one ``Name: value`` per line, never from the command line (where other users
of the machine can read them); they are sent but never printed or recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from PIL import Image

from ipmn_lightning.audit.challenge import CHALLENGE_FILE
from ipmn_lightning.core.errors import IPMNError
from ipmn_lightning.core.files import atomic_folder, atomic_write_text

__all__ = ["AuditQueryError", "audit_query", "query_suspect"]

#: Content types of the challenge images, by extension.
QUERY_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
#: File extensions of the answers, by content type (anything else is decoded to tell).
ANSWER_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
RETRY_STATUSES = (429, 503)


class AuditQueryError(IPMNError):
    """The challenge, the URL or the suspect's answers cannot be used; nothing was written."""


def _challenge_files(challenge: Path) -> list[Path]:
    if not challenge.is_dir():
        raise AuditQueryError(f"--challenge {challenge} is not a folder; pass the folder of challenge images")
    if (challenge / CHALLENGE_FILE).is_file():  # a folder of `ipmn audit challenge`: the service is sent x_p
        challenge = challenge / "protected"
    files = sorted(p for p in challenge.iterdir() if p.suffix.lower() in QUERY_TYPES and not p.name.startswith("."))
    if not files:
        kinds = ", ".join(QUERY_TYPES)
        raise AuditQueryError(f"--challenge {challenge} holds no images ({kinds}); pass the challenge folder")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise AuditQueryError(f"--challenge {challenge}: two images share a name ({', '.join(twice)}); rename one")
    return files


def _read_headers(headers_file: str | None) -> dict[str, str]:
    """The ``Name: value`` lines of ``headers_file`` (blank lines and ``#`` comments skipped); values never shown."""
    if headers_file is None:
        return {}
    path = Path(headers_file).expanduser()
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AuditQueryError(f"--headers_file {path}: cannot read it ({type(err).__name__})") from err
    parsed = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise AuditQueryError(f"--headers_file {path}, line {number}: expected 'Name: value' (value not shown)")
        parsed[name.strip()] = value.strip()
    return parsed


def _answer_extension(body: bytes, content_type: str, name: str) -> str:
    """The answer's file extension; raises unless the body decodes as an image."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            image.load()
            kind = image.format
    except Exception as err:  # PIL raises many types on a body that is not an image
        shown = body[:80].decode("utf-8", "replace")
        raise AuditQueryError(f"the answer to {name} is not an image ({content_type or 'no type'}): {shown!r}") from err
    return ANSWER_EXTENSIONS.get(content_type.split(";")[0].strip().lower(), f".{(kind or 'img').lower()}")


def query_suspect(
    client: Any, url: str, file: Path, headers: dict[str, str], field: str | None, max_wait: float
) -> tuple[bytes, str, int, float]:
    """Post one challenge image; returns (body, content type, status, seconds), retrying 429/503 within ``max_wait``."""
    data = file.read_bytes()
    content_type = QUERY_TYPES[file.suffix.lower()]
    waited, start = 0.0, time.perf_counter()
    while True:
        if field is None:
            answer = client.post(url, content=data, headers={**headers, "Content-Type": content_type})
        else:
            answer = client.post(url, files={field: (file.name, data, content_type)}, headers=headers)
        if answer.status_code not in RETRY_STATUSES:
            break
        try:
            pause = float(answer.headers.get("retry-after", "1"))
        except ValueError:
            pause = 1.0
        if waited + pause > max_wait:
            raise AuditQueryError(
                f"{url} kept answering {answer.status_code} to {file.name} for {waited:.0f} s (--max_wait {max_wait})"
            )
        time.sleep(pause)
        waited += pause
    if answer.status_code != 200:
        shown = answer.content[:200].decode("utf-8", "replace")
        raise AuditQueryError(f"{url} answered {answer.status_code} to {file.name}: {shown}")
    return answer.content, answer.headers.get("content-type", ""), answer.status_code, time.perf_counter() - start


def audit_query(
    *,
    challenge: str,
    suspect_url: str,
    out: str,
    field: str | None = None,
    headers_file: str | None = None,
    timeout: float = 120.0,
    max_wait: float = 300.0,
) -> int:
    """Send each challenge image to a suspect endpoint; writes its answers to ``<out>`` and ``responses.json``.

    Args:
        challenge: the folder of ``ipmn audit challenge`` (its ``protected/`` images are sent), or any folder of
            challenge images (``.png``, ``.jpg``, ``.webp``), e.g. the owner's fresh faces.
        suspect_url: the suspect's endpoint, ``http://`` or ``https://`` (e.g. ``http://host:8000/protect``).
        out: the folder for the answers; must not exist yet (an audit's evidence is never mixed or replaced).
        field: send each image as this field of a ``multipart/form-data`` request; default: the request body.
        headers_file: a text file of extra request headers, one ``Name: value`` per line (e.g. the suspect's API
            key); sent, never printed or recorded.
        timeout: seconds to wait for one answer.
        max_wait: seconds, per image, to wait in all on ``429``/``503`` answers (their ``Retry-After``).
    """
    try:
        return _audit_query(challenge, suspect_url, out, field, headers_file, timeout, max_wait)
    except AuditQueryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _audit_query(
    challenge: str, url: str, out: str, field: str | None, headers_file: str | None, timeout: float, max_wait: float
) -> int:
    import httpx  # only this command needs an HTTP client

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise AuditQueryError(f"--suspect_url must be an http:// or https:// URL, got {url!r}")
    files = _challenge_files(Path(challenge).expanduser())
    target = Path(out).expanduser()
    if target.exists():
        raise AuditQueryError(f"--out {target} exists; pass a new folder (the answers of an audit are never mixed)")
    headers = _read_headers(headers_file)
    records = []
    with atomic_folder(target) as staging:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for index, file in enumerate(files, 1):
                try:
                    body, kind, status, seconds = query_suspect(client, url, file, headers, field, max_wait)
                except httpx.HTTPError as err:
                    raise AuditQueryError(f"{url}: {type(err).__name__} on {file.name}: {err}") from err
                answer = staging / f"{file.stem}{_answer_extension(body, kind, file.name)}"
                answer.write_bytes(body)
                records.append({
                    "challenge": file.name,
                    "challenge_sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
                    "answer": answer.name,
                    "answer_sha256": hashlib.sha256(body).hexdigest(),
                    "content_type": kind,
                    "status": status,
                    "seconds": round(seconds, 4),
                })  # fmt: skip
                print(f"\r{index}/{len(files)} answered", end="", file=sys.stderr)
        print(file=sys.stderr)
        manifest = {"suspect_url": url, "field": field, "challenge": str(challenge), "answers": records}
        atomic_write_text(staging / "responses.json", json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(records)} answer(s) of {url} to {target}")
    return 0
