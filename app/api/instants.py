"""Times the API is given, as the database keeps them: UTC instants.

A time without an offset means UTC. One is converted before it reaches a query or a row:
PostgreSQL refuses offsets beyond +-15:59 (``2025-01-01T00:00+20:49`` would be a 500), and a time
whose UTC is past the calendar's ends (``0001-01-01T00:00+01:00``) is nothing a database compares.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def in_utc(value: datetime) -> datetime:
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(in_utc)]
