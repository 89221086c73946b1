"""Short random identifiers, as users see them in URLs."""

from __future__ import annotations

import base64
import secrets

__all__ = ["new_id"]


def new_id(length: int = 8) -> str:
    """``length`` characters of lower-case base32 (5 random bits each)."""
    raw = secrets.token_bytes((length * 5 + 7) // 8)
    return base64.b32encode(raw).decode().lower().rstrip("=")[:length]
