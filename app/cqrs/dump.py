"""Bulk copy of a master model to a replica without the broker (django-cqrs's ``cqrs_bulk_dump`` /
``cqrs_bulk_load``), as plain functions.

The dump format is django-cqrs's: the ``CQRS_ID`` on the first line, then one JSON object per line,
each the row's ``instance_data`` (``to_cqrs_dict``: fields, ``cqrs_revision``, ``cqrs_updated``); no
newline after the last line. Loading saves each object through the replica model's ``cqrs_save`` (a
SAVE: an older or equal revision leaves the stored row), a batch of lines per transaction. A line is
read as a received message is (``read_body``: at most ``CQRS_MAX_BODY_BYTES``, no NaN).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, transaction

from app.cqrs.payload import read_body
from app.cqrs.replica import ReplicaRegistry
from app.cqrs.sync import DEFAULT_BATCH, BadOption, batches

if TYPE_CHECKING:
    from app.cqrs.mixins import MasterMixin


def row_line(instance: MasterMixin) -> str:
    """One row as django-cqrs dumps it (ujson's compact separators)."""
    return json.dumps(instance.to_cqrs_dict(), separators=(",", ":"))


@dataclass
class DumpReport:
    processed: int = 0
    saved: int = 0
    failures: list[tuple[Any, str]] = field(default_factory=list)


def dump(
    model: type[MasterMixin], write: Callable[[str], object], batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[DumpReport], None] | None = None,
) -> DumpReport:
    """Write ``model``'s dump through ``write``: the CQRS_ID, then ``"\\n" + JSON`` per row."""
    assert model.CQRS_ID is not None
    write(model.CQRS_ID)
    report = DumpReport()
    queryset = model.relate_cqrs_serialization(model._default_manager.all())
    for rows in batches(queryset, batch_size):
        for instance in rows:
            report.processed += 1
            try:
                text = row_line(instance)
            except Exception as exc:
                report.failures.append((instance.pk, f"{type(exc).__name__}: {exc}"))
                continue
            write("\n" + text)
            report.saved += 1
        if on_batch is not None:
            on_batch(report)
    return report


def replica_model_for(first_line: str | None, source: str) -> type[Any]:
    """The replica model a dump is for, from its first line."""
    cqrs_id = (first_line or "").strip()
    if not cqrs_id:
        raise BadOption(f"File {source} is empty!")
    model = ReplicaRegistry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        raise BadOption(f"Wrong CQRS ID: {cqrs_id}!")
    return model


def clear(model: type[Any]) -> None:
    """``--clear``: delete every replica row before loading."""
    try:
        with transaction.atomic():
            model._default_manager.all().delete()
    except DatabaseError:
        raise BadOption("Delete operation fails!") from None


@dataclass
class LoadReport:
    loaded: int = 0
    errors: list[str] = field(default_factory=list)  # django-cqrs's messages, with line numbers


def load(model: type[Any], lines: Iterable[str], batch_size: int = DEFAULT_BATCH) -> LoadReport:
    """Save each dumped row (the lines after the first) into ``model``; a line that cannot be parsed
    or saved is reported by its number in the file and skipped."""
    report = LoadReport()
    numbered = enumerate(lines, start=2)
    while True:
        chunk = list(_take(numbered, batch_size))
        if not chunk:
            return report
        with transaction.atomic():
            for number, text in chunk:
                error = _load_line(model, text)
                if error is None:
                    report.loaded += 1
                else:
                    report.errors.append(error.format(number))


def _take(items: Iterator[tuple[int, str]], count: int) -> Iterator[tuple[int, str]]:
    for _ in range(count):
        item = next(items, None)
        if item is None:
            return
        yield item


def _load_line(model: type[Any], text: str) -> str | None:
    """None when saved, else the message (``{0}``: the line number)."""
    # Bytes that were no UTF-8 came as surrogates (the command reads with surrogateescape): given
    # back as they were, they make the line no JSON, like any other damage.
    master_data = read_body(text.strip().encode("utf-8", "surrogateescape"))
    if isinstance(master_data, str):
        return "Dump file can't be parsed: line {0}!"
    try:
        with transaction.atomic():
            instance = model.cqrs_save(master_data)
    except Exception as exc:
        return "Unexpected error: line {0}! " + str(exc).replace("{", "{{").replace("}", "}}")
    return None if instance else "Instance can't be saved: line {0}!"
