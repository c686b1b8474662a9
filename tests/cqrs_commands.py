"""Helpers of the CQRS command tests (test_cqrs_sync, test_cqrs_dump, test_cqrs_diff,
test_cqrs_dead_letters): sample rows, in-process command runs, the emitted SYNCs, a pseudo-terminal."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from django.core.management import call_command

from app.cqrs import apply as cqrs_apply
from app.cqrs.events import CONTENT_TYPE
from app.cqrs.payload import TransportPayload
from app.outbox.models import OutboxEvent
from tests.apps.cqrs_master import models as master
from tests.protocol import unique

ROOT = Path(__file__).resolve().parent.parent
AMQP = "amqp://guest:guest@127.0.0.1:5672/"  # configured, never connected to: nothing is relayed here


def authors(count: int) -> list[master.Author]:
    return [master.Author.objects.create(name=unique("author")) for _ in range(count)]


def ids_filter(rows: list[Any]) -> str:
    return json.dumps({"id__in": [row.pk for row in rows]})


def run(name: str, *args: str, stdin: str | None = None, stdout: Any = None, stderr: Any = None) -> tuple[str, str]:
    """Run a command in-process (stdin from ``stdin``); its stdout and stderr."""
    out, err = stdout or io.StringIO(), stderr or io.StringIO()
    swap = contextlib.nullcontext() if stdin is None else _stdin(stdin)
    with swap:
        call_command(name, *args, stdout=out, stderr=err)
    return (out.getvalue() if isinstance(out, io.StringIO) else "",
            err.getvalue() if isinstance(err, io.StringIO) else "")


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def sync_events() -> list[tuple[OutboxEvent, dict[str, Any]]]:
    rows = OutboxEvent.objects.filter(datacontenttype=CONTENT_TYPE, type__endswith=".sync").order_by("id")
    return [(row, orjson.loads(row.data)) for row in rows]


def synced_pks() -> list[Any]:
    return sorted(payload["instance_pk"] for _, payload in sync_events())


def apply_outbox() -> None:
    """Apply the emitted payloads to the replica models directly, as a consumer would (no broker)."""
    for _, payload in sync_events():
        cqrs_apply.apply(TransportPayload.model_validate(payload))


def terminal() -> tuple[io.TextIOWrapper, int]:
    """A writer on a pseudo-terminal and the fd its output is read from."""
    import pty

    reader, writer = pty.openpty()
    return io.TextIOWrapper(os.fdopen(writer, "wb", buffering=0), encoding="utf-8", write_through=True), reader


def read_terminal(fd: int) -> str:
    import select

    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()
