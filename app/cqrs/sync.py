"""Re-sending rows on demand (django-cqrs's ``cqrs_sync`` and its admin action), as plain functions:
pick a master model by ``CQRS_ID``, rows by a JSON filter, and emit a SYNC per row into the outbox,
a batch per transaction (``app/cqrs/mixins.py`` ``cqrs_sync``: to every replica, or to one queue)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.exceptions import FieldError, ValidationError
from django.db import DatabaseError, transaction
from django.db.models import QuerySet

if TYPE_CHECKING:
    from app.cqrs.mixins import MasterMixin

DEFAULT_BATCH = 10000


class BadOption(ValueError):
    """An option the commands refuse, with django-cqrs's message."""


def master_models() -> dict[str, type[MasterMixin]]:
    """Installed master models by CQRS_ID (django-cqrs's ``MasterRegistry``)."""
    from app.cqrs.mixins import MasterMixin

    return {model.CQRS_ID: model for model in apps.get_models()
            if issubclass(model, MasterMixin) and model.CQRS_ID}


def master_model(cqrs_id: str) -> type[MasterMixin]:
    model = master_models().get(cqrs_id)
    if model is None:
        raise BadOption(f"Wrong CQRS ID: {cqrs_id}!")
    return model


def check_batch(batch: int) -> int:
    if batch < 1:
        raise BadOption(f"Batch size must be positive, not {batch}!")
    return batch


def filter_kwargs(text: str) -> dict[str, Any]:
    """``--filter``: a JSON object of queryset filter keyword arguments."""
    try:
        kwargs = json.loads(text)
    except ValueError:
        raise BadOption("Bad filter kwargs!") from None
    if not isinstance(kwargs, dict):
        raise BadOption("Bad filter kwargs!")
    return kwargs


def filtered(queryset: QuerySet[Any], text: str | None) -> QuerySet[Any]:
    """``queryset`` narrowed by ``--filter`` (unknown fields and bad values are refused now, not mid-run)."""
    if text is None:
        return queryset
    try:
        narrowed = queryset.filter(**filter_kwargs(text))
        narrowed.exists()
    except (FieldError, ValidationError, ValueError, TypeError) as exc:
        raise BadOption(f"Bad filter kwargs! {exc}") from None
    except DatabaseError as exc:  # e.g. a lookup the database cannot run
        raise BadOption(f"Bad filter kwargs! {exc}") from None
    return narrowed


def batches(queryset: QuerySet[Any], batch_size: int) -> Iterator[list[Any]]:
    """Rows in primary key order, ``batch_size`` at a time, by key ranges: rows changing meanwhile
    shift no page (django-cqrs pages by offset)."""
    check_batch(batch_size)
    ordered = queryset.order_by("pk")
    last: Any = None
    while True:
        page = ordered if last is None else ordered.filter(pk__gt=last)
        rows = list(page[:batch_size])
        if not rows:
            return
        yield rows
        last = rows[-1].pk
        if len(rows) < batch_size:
            return


@dataclass
class SyncReport:
    processed: int = 0
    synced: int = 0
    failures: list[tuple[Any, str]] = field(default_factory=list)  # (pk, "Error: message")


def sync_rows(
    queryset: QuerySet[Any], queue: str | None = None, batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """Emit a SYNC for every row of ``queryset`` (to ``queue`` alone, if given), one transaction per
    batch. A row that fails is reported and the others still go: each row has its own savepoint."""
    model: type[MasterMixin] = queryset.model
    report = SyncReport()
    for rows in batches(model.relate_cqrs_serialization(queryset), batch_size):
        with transaction.atomic(using=queryset.db):
            for instance in rows:
                report.processed += 1
                try:
                    with transaction.atomic(using=queryset.db):
                        done = instance.cqrs_sync(using=queryset.db, queue=queue or None)
                except Exception as exc:
                    report.failures.append((instance.pk, f"{type(exc).__name__}: {exc}"))
                    continue
                if done:
                    report.synced += 1
                else:
                    report.failures.append((instance.pk, "not synced (vanished)"))
        if on_batch is not None:
            on_batch(report)
    return report
