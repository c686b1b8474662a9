"""Which pending request a worker gets: a plain function of plain data (no ORM, no event loop).

Order: only requests whose dependencies all completed with success; among them the highest
effective priority (base + adjustment), then the oldest, then the lowest id; the first that the
worker's metadata satisfies is the one. A worker with no free slot gets nothing.

Requirements: ``task_data["requires"]``, an object of metadata keys to required values::

    {"architecture": "amd64", "gpu": true, "tools": ["docker", "qemu"]}

- a scalar (string, number, boolean) matches a metadata value equal to it (``true`` is not ``1``),
  or a metadata list that contains it: ``{"tools": "docker"}`` matches ``{"tools": ["docker", "git"]}``;
- a list matches when each of its items does: ``{"tools": ["docker", "qemu"]}`` needs both;
- a key missing from the metadata matches nothing. No ``requires``: any worker.

Signatures: every worker judges two requests with equal ``requires`` alike, so the queue
(app/work/queue.py) skips every request of a signature (``signature_of``: a digest of ``requires``
with its keys sorted) once a worker does not meet it, and a worker is not starved by a long run of
requests it cannot take ahead of one it can.

So capability names are a list in the metadata (``{"capabilities": ["docker"]}``) or flags
(``{"docker": true}``), whichever the fleet reports; admins' ``static_metadata`` wins over a worker's
own report on a key clash (``Worker.metadata()``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from app import codec

REQUIREMENTS_KEY = "requires"

_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
REQUIREMENTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": 64,
    "propertyNames": {"minLength": 1, "maxLength": 100},
    "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR, "maxItems": 64}]},
}

Scalar = str | int | float | bool
Requirement = Scalar | list[Scalar]

# What requirements_of gives for a ``requires`` that is no object (stored around the task registry,
# which refuses it): no worker satisfies it, so the request waits visibly rather than running anywhere.
UNSATISFIABLE: Mapping[str, Requirement] = MappingProxyType({})
UNSATISFIABLE_SIGNATURE = "unsatisfiable"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pending request as the scheduler sees it."""

    id: int
    priority: int
    created_at: datetime
    requires: Mapping[str, Requirement] = field(default_factory=dict)
    dependencies_satisfied: bool = True
    # ``signature_of(requires)``: equal for requests every worker judges alike.
    signature: str = ""


@dataclass(frozen=True, slots=True)
class WorkerState:
    metadata: Mapping[str, Any]
    concurrency: int = 1
    running: int = 0

    @property
    def free_slots(self) -> int:
        return max(self.concurrency - self.running, 0)


def order_key(candidate: Candidate) -> tuple[int, datetime, int]:
    return (-candidate.priority, candidate.created_at, candidate.id)


def pick(candidates: Iterable[Candidate], worker: WorkerState) -> Candidate | None:
    """The request to give ``worker`` among ``candidates``, or None."""
    if worker.free_slots < 1:
        return None
    for candidate in sorted(candidates, key=order_key):
        if candidate.dependencies_satisfied and satisfies(worker.metadata, candidate.requires):
            return candidate
    return None


def satisfies(metadata: Mapping[str, Any], requires: Mapping[str, Requirement]) -> bool:
    """Whether ``metadata`` meets every requirement (see the module's docstring)."""
    if requires is UNSATISFIABLE:
        return False
    for key, required in requires.items():
        if key not in metadata:
            return False
        have = metadata[key]
        wanted = required if isinstance(required, list) else [required]
        if not all(_provides(have, item) for item in wanted):
            return False
    return True


def requirements_of(task_data: Any) -> Mapping[str, Requirement]:
    """The requirements stored in a request's task data (validated when it was created): none when
    it has no (or a null) ``requires``, UNSATISFIABLE when ``requires`` is not an object."""
    if not isinstance(task_data, dict):
        return UNSATISFIABLE
    requires = task_data.get(REQUIREMENTS_KEY)
    if requires is None:
        return {}
    return requires if isinstance(requires, dict) else UNSATISFIABLE


def signature_of(requires: Mapping[str, Requirement]) -> str:
    """A digest equal for equal requirements (keys in any order); "" for none. Lists keep their
    order: two orders of one list are two signatures, judged alike, which costs a look, not a match."""
    if requires is UNSATISFIABLE:
        return UNSATISFIABLE_SIGNATURE
    if not requires:
        return ""
    return hashlib.sha256(codec.canonical_bytes(dict(requires))).hexdigest()


def _provides(have: Any, item: Any) -> bool:
    if isinstance(have, list):
        return any(_equal(value, item) for value in have)
    return _equal(have, item)


def _equal(have: Any, item: Any) -> bool:
    # JSON keeps booleans and numbers apart; Python's True == 1 would not.
    if isinstance(have, bool) or isinstance(item, bool):
        return isinstance(have, bool) and isinstance(item, bool) and have is item
    if isinstance(have, int | float) and isinstance(item, int | float):
        return have == item
    return type(have) is type(item) and bool(have == item)
