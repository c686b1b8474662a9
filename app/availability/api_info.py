"""What a backend module announced in its ``api_info`` answer, reduced to names: for the status page
(``summarize``) and for the HTTP status API (``names``).

demessaging sends ``{"functions": [{"name", "rpc_schema", "return_schema"}], "classes": [{"name",
"rpc_schema", "methods": [...]}], "rpc_schema": {...}}``; the schemas can be large, so a status frame
carries only the names, and at most ``MAX_NAMES`` of them (a module may announce anything).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_NAMES = 60
MAX_NAME_CHARS = 80


@dataclass(frozen=True, slots=True)
class ClassSummary:
    name: str
    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApiSummary:
    functions: tuple[str, ...]
    classes: tuple[ClassSummary, ...]
    # Names announced but left out (past MAX_NAMES).
    omitted: int


@dataclass(frozen=True, slots=True)
class ApiNames:
    functions: tuple[str, ...]
    classes: tuple[str, ...]


def _full_name(item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else item
    return name if isinstance(name, str) and name else "?"


def _name(item: Any) -> str:
    text = _full_name(item)
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


def _items(api_info: dict[str, Any], key: str) -> list[Any]:
    items = api_info.get(key)
    return items if isinstance(items, list) else []


def summarize(api_info: Any) -> ApiSummary | None:
    """The function and class (and method) names of ``api_info``; None when it announced nothing."""
    if not isinstance(api_info, dict):
        return None
    functions, classes = _items(api_info, "functions"), _items(api_info, "classes")
    if not functions and not classes:
        return None
    methods_of = [_items(cls, "methods") if isinstance(cls, dict) else [] for cls in classes]
    total = len(functions) + len(classes) + sum(len(methods) for methods in methods_of)
    room = MAX_NAMES
    shown_functions = tuple(_name(f) for f in functions[:room])
    room -= len(shown_functions)
    shown_classes: list[ClassSummary] = []
    for cls, methods in zip(classes, methods_of, strict=True):
        if room <= 0:
            break
        room -= 1
        shown = tuple(_name(m) for m in methods[:room])
        room -= len(shown)
        shown_classes.append(ClassSummary(_name(cls), shown))
    listed = len(shown_functions) + sum(1 + len(c.methods) for c in shown_classes)
    return ApiSummary(shown_functions, tuple(shown_classes), total - listed)


def names(api_info: Any) -> ApiNames | None:
    """Every function and class name of ``api_info``, unshortened (programs asking the HTTP API look
    names up; the stored api_info is theirs to see in full); None when it announced nothing."""
    if not isinstance(api_info, dict):
        return None
    functions, classes = _items(api_info, "functions"), _items(api_info, "classes")
    if not functions and not classes:
        return None
    return ApiNames(tuple(_full_name(f) for f in functions), tuple(_full_name(c) for c in classes))
