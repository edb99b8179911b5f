"""The ASGI app of ``ipmn serve``: the protection service of paper §3.1 (Fig. 1) over HTTP.

=================  ==============  ==================================================================
endpoint           key             does
=================  ==============  ==================================================================
``GET /``          none            the web page (:mod:`ipmn_lightning.serve.page`)
``GET /health``    none            the bundles' formats and SHA-256 fingerprints, the mode, the limits
``POST /protect``  none            photo in, protected PNG out (sender)
``POST /recover``  receiver        protected PNG in, recovered PNG out (receiver)
``POST /verify``   owner           image in, ``{"nc", "threshold", "verified"}`` out (IP verifier)
``POST /audit``    owner           501: the audit of a suspect model is the ``ipmn audit`` command (issue 24)
=================  ==============  ==================================================================

A POST takes the photo as the raw request body (``Content-Type: image/...`` or ``application/octet-stream``)
or as the ``file`` field of a ``multipart/form-data`` form (``/protect`` also takes a ``mask`` field in crop
mode). Every error is JSON ``{"error": MESSAGE}``: 400 malformed, 401 no key, 403 wrong key, 413 too large,
415 not an image, 422 no face, 429 too many requests, 501 not available, 503 the key is not configured.
Bodies are read into memory up to the size limit and never written to disk.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser

from ipmn_lightning import __version__
from ipmn_lightning.serve.engine import ServiceEngine
from ipmn_lightning.serve.keys import KEY_ENV, ApiKeys, request_key
from ipmn_lightning.serve.limits import HTTPProblem, RateLimiter, ServeLimits, decode_photo
from ipmn_lightning.serve.page import PAGE

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: the page loads nothing from elsewhere: its own inline style and script, and the blob: URLs of the photos
_PAGE_POLICY = "default-src 'self'; img-src 'self' blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
_IMAGE_TYPES = ("image/", "application/octet-stream")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (a lying Content-Length included)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"the upload is {int(declared)} bytes, more than the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, f"the upload is more than the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette's cache: request.form() parses these bytes instead of the spent stream
    return body


async def _uploads(request: Request, limits: ServeLimits, fields: tuple[str, ...]) -> dict[str, bytes]:
    """The uploaded files by field name (``file`` for a raw body)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request, limits.max_upload_bytes)
    if content_type.startswith(_IMAGE_TYPES):
        return {"file": body}
    if content_type != "multipart/form-data":
        raise HTTPProblem(
            415,
            f"unsupported Content-Type {content_type or '(none)'!r}: send the photo as the body "
            "(Content-Type: image/png, image/jpeg, ...) or as the `file` field of a multipart/form-data form",
        )
    try:
        form = await request.form(max_files=len(fields), max_fields=len(fields) + 4)
    except Exception as err:  # starlette raises its own MultiPartException and HTTPException here
        raise HTTPProblem(400, f"malformed multipart form: {getattr(err, 'detail', err)}") from err
    files: dict[str, bytes] = {}
    for name in fields:
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            files[name] = await value.read()
    await form.close()
    if "file" not in files:
        raise HTTPProblem(400, "the form has no `file` field holding the photo")
    return files


def create_app(engine: ServiceEngine, keys: ApiKeys, limits: ServeLimits | None = None) -> FastAPI:
    """The service's ASGI app.

    Args:
        engine: the loaded bundles.
        keys: the receiver's and the owner's API keys.
        limits: upload, pixel and rate limits (our defaults: :class:`ServeLimits`).

    Returns:
        A FastAPI app; run it with uvicorn (``ipmn serve``).
    """
    limits = limits or ServeLimits()
    # keep every form part in memory: the body is already bounded, and nothing may be written outside the work dir
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, limits.max_upload_bytes)
    rate = RateLimiter(limits.rate, limits.period)
    app = FastAPI(title="ipmn serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPProblem)
    async def problem(request: Request, err: HTTPProblem) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    def guard(request: Request, role: str | None) -> None:
        rate.check(request.client.host if request.client else "unknown")
        if role is None:
            return
        if not keys.configured(role):
            raise HTTPProblem(503, f"the {role} key is not configured on this server (set ${KEY_ENV[role]})")
        key = request_key(request.headers)
        if key is None:
            raise HTTPProblem(
                401,
                f"this endpoint needs the {role}'s API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                {"WWW-Authenticate": 'Bearer realm="ipmn"'},
            )
        if not keys.matches(role, key):
            log.warning("%s %s: wrong %s key", request.method, request.url.path, role)  # never the key itself
            raise HTTPProblem(403, f"wrong API key for the {role}")

    async def photos(request: Request, fields: tuple[str, ...] = ("file",)) -> dict[str, Image.Image]:
        return {name: decode_photo(data, limits) for name, data in (await _uploads(request, limits, fields)).items()}

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": _PAGE_POLICY})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "ipmn_version": __version__,
            "mode": engine.mode,
            "image_size": engine.image_size,
            "bundles": engine.summary,
            "keys": {role: keys.configured(role) for role in KEY_ENV},
            "limits": {
                "max_upload_bytes": limits.max_upload_bytes,
                "max_pixels": limits.max_pixels,
                "rate": limits.rate,
                "period_s": limits.period,
            },
        }

    @app.post("/protect")
    async def protect(request: Request) -> Response:
        guard(request, None)
        images = await photos(request, ("file", "mask"))
        if "mask" in images and engine.mode != "crop":
            raise HTTPProblem(400, "a `mask` field is taken in crop mode only; photo mode makes the masks itself")
        return png(await _in_thread(engine.protect, images["file"], images.get("mask")))

    @app.post("/recover")
    async def recover(request: Request) -> Response:
        guard(request, "receiver")
        return png(await _in_thread(engine.recover, (await photos(request))["file"]))

    @app.post("/verify")
    async def verify(request: Request) -> dict[str, Any]:
        guard(request, "owner")
        return await _in_thread(engine.verify, (await photos(request))["file"])

    @app.post("/audit")
    async def audit(request: Request) -> JSONResponse:
        guard(request, "owner")
        raise HTTPProblem(
            501,
            "auditing a suspect model is the `ipmn audit` command (issue 24), run where the owner keeps the "
            "challenge and the null models' answers: `ipmn audit challenge`, `ipmn audit query`, `ipmn audit run`; "
            "this service does not hold them",
        )

    return app


async def _in_thread(function: Any, *args: Any) -> Any:
    """``function(*args)`` in the thread pool, so the event loop keeps answering (health, 429s) meanwhile."""
    return await run_in_threadpool(function, *args)
