"""Finding and repairing divergence between a master and a replica (django-cqrs's streaming diffs),
as plain functions over django-cqrs's line protocol:

- ``cqrs_diff_master`` prints ``<cqrs_id>,<time>`` then, per batch, a JSON list of ``[pk, revision]``;
- ``cqrs_diff_replica`` reads that, prints ``<cqrs_id>,<time>,<queue>`` (``None`` without a queue)
  then, per batch, a JSON list of the pks whose replica row is missing or at another revision;
- ``cqrs_diff_sync`` reads that and emits a SYNC for those rows (to that queue alone, if named).

And for rows the master no longer has: ``cqrs_deleted_diff_replica`` prints ``<cqrs_id>,<time>`` then
JSON lists of replica pks; ``cqrs_deleted_diff_master`` passes the header on and prints those the
master lacks; ``cqrs_deleted_sync_replica`` deletes them from the replica.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError
from django.db.models import QuerySet

from app.cqrs.replica import ReplicaRegistry
from app.cqrs.sync import BadOption, batches, master_model

NO_QUEUE = "None"  # django-cqrs's text for "every replica"


def json_line(value: Any) -> str:
    """A package as django-cqrs writes it (ujson: compact)."""
    return json.dumps(value, separators=(",", ":"))


def header(cqrs_id: str, now: object) -> str:
    return f"{cqrs_id},{now}"


def _cqrs_id(first_line: str) -> str:
    return first_line.strip().split(",")[0]


def replica_model(first_line: str) -> type[Any]:
    """The replica model of a header (or of a bare CQRS_ID)."""
    cqrs_id = _cqrs_id(first_line)
    model = ReplicaRegistry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        raise BadOption(f"Wrong CQRS ID: {cqrs_id}!")
    if getattr(model, "CQRS_NO_DB_OPERATIONS", False):
        raise BadOption(f"CQRS ID {cqrs_id} has no rows here (CQRS_NO_DB_OPERATIONS)!")
    return model


def master_packages(queryset: QuerySet[Any], batch_size: int) -> Iterator[str]:
    """diff_master's lines after the header: ``[[pk, revision], ...]`` per batch of sync instances."""
    for rows in batches(queryset, batch_size):
        package = [[row.pk, row.cqrs_revision] for row in rows if row.is_sync_instance()]
        yield json_line(package)


def pk_packages(queryset: QuerySet[Any], batch_size: int) -> Iterator[list[Any]]:
    """deleted_diff_replica's lines after the header: the replica's pks, per batch."""
    for rows in batches(queryset, batch_size):
        yield [row.pk for row in rows]


def replica_header(first_line: str, queue: str | None) -> str:
    return f"{first_line.strip()},{queue or NO_QUEUE}"


def parse_line(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadOption(f"Bad diff line: {text.strip()[:100]!r}!") from None


def differing(model: type[Any], package_line: str) -> list[Any]:
    """pks of a diff_master package whose replica row is missing or at another revision."""
    try:
        master = {pk: revision for pk, revision in parse_line(package_line)}
    except (TypeError, ValueError):
        raise BadOption(f"Bad diff line: {package_line.strip()[:100]!r}!") from None
    stored = dict(
        model._default_manager.filter(pk__in=list(master)).order_by().values_list("pk", "cqrs_revision")
    )
    return [pk for pk, revision in master.items() if stored.get(pk, -1) != revision]


def sync_target(first_line: str) -> tuple[type[Any], str | None]:
    """diff_sync: the master model and the queue (None: every replica) of diff_replica's header."""
    parts = first_line.strip().split(",")
    queue = parts[-1] if len(parts) > 2 and parts[-1] != NO_QUEUE else None
    return master_model(parts[0]), queue


def pk_list(pks_line: str) -> list[Any]:
    pks = parse_line(pks_line)
    if not isinstance(pks, list):
        raise BadOption(f"Bad diff line: {pks_line.strip()[:100]!r}!")
    return pks


def missing_on_master(first_line: str, pks_line: str) -> list[Any]:
    """deleted_diff_master: the replica pks of a line that the master has no row for."""
    model = master_model(_cqrs_id(first_line))
    pks = pk_list(pks_line)
    present = set(model._default_manager.filter(pk__in=pks).values_list("pk", flat=True))
    return [pk for pk in pks if pk not in present]


def delete_replica_rows(model: type[Any], pks_line: str) -> str | None:
    """deleted_sync_replica: delete the rows of a line; the database's error, if any."""
    try:
        model._default_manager.filter(pk__in=pk_list(pks_line)).delete()
    except DatabaseError as exc:
        return str(exc)
    return None
