"""The base class of every error the package raises on bad input, so one ``except IPMNError`` catches them all.

Each error says which file or argument is wrong and how to fix it; the console prints it and exits with 2. The
subclasses stay ``ValueError``s (an ``ImportError`` too, for a missing optional extra), so callers that caught
those before still do.
"""

from __future__ import annotations

__all__ = ["IPMNError"]


class IPMNError(ValueError):
    """Bad input (a file, an argument, a missing extra) that the user can fix; the message says how."""
