"""Helpers for work tests: workers with unique names, an empty queue, requests in a chosen state."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection

from app.work.models import Result, Worker, WorkRequest
from app.work.submission import submit
from app.work.tasks import register_task
from app.work.transitions import abort, assign, complete
from app.work.workers import register_worker
from tests.protocol import unique

# A task with a schema that refuses something: what tests submit besides the built-in noop.
ECHO = "test.echo"
register_task(ECHO, {
    "type": "object",
    "properties": {
        "text": {"type": "string", "maxLength": 20},
        "items": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["text"],
    "additionalProperties": False,
})


def clear_work() -> None:
    """Tests share the session database and run one at a time: the scheduler must see only this
    test's requests."""
    WorkRequest.objects.all().delete()


def worker(concurrency: int = 1, **metadata: Any) -> Worker:
    """A registered worker of a unique name whose static metadata is ``metadata``."""
    return register_worker(unique("worker"), concurrency=concurrency, static_metadata=metadata)[0]


def pending(**options: Any) -> WorkRequest:
    options.setdefault("task_data", {})
    return submit(options.pop("task_name", "noop"), **options)


def running(on: Worker | None = None, **options: Any) -> WorkRequest:
    request = pending(**options)
    assert assign(request.pk, (on or worker()).pk)
    return reload(request)


def completed(result: Result = Result.SUCCESS, **options: Any) -> WorkRequest:
    request = running(**options)
    assert complete(request.pk, result)
    return reload(request)


def aborted(**options: Any) -> WorkRequest:
    request = pending(**options)
    assert abort(request.pk)
    return reload(request)


def reload(request: WorkRequest) -> WorkRequest:
    return WorkRequest.objects.select_related("worker").get(pk=request.pk)


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """``target`` on a thread of its own (its own database connection, closed after); its return
    value or exception lands in the dict under "value" / "error"."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:  # handed to the test, which re-raises
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome
