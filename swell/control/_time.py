"""The one timestamp format of the API: ISO 8601 UTC with milliseconds, ``2026-12-03T09:00:00.000Z``.

Records keep unix seconds; every view that shows one to a caller goes through
:func:`iso`, so no route can answer in a format of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

__all__ = ["iso"]


@overload
def iso(ts: float) -> str: ...
@overload
def iso(ts: None) -> None: ...
@overload
def iso(ts: float | None) -> str | None: ...
def iso(ts: float | None) -> str | None:
    """``ts`` (unix seconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
