"""Query parameters of the Pulsar paths, read at the handshake (docs/architecture.md 18.2).

Values arrive as strings; pydantic's lax mode reads Pulsar's spellings ("1000", "true"). A value
that cannot be read refuses the handshake with 400; a parameter Switchyard does not know is ignored,
as Pulsar ignores it.
"""

from __future__ import annotations

from typing import Any, Self
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, ValidationError


class QueryParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_query(cls, query_string: bytes) -> Self:
        """The parameters of a handshake's query string (the last value of a repeated name wins);
        raises ``ValidationError``."""
        query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
        values: dict[str, Any] = {name: found[-1] for name, found in query.items()}
        return cls.model_validate(values)


def params_problem(exc: ValidationError) -> str:
    """A short, client-facing summary of the parameters that could not be read."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "query"
        parts.append(f"{where}: {error['msg']}")
    return "bad query parameters: " + "; ".join(parts)
