"""Query parameters of the dashboard's pages, read without trusting them."""

from __future__ import annotations

ROW_ID_MAX = 2**63 - 1
"""The largest row id or sequence number the stores hold (SQLite's INTEGER)."""


def row_cursor(raw: str | None) -> int | None:
    """A ``before=<row id>`` cursor, or None (the first page) for anything that is not one: a
    number past a store's INTEGER was a 500 (OverflowError)."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 0 <= value <= ROW_ID_MAX else None


__all__ = ["ROW_ID_MAX", "row_cursor"]
