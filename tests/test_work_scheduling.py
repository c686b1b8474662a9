"""The scheduler as a plain function: which pending request a worker gets (no database, no event loop)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.work.scheduling import (
    UNSATISFIABLE,
    Candidate,
    WorkerState,
    pick,
    requirements_of,
    satisfies,
    signature_of,
)

pytestmark = pytest.mark.database_agnostic

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def request(id: int, priority: int = 0, age_s: int = 0, requires: dict[str, Any] | None = None,
            satisfied: bool = True) -> Candidate:
    """A candidate created ``age_s`` seconds before the others' epoch (older = larger age)."""
    return Candidate(id, priority, T0 - timedelta(seconds=age_s), requires or {}, satisfied)


ANY = WorkerState({})


@pytest.mark.parametrize(("candidates", "worker", "chosen"), [
    ([], ANY, None),
    ([request(1)], ANY, 1),
    # Higher effective priority first, whatever the age.
    ([request(1, priority=0, age_s=100), request(2, priority=5)], ANY, 2),
    # Same priority: the oldest.
    ([request(1, age_s=10), request(2, age_s=20), request(3, age_s=5)], ANY, 2),
    # Same priority and age: the lowest id.
    ([request(7), request(3), request(5)], ANY, 3),
    # Negative priorities go after the default.
    ([request(1, priority=-1, age_s=100), request(2)], ANY, 2),
    # Dependencies not satisfied: skipped, even at the head.
    ([request(1, priority=9, satisfied=False), request(2)], ANY, 2),
    ([request(1, satisfied=False)], ANY, None),
    # Requirements the worker lacks: skipped for the next one that matches.
    ([request(1, priority=9, requires={"arch": "arm64"}), request(2, requires={"arch": "amd64"})],
     WorkerState({"arch": "amd64"}), 2),
    ([request(1, requires={"gpu": True})], WorkerState({"arch": "amd64"}), None),
    # No free slot: nothing, however runnable.
    ([request(1)], WorkerState({}, concurrency=2, running=2), None),
    ([request(1)], WorkerState({}, concurrency=2, running=1), 1),
])
def test_pick(candidates: list[Candidate], worker: WorkerState, chosen: int | None) -> None:
    """pick: satisfied dependencies, then priority, then age, then id, matched against the worker."""
    found = pick(candidates, worker)
    assert (found.id if found else None) == chosen


@pytest.mark.parametrize(("metadata", "requires", "expected"), [
    ({}, {}, True),
    ({"arch": "amd64"}, {}, True),
    ({"arch": "amd64"}, {"arch": "amd64"}, True),
    ({"arch": "amd64"}, {"arch": "arm64"}, False),
    ({}, {"arch": "amd64"}, False),
    # A scalar is found in a metadata list.
    ({"tools": ["docker", "git"]}, {"tools": "docker"}, True),
    ({"tools": ["git"]}, {"tools": "docker"}, False),
    # A required list needs every item.
    ({"tools": ["docker", "git", "qemu"]}, {"tools": ["docker", "qemu"]}, True),
    ({"tools": ["docker"]}, {"tools": ["docker", "qemu"]}, False),
    ({"tools": "docker"}, {"tools": ["docker"]}, True),
    # Every key must match.
    ({"arch": "amd64", "gpu": True}, {"arch": "amd64", "gpu": True}, True),
    ({"arch": "amd64", "gpu": False}, {"arch": "amd64", "gpu": True}, False),
    # JSON types stay apart: true is not 1, "1" is not 1; 1 is 1.0.
    ({"gpu": 1}, {"gpu": True}, False),
    ({"gpu": True}, {"gpu": 1}, False),
    ({"cores": "8"}, {"cores": 8}, False),
    ({"cores": 8.0}, {"cores": 8}, True),
    ({"flags": [1, 0]}, {"flags": True}, False),
    # A nested object in the metadata matches no scalar.
    ({"arch": {"name": "amd64"}}, {"arch": "amd64"}, False),
])
def test_satisfies(metadata: dict[str, Any], requires: dict[str, Any], expected: bool) -> None:
    """satisfies: each required key equal, contained in a metadata list, or every item of a required list."""
    assert satisfies(metadata, requires) is expected


@pytest.mark.parametrize(("task_data", "expected"), [
    ({}, {}),
    ({"requires": {"arch": "amd64"}, "x": 1}, {"arch": "amd64"}),
    ({"requires": None}, {}),
])
def test_requirements_of(task_data: Any, expected: dict[str, Any]) -> None:
    """requirements_of reads task_data["requires"], and nothing from data without it."""
    assert requirements_of(task_data) == expected


@pytest.mark.parametrize("task_data", [{"requires": "amd64"}, {"requires": ["gpu"]}, {"requires": 1}, None, [1, 2]])
def test_requirements_that_are_no_object_match_no_worker(task_data: Any) -> None:
    """A requires (or task data) that is not an object, stored around the registry, matches no worker."""
    assert not satisfies({"arch": "amd64", "gpu": True}, requirements_of(task_data))


@pytest.mark.parametrize(("concurrency", "running", "free"), [(1, 0, 1), (1, 1, 0), (3, 1, 2), (1, 4, 0)])
def test_free_slots(concurrency: int, running: int, free: int) -> None:
    """A worker's free slots are its concurrency less what it runs, never below zero."""
    assert WorkerState({}, concurrency, running).free_slots == free


def test_signature_ignores_key_order() -> None:
    """Equal requirements written in another key order have one signature; other requirements another."""
    assert signature_of({"arch": "amd64", "gpu": True}) == signature_of({"gpu": True, "arch": "amd64"})
    assert signature_of({"arch": "amd64"}) != signature_of({"arch": "arm64"})


def test_signature_of_nothing_and_of_the_unsatisfiable() -> None:
    """No requirements sign as the empty string; the unsatisfiable marker as neither that nor a digest."""
    assert signature_of({}) == ""
    assert signature_of(UNSATISFIABLE) not in ("", signature_of({"x": 1}))
