"""SQLite's query plans on the hot paths whose tables grow without bound: no statement walks the
table (a scan, or a range of rowids) where an index would bound it by the rows still open.

SQLite uses a partial index only when the query states the index's condition itself; a statement
that misses it works and answers right, and only grows slower as the table fills, which no other
test sees. These read the plan of each statement the operation ran."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from app.outbox.claims import claim
from app.outbox.emit import emit
from tests.outbox import clear_outbox

# A plan step that reads a table row by row: a full scan, or every rowid below or above a bound.
WALK = re.compile(r"\bSCAN (?!.*\bUSING (COVERING )?INDEX\b)|USING INTEGER PRIMARY KEY \(rowid[<>]")


@pytest.fixture(autouse=True)
def _sqlite() -> Iterator[None]:
    if connection.vendor != "sqlite":
        pytest.skip("these read SQLite's planner; PostgreSQL's plans depend on its statistics")
    clear_outbox()
    yield


def walks(operation: Callable[[], object], table: str) -> list[str]:
    """The statements ``operation`` ran on ``table`` whose plan walks it, each with its plan."""
    with CaptureQueriesContext(connection) as captured:
        operation()
    found = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            sql = query["sql"]
            if table not in sql or not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            plan = [str(row[-1]) for row in cursor.fetchall()]
            if any(WALK.search(step) for step in plan):
                found.append(f"{sql}\n  " + "\n  ".join(plan))
    return found


def test_outbox_claim_reads_only_open_events() -> None:
    """Claiming key heads and the events queued behind them uses the open-events-by-key index."""
    for n in range(3):
        emit("com.example.thing", "/things", {"n": n}, key="a", target="topic")
    emit("com.example.thing", "/things", {"n": 3}, key="b", target="topic")
    assert walks(lambda: claim("planner", 10), "outbox_outboxevent") == []
