"""Option parsers shared by the command groups."""

from __future__ import annotations

from datetime import UTC, datetime

import typer


def parse_since(value: str | None, param_hint: str = "--since") -> datetime | None:
    """An ISO 8601 date or time as an aware UTC datetime (naive means UTC); a bad value is a usage error."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time, e.g. 2026-12-01 or 2026-12-01T12:00Z",
            param_hint=param_hint,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
