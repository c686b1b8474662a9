"""The tasks work requests may name: each registered in code with a JSON schema for its task data.

Apps register their tasks when Django is ready::

    class ShopConfig(AppConfig):
        def ready(self) -> None:
            from app.work.tasks import register_task

            register_task("shop.invoice", {"type": "object", "properties": {"order": {"type": "integer"}},
                                           "required": ["order"], "additionalProperties": False})

A request naming no registered task is refused, as is task data its schema refuses. The key
``requires`` (the capabilities a worker must have, app/work/scheduling.py) is validated here for
every task, and the task's schema sees the data without it, so no task's schema has to allow it.

The one module that imports ``jsonschema``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.conf import settings
from referencing import Registry, Specification
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

from app import codec
from app.work.scheduling import REQUIREMENTS_KEY, REQUIREMENTS_SCHEMA

TASK_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")

# Switchyard's own tasks, as debusine's: they do nothing but what their data says, so a fleet can be
# tried (and tested) before any app registers its own.
BUILTIN_TASKS: dict[str, dict[str, Any]] = {
    "noop": {
        "type": "object",
        "properties": {"result": {"enum": ["success", "failure", "error"]}},
        "additionalProperties": False,
    },
    "sleep": {
        "type": "object",
        "properties": {"duration_s": {"type": "number", "minimum": 0, "maximum": 86400}},
        "required": ["duration_s"],
        "additionalProperties": False,
    },
}


class UnknownTask(ValueError):
    """No task of this name is registered."""


class InvalidTaskData(ValueError):
    """The task data is not what the task's schema (or the requirements schema) allows."""


@dataclass(frozen=True)
class Task:
    name: str
    schema: Mapping[str, Any]
    description: str = ""
    validator: Any = field(repr=False, compare=False, default=None)


_registry: dict[str, Task] = {}
_requirements = jsonschema.Draft202012Validator(REQUIREMENTS_SCHEMA)

# Errors best_match chooses among: an array of 50,000 wrong items would otherwise cost seconds of
# CPU per refused request, all spent ranking errors of which one is reported.
BEST_MATCH_ERRORS = 100
# Keywords whose values are data, not schemas: a "$ref" key in them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})


def register_task(name: str, schema: Mapping[str, Any], *, description: str = "") -> Task:
    """Register ``name`` with the JSON schema its task data must satisfy (any draft; 2020-12 unless
    ``$schema`` says). Registering a name again with the same schema is a no-op; with another, an error."""
    if not TASK_NAME.fullmatch(name):
        raise ValueError(f"task name {name!r}: lower-case letters, digits, '_', '.', '-', at most 100 characters")
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"task {name!r}: invalid JSON schema: {exc.message}") from exc
    try:
        _resolve_refs(schema)
    except Unresolvable as exc:
        raise ValueError(f"task {name!r}: a $ref of its JSON schema cannot be resolved: {exc}") from None
    known = _registry.get(name)
    if known is not None:
        if known.schema != schema:
            raise ValueError(f"task {name!r} is registered already, with another schema")
        return known
    task = Task(name, dict(schema), description, validator_class(schema))
    _registry[name] = task
    return task


def registered_tasks() -> list[Task]:
    return sorted(_registry.values(), key=lambda task: task.name)


def task_named(name: str) -> Task:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTask(f"unknown task {name!r}") from None


def validate_task_data(name: str, data: Any) -> None:
    """Refuse data that is too large, not an object, with bad requirements, or that the task's
    schema refuses (the first error, with its path). Raises UnknownTask or InvalidTaskData."""
    task = task_named(name)
    check_size("task_data", data)
    if not isinstance(data, dict):
        raise InvalidTaskData("task_data must be a JSON object")
    if REQUIREMENTS_KEY in data:
        _raise_first(_requirements, data[REQUIREMENTS_KEY], f"task_data.{REQUIREMENTS_KEY}")
    _raise_first(task.validator, {k: v for k, v in data.items() if k != REQUIREMENTS_KEY}, "task_data")


def size_problem(what: str, data: Any, setting: str) -> str | None:
    """Why ``data`` cannot be stored: too large once encoded for the limit the setting named
    ``setting`` holds, not encodable at all (nested too deeply), or holding what PostgreSQL's jsonb
    cannot (``codec.json_refusal``); None when it can. Every edge (HTTP, the worker socket, Python
    callers) goes through this, so each refuses alike."""
    if (refusal := codec.json_refusal(data, what)) is not None:
        return refusal
    limit = getattr(settings, setting)
    try:
        size = len(codec.dumps_bytes(data))
    except codec.EncodeError as exc:
        return f"{what} cannot be encoded as JSON: {exc}"
    return f"{what} is {size} bytes encoded, more than {setting}={limit}" if size > limit else None


def check_size(what: str, data: Any) -> None:
    """Refuse JSON larger than WORK_REQUEST_DATA_MAX_BYTES encoded (or nested too deeply to encode):
    it is stored per request and read by every scheduling pass that considers the request."""
    if (problem := size_problem(what, data, "WORK_REQUEST_DATA_MAX_BYTES")) is not None:
        raise InvalidTaskData(problem)


def _raise_first(validator: Any, data: Any, where: str) -> None:
    error = jsonschema.exceptions.best_match(itertools.islice(validator.iter_errors(data), BEST_MATCH_ERRORS))
    if error is not None:
        path = "".join(f"[{part!r}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        raise InvalidTaskData(f"{where}{path}: {error.message}")


def _resolve_refs(schema: Mapping[str, Any]) -> None:
    """Resolve every ``$ref`` of ``schema`` (raises Unresolvable): one that points nowhere, or to a
    document nobody registered (nothing is fetched), would otherwise fail each validation of the
    task's data with an error that is not the client's."""
    specification = specification_with(str(schema.get("$schema", "")), default=DRAFT202012)
    root = specification.create_resource(schema)
    base = root.id() or ""
    resolver = Registry().with_resource(base, root).crawl().resolver(base_uri=base)
    _resolve_refs_in(schema, resolver, specification)


def _resolve_refs_in(node: Any, resolver: Any, specification: Specification[Any]) -> None:
    # ``resolver``: a referencing Resolver (the package exports no name for its type).
    if isinstance(node, list):
        for item in node:
            _resolve_refs_in(item, resolver, specification)
        return
    if not isinstance(node, Mapping):
        return
    if isinstance(node.get("$id"), str):  # a base URI of its own for the references below it
        resolver = resolver.in_subresource(specification.create_resource(node))
    if isinstance(node.get("$ref"), str):
        resolver.lookup(node["$ref"])
    for keyword, value in node.items():
        if keyword not in _DATA_KEYWORDS:
            _resolve_refs_in(value, resolver, specification)


def register_builtin_tasks() -> None:
    for name, schema in BUILTIN_TASKS.items():
        register_task(name, schema)
