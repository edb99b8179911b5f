"""IPMN: invertible privacy-preserving mask network with intellectual-property protection."""

from __future__ import annotations

__version__ = "0.1.0"
