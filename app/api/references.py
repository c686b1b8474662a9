"""References from one bulk operation to the results of earlier ones: ``<<N[data][field]>>`` or
``<<name[data][field]>>`` (``name`` given by an earlier operation's ``let``).

A string that is exactly one reference becomes the referenced value itself, of any JSON type (so
``"<<0[data][id]>>"`` is the number 12); a reference inside a longer string is replaced by the
value's text (a string as it is, anything else as JSON). A reference to an operation that has not
run, or to a field its result does not hold, is a ``BadReference``: that operation fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app import codec

REFERENCE = re.compile(r"<<([A-Za-z0-9_]+)((?:\[[^\[\]<>]*\])+)>>")
FIELD = re.compile(r"\[([^\[\]<>]*)\]")
LET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INDEX = re.compile(r"[0-9]+")
# Deeper data is refused (a 422) before rendering it would exhaust the thread's recursion limit.
MAX_DEPTH = 100


class BadReference(ValueError):
    """A reference that names no earlier result, or a field that result does not hold."""


class Results:
    """The results of the operations run so far, by index and by ``let`` name."""

    def __init__(self) -> None:
        self.items: list[Mapping[str, Any]] = []
        self.names: dict[str, int] = {}

    def add(self, result: Mapping[str, Any], let: str | None) -> None:
        if let is not None:
            self.names[let] = len(self.items)
        self.items.append(result)

    def value(self, root: str, fields: str, text: str) -> Any:
        if root.isdigit():
            index = int(root)
            if index >= len(self.items):
                raise BadReference(f"{text}: operation {index} has not run (this is operation {len(self.items)})")
        elif root in self.names:
            index = self.names[root]
        else:
            raise BadReference(f"{text}: no earlier operation is named {root!r} (by its let)")
        found: Any = self.items[index]
        for field in FIELD.findall(fields):
            found = _field(found, field, text, index)
        return found


def _field(found: Any, field: str, text: str, index: int) -> Any:
    if isinstance(found, Mapping) and field in found:
        return found[field]
    listed = isinstance(found, Sequence) and not isinstance(found, str)
    if listed and INDEX.fullmatch(field) and int(field) < len(found):
        return found[int(field)]
    raise BadReference(f"{text}: the result of operation {index} holds no [{field}] there")


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else codec.dumps(value)


def render(value: Any, results: Results, quote: Callable[[str], str] | None = None, depth: int = 0) -> Any:
    """``value`` (any JSON) with every reference in its strings resolved. ``quote`` escapes a value
    put inside a longer string (a query string's, so a value cannot add parameters)."""
    if isinstance(value, str):
        return render_string(value, results, quote)
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        raise BadReference(f"data: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [render(item, results, quote, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: render(item, results, quote, depth + 1) for key, item in value.items()}
    return value


def render_string(text: str, results: Results, quote: Callable[[str], str] | None = None) -> Any:
    whole = REFERENCE.fullmatch(text)
    if whole is not None and quote is None:
        return results.value(whole[1], whole[2], text)

    def replaced(match: re.Match[str]) -> str:
        found = as_text(results.value(match[1], match[2], match[0]))
        return quote(found) if quote is not None else found

    return REFERENCE.sub(replaced, text)
