"""The service's API keys: read from the environment or a key file, compared in constant time, never echoed.

Two keys guard the service (paper §3.1, Fig. 1): the **receiver's** key opens ``POST /recover`` (taking the
mask off gives back the real face), the **owner's** key opens ``POST /verify`` and ``POST /audit`` (the IP
verifier). A request carries its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

Keys come from ``IPMN_RECEIVER_KEY`` / ``IPMN_OWNER_KEY`` or from a key file of ``receiver=KEY`` and
``owner=KEY`` lines (``#`` comments allowed), which wins over the environment. A key is never logged or echoed:
:class:`ApiKeys`' ``repr`` shows only which keys are set.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ipmn_lightning.core.errors import IPMNError

__all__ = ["KEY_ENV", "MIN_KEY_LENGTH", "ApiKeys", "KeyError_", "load_keys", "request_key"]

#: The environment variable of each role's key.
KEY_ENV: dict[str, str] = {"receiver": "IPMN_RECEIVER_KEY", "owner": "IPMN_OWNER_KEY"}
#: Shorter keys are refused at start-up: a key guards the real faces, and 16 random characters are not guessable.
MIN_KEY_LENGTH = 16


class KeyError_(IPMNError):  # not the builtin KeyError, a lookup error: this one is about configuration
    """A key file is unreadable or malformed, or a key is too short."""


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys (``None``: that role's endpoints answer 503, the key is not configured).

    Attributes:
        receiver: the receiver's key (``/recover``).
        owner: the owner's key (``/verify``, ``/audit``).
    """

    receiver: str | None = field(default=None, repr=False)
    owner: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"ApiKeys(receiver={'set' if self.receiver else 'unset'}, owner={'set' if self.owner else 'unset'})"

    def configured(self, role: str) -> bool:
        """Whether ``role``'s key is set."""
        return getattr(self, role) is not None

    def matches(self, role: str, candidate: str | None) -> bool:
        """Whether ``candidate`` is ``role``'s key, in time independent of where they differ (``hmac``)."""
        expected = getattr(self, role)
        if expected is None or candidate is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8"), expected.encode("utf-8"))


def _check(role: str, key: str, where: str) -> str:
    key = key.strip()
    if len(key) < MIN_KEY_LENGTH:
        # the message names where the key came from, never the key
        raise KeyError_(f"the {role} key from {where} is shorter than {MIN_KEY_LENGTH} characters; use a random one")
    return key


def _read_key_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise KeyError_(f"cannot read the key file {path}: {type(err).__name__}") from err
    keys: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, sep, value = line.partition("=")
        role = role.strip()
        if not sep or role not in KEY_ENV:
            raise KeyError_(f"{path}:{number}: expected `receiver=KEY` or `owner=KEY`")
        keys[role] = _check(role, value, f"{path}:{number}")
    return keys


def load_keys(key_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys of the key file, else of the environment (see the module docstring).

    Args:
        key_file: a file of ``receiver=KEY`` / ``owner=KEY`` lines, or ``None``.
        environ: the environment to read (default ``os.environ``).

    Raises:
        KeyError_: an unreadable or malformed key file, or a key shorter than :data:`MIN_KEY_LENGTH`.
    """
    environ = os.environ if environ is None else environ
    found = {
        role: _check(role, environ[var], f"${var}") for role, var in KEY_ENV.items() if environ.get(var, "").strip()
    }
    if key_file is not None:
        found.update(_read_key_file(Path(key_file)))
    return ApiKeys(**found)


def request_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``), or ``None``."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None
