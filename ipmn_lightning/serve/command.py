"""``ipmn serve``: run the protection service (:mod:`ipmn_lightning.serve.app`) on uvicorn."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Literal

from ipmn_lightning.core.errors import IPMNError

__all__ = ["serve"]


def serve(
    *,
    service: str,
    receiver: str,
    verifier: str,
    port: int = 8000,
    host: str = "127.0.0.1",
    key_file: str | None = None,
    donor: str | None = None,
    max_upload_mb: float = 20.0,
    max_megapixels: float = 40.0,
    rate: int = 60,
    period: float = 60.0,
    device: str = "cpu",
    work_dir: str = ".",
    mode: Literal["photo", "crop"] = "photo",
) -> int:
    """Serve protect/recover/verify over HTTP with a web page at ``/`` (paper §3.1, Fig. 1).

    ``POST /protect`` (photo in, protected PNG out), ``POST /recover`` (the receiver's key), ``POST /verify``
    and ``POST /audit`` (the owner's key), ``GET /health``. Keys: ``$IPMN_RECEIVER_KEY`` and
    ``$IPMN_OWNER_KEY``, or ``--key_file`` (``receiver=KEY`` / ``owner=KEY`` lines); sent as
    ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; never logged.

    Args:
        service: the service bundle (H, the INN, w).
        receiver: the receiver's bundle (``receiver.safetensors``, the INN only; a service bundle works too).
        verifier: the verifier bundle (R, w, threshold).
        port: TCP port.
        host: address to listen on; 127.0.0.1 serves this machine only, 0.0.0.0 every interface.
        key_file: a file of ``receiver=KEY`` / ``owner=KEY`` lines (wins over the environment).
        donor: crop mode's donor face image (default: a built-in synthetic face).
        max_upload_mb: largest request body, in MiB (413 above it).
        max_megapixels: largest photo, in millions of pixels (413 above it).
        rate: POST requests per client address and ``period`` (429 above it).
        period: the rate's window, in seconds.
        device: where the networks run.
        work_dir: the only folder the service may write to (it must exist).
        mode: ``photo``: whole photos, every face found (dlib) and pasted back, the record in the PNG;
            ``crop``: aligned face crops at the bundle's size (as ``ipmn protect``'s folder mode).

    Returns:
        0 after a clean shutdown, 2 on bad arguments (reason on stderr).
    """
    try:
        import uvicorn

        from ipmn_lightning.serve.app import create_app
    except ImportError as err:
        print(
            f"error: `ipmn serve` needs the serve extra (pip install 'ipmn-lightning[serve]'): {err}", file=sys.stderr
        )
        return 2
    from ipmn_lightning.serve.engine import ServiceEngine
    from ipmn_lightning.serve.keys import load_keys
    from ipmn_lightning.serve.limits import ServeLimits

    try:
        if not Path(work_dir).is_dir():
            raise IPMNError(f"--work_dir {work_dir} is not a folder")
        limits = ServeLimits(int(max_upload_mb * 1024 * 1024), int(max_megapixels * 1e6), rate, period)
        keys = load_keys(key_file)
        engine = ServiceEngine(service, receiver, verifier, device=device, donor=donor, work_dir=work_dir, mode=mode)
    except (IPMNError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO)
    print(f"ipmn serve: {engine.mode} mode, {keys!r}, http://{host}:{port}/", file=sys.stderr)
    os.chdir(work_dir)  # relative writes of any library land in the work dir
    uvicorn.run(create_app(engine, keys, limits), host=host, port=port, log_level="info")
    return 0
