"""``Model.cqrs``: django-cqrs's ``bulk_create`` and ``bulk_update``, which replicate every row
they write (plain ``objects.bulk_create`` and ``QuerySet.update`` send no signals, so emit nothing)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from app.cqrs import changes, tracking
from app.cqrs.payload import SignalType

if TYPE_CHECKING:
    from app.cqrs.mixins import MasterMixin


class MasterManager(models.Manager[Any]):
    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Insert ``objs`` and emit a SAVE for each, in one transaction. The database must hand
        back primary keys (PostgreSQL and SQLite do) or the objects must carry theirs."""
        objs = list(objs)
        with transaction.atomic(using=self.db, savepoint=False):
            for obj in objs:
                if obj.CQRS_TRACKED_FIELDS is not None:
                    obj.__dict__[tracking.PREVIOUS_ATTR] = tracking.changed(obj, adding=True)
            created: list[Any] = super().bulk_create(objs, *args, **kwargs)
            for obj in created:
                changes.emit_change(self.model, obj, SignalType.SAVE, self.db)
        return created

    # django-cqrs's name and signature, not Django's bulk_update(objs, fields): code written for it runs.
    def bulk_update(self, queryset: models.QuerySet[Any], **kwargs: Any) -> int:  # type: ignore[override]
        """``queryset.update(**kwargs)`` with each row's revision incremented, and a SAVE per row.
        previous_data holds every tracked field's value before, by column name (as django-cqrs)."""
        model: type[MasterMixin] = queryset.model
        with transaction.atomic(using=queryset.db, savepoint=False):
            # Rows are picked before the update: it may change what the filter matches.
            pks = list(queryset.values_list("pk", flat=True))
            if not pks:
                return 0
            previous: dict[Any, dict[str, Any]] = {}
            if model.CQRS_TRACKED_FIELDS is not None:
                previous = {obj.pk: tracking.current(obj) for obj in model._default_manager.using(queryset.db).filter(
                    pk__in=pks)}
            count = queryset.update(cqrs_revision=F("cqrs_revision") + 1, cqrs_updated=timezone.now(), **kwargs)
            for obj in model._default_manager.using(queryset.db).filter(pk__in=pks).order_by("pk"):
                if model.CQRS_TRACKED_FIELDS is not None:
                    obj.__dict__[tracking.PREVIOUS_ATTR] = previous.get(obj.pk)
                changes.emit_change(model, obj, SignalType.SAVE, queryset.db)
        return count
