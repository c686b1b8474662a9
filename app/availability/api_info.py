"""What a backend module announced in its ``api_info`` answer, reduced to names for the status page.

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


def _name(item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else item
    text = name if isinstance(name, str) and name else "?"
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
    room = MAX_NAMES
    total = len(functions) + len(classes)
    shown_functions = tuple(_name(f) for f in functions[:room])
    room -= len(shown_functions)
    shown_classes: list[ClassSummary] = []
    for cls in classes[:room]:
        room -= 1
        methods = _items(cls, "methods") if isinstance(cls, dict) else []
        total += len(methods)
        shown = tuple(_name(m) for m in methods[: max(room, 0)])
        room -= len(shown)
        shown_classes.append(ClassSummary(_name(cls), shown))
    for cls in classes[len(shown_classes):]:
        total += len(_items(cls, "methods")) if isinstance(cls, dict) else 0
    listed = len(shown_functions) + sum(1 + len(c.methods) for c in shown_classes)
    return ApiSummary(shown_functions, tuple(shown_classes), total - listed)
