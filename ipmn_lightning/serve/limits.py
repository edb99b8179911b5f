"""What the service accepts: upload size, pixel count, request rate, and the decoding of an uploaded photo.

Every refusal is an :class:`HTTPProblem` with the status and a message that says what to change; the app turns
it into a JSON answer ``{"error": MESSAGE}``. Uploads are decoded in memory only (nothing is written to disk).
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ipmn_lightning.core.images import rgb_image

__all__ = ["HTTPProblem", "RateLimiter", "ServeLimits", "decode_photo"]


@dataclass(frozen=True)
class ServeLimits:
    """The limits of one service.

    Attributes:
        max_upload_bytes: largest request body (413 above it); our default 20 MiB, a large phone JPEG.
        max_pixels: largest width × height of a photo (413 above it, checked from the header, before decoding);
            our default 40 MP, above any phone camera, well below PIL's decompression-bomb limit.
        rate: requests per client address and ``period`` on the POST endpoints (429 above it).
        period: the window of ``rate``, in seconds.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    rate: int = 60
    period: float = 60.0

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_pixels < 1 or self.rate < 1 or not self.period > 0:
            raise ValueError(f"every limit must be positive, got {self}")


class HTTPProblem(Exception):
    """A refused request: the HTTP status and a message for the client.

    Args:
        status: the HTTP status code.
        message: what went wrong and what to do, shown to the client.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class RateLimiter:
    """A token bucket per client: ``rate`` requests at once, refilled at ``rate / period`` per second.

    Args:
        rate: the bucket's size and the requests per ``period``.
        period: seconds.
        clock: the time source (``time.monotonic``), replaceable in tests.
    """

    def __init__(self, rate: int, period: float, clock: type[time.monotonic] | None = None) -> None:
        self.rate, self.period = rate, period
        self._clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one token for ``client``.

        Raises:
            HTTPProblem: 429 with ``Retry-After`` when the bucket is empty.
        """
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - last) * self.rate / self.period)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) * self.period / self.rate
                raise HTTPProblem(
                    429,
                    f"too many requests: at most {self.rate} per {self.period:g} s; retry in {wait:.1f} s",
                    {"Retry-After": str(max(1, round(wait + 0.5)))},
                )
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # forget full buckets, so many clients cannot grow memory forever
                full = [
                    k for k, (t, s) in self._buckets.items() if t + (now - s) * self.rate / self.period >= self.rate
                ]
                for k in full:
                    del self._buckets[k]


def decode_photo(data: bytes, limits: ServeLimits) -> Image.Image:
    """An uploaded photo, upright (EXIF orientation applied) and decoded, as an RGB PIL image.

    Args:
        data: the file's bytes.
        limits: the pixel-count limit.

    Raises:
        HTTPProblem: 400 (empty, truncated or corrupt), 413 (too many pixels), 415 (not an image PIL reads).
    """
    if not data:
        raise HTTPProblem(400, "the upload is empty: send a photo (PNG, JPEG, WebP, ...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > limits.max_pixels:
                raise HTTPProblem(
                    413, f"the photo has {width}×{height} pixels, more than the limit of {limits.max_pixels}"
                )
            img.load()
    except HTTPProblem:
        raise
    except UnidentifiedImageError as err:
        raise HTTPProblem(415, "the upload is not an image this service can read (PNG, JPEG, WebP, ...)") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise HTTPProblem(413, f"the photo has more pixels than the limit of {limits.max_pixels}") from err
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise HTTPProblem(400, f"the photo could not be decoded (truncated or corrupt): {err}") from err
    upright = ImageOps.exif_transpose(img)
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        # transparent areas become white, not whatever colour hides under them
        rgba = upright.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        rgb = rgb_image(upright)
    except ValueError as err:  # 16-bit or float pixels out of range
        raise HTTPProblem(400, str(err)) from err
    rgb.info = {**img.info, **rgb.info}  # the PNG text chunks (the photo record recovery needs) travel on
    return rgb
