"""References from one bulk operation to the results of earlier ones: ``<<N[data][field]>>`` or
``<<name[data][field]>>`` (``name`` given by an earlier operation's ``let``).

A string that is exactly one reference becomes the referenced value itself, of any JSON type (so
``"<<0[data][id]>>"`` is the number 12); a reference inside a longer string is replaced by the
value's text (a string as it is, anything else as JSON). A reference to an operation that has not
run, or to a field its result does not hold, is a ``BadReference``: that operation fails, as does
one whose references would add more than its part may hold (``Budget``).
"""

from __future__ import annotations

import json
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


class Budget:
    """The bytes references may add to one part of one operation (its body, or its head: path, query
    and headers). Each use of a reference counts the size of what it puts in, and the part is refused
    (a ``BadReference``: a 422) as soon as the count passes ``limit``, before more is built: 2,000
    references to a 14 KB result are refused after a few hundred, not rendered into 28 MB. Each
    distinct reference is looked up, turned to text and measured once: a large value is not
    serialised again for each use.

    ``in_json``: the part is JSON (the body), where text counts as its JSON string escape does."""

    def __init__(self, results: Results, part: str, limit: int, setting: str, in_json: bool) -> None:
        self.results = results
        self.part = part
        self.limit = limit
        self.setting = setting
        self.in_json = in_json
        self.used = 0
        self._values: dict[str, tuple[Any, int]] = {}
        self._texts: dict[tuple[str, Callable[[str], str] | None], tuple[str, int]] = {}

    def _spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise BadReference(
                f"{self.part}: its references add more than {self.limit} bytes ({self.setting}); it was not run"
            )

    def value(self, match: re.Match[str]) -> Any:
        """The value a whole-string reference in JSON stands for (the value itself, any type)."""
        known = self._values.get(match[0])
        if known is None:
            found = self.results.value(match[1], match[2], match[0])
            # As the body is written (app/api/subrequests.py): json.dumps, ASCII.
            known = self._values[match[0]] = (found, len(json.dumps(found)))
        self._spend(known[1])
        return known[0]

    def text(self, match: re.Match[str], quote: Callable[[str], str] | None) -> str:
        """The text a reference puts inside a longer string (``quote``d, if given)."""
        known = self._texts.get((match[0], quote))
        if known is None:
            text = as_text(self.results.value(match[1], match[2], match[0]))
            if quote is not None:
                text = quote(text)
            size = len(json.dumps(text)) - 2 if self.in_json else len(text.encode())
            known = self._texts[(match[0], quote)] = (text, size)
        self._spend(known[1])
        return known[0]


def render(value: Any, budget: Budget, depth: int = 0) -> Any:
    """``value`` (any JSON) with every reference in its strings resolved: a string that is one
    reference becomes the value, a reference inside a longer string the value's text."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole is not None:
            return budget.value(whole)
        return render_text(value, budget)
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        raise BadReference(f"data: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [render(item, budget, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: render(item, budget, depth + 1) for key, item in value.items()}
    return value


def render_text(text: str, budget: Budget, quote: Callable[[str], str] | None = None) -> str:
    """``text`` with each reference replaced by its value's text, escaped by ``quote`` if given (a
    query string's, so a value cannot add parameters; also when the reference is the whole text)."""
    return REFERENCE.sub(lambda match: budget.text(match, quote), text)
