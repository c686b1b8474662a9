"""``MasterMixin``: a model whose changes replicate, with django-cqrs's attribute names and meanings.

    class Author(MasterMixin):
        CQRS_ID = "author"
        name = models.CharField(max_length=100)

Saving emits SAVE, deleting emits DELETE, ``cqrs_sync()`` emits SYNC: into the outbox, in the
transaction of the change (a rollback emits nothing). Unlike django-cqrs, which publishes once per
instance after commit, every save is one event with its own revision.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import models, router
from django.db.models import F
from django.db.models.expressions import Combinable
from django.utils.module_loading import import_string

from app.cqrs import changes, tracking
from app.cqrs.managers import MasterManager
from app.cqrs.payload import SignalType

ALL_FIELDS = tracking.ALL_FIELDS


class MasterMixin(models.Model):
    CQRS_ID: ClassVar[str | None] = None
    """Replication name, unique across services: the routing key replicas bind to."""
    CQRS_PRODUCE: ClassVar[bool] = True
    """False: nothing is emitted for this model."""
    CQRS_FIELDS: ClassVar[str | list[str] | tuple[str, ...]] = ALL_FIELDS
    """Fields serialised into instance_data (``"__all__"``: every concrete field)."""
    CQRS_SERIALIZER: ClassVar[str | None] = None
    """Dotted path of a class built as ``Serializer(instance)`` with a ``.data`` dict (as DRF's)."""
    CQRS_TRACKED_FIELDS: ClassVar[str | list[str] | tuple[str, ...] | None] = None
    """Fields whose previous values a SAVE sends as previous_data (``"__all__"``: every one)."""

    objects = models.Manager()
    cqrs = MasterManager()

    cqrs_revision = models.IntegerField(default=0, help_text="Incremented on every replicated change.")
    cqrs_updated = models.DateTimeField(auto_now=True, help_text="Time of the last replicated change.")

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.pop("update_fields", None)
        update_cqrs_fields = kwargs.pop("update_cqrs_fields", settings.CQRS_AUTO_UPDATE_FIELDS)
        # As django-cqrs: a save of some fields only replicates when asked to (CQRS_AUTO_UPDATE_FIELDS).
        bump = not update_fields or update_cqrs_fields
        if bump and not self._state.adding:
            self.cqrs_revision = F("cqrs_revision") + 1
        if update_fields and bump:
            update_fields = {*update_fields, "cqrs_revision", "cqrs_updated"}
        if bump and self.CQRS_TRACKED_FIELDS is not None:
            self.__dict__[tracking.PREVIOUS_ATTR] = tracking.changed(self, self._state.adding)
        kwargs["update_fields"] = update_fields
        super().save(*args, **kwargs)

    def to_cqrs_dict(self, using: str | None = None, sync: bool = False) -> dict[str, Any]:
        """instance_data: CQRS_FIELDS or CQRS_SERIALIZER, with cqrs_revision and cqrs_updated."""
        using = using or self._state.db or router.db_for_write(type(self), instance=self)
        self._refresh_expressions(using)
        if self.CQRS_SERIALIZER:
            instance = self if sync else self.relate_cqrs_serialization(type(self)._default_manager.using(using)).get(
                pk=self.pk
            )
            data: dict[str, Any] = dict(import_string(self.CQRS_SERIALIZER)(instance).data)
        else:
            data = {}
            for field in self._meta.concrete_fields:
                if self.CQRS_FIELDS != ALL_FIELDS and field.name not in self.CQRS_FIELDS:
                    continue
                value = field.value_from_object(self)
                data[field.name] = tracking.json_value(value)
        data["cqrs_revision"] = self.cqrs_revision
        data["cqrs_updated"] = str(self.cqrs_updated)
        return data

    def _refresh_expressions(self, using: str) -> None:
        """Load the stored values of replicated or tracked fields saved as expressions
        (``obj.views = F("views") + 1``), which hold the expression, not a value, after the save
        (django-cqrs's ``_refresh_f_expr_values``)."""
        replicated = None if self.CQRS_SERIALIZER or self.CQRS_FIELDS == ALL_FIELDS else set(self.CQRS_FIELDS)
        tracked = set(tracking.tracked_attnames(type(self)))
        stale = [
            field.attname
            for field in self._meta.concrete_fields
            if isinstance(self.__dict__.get(field.attname), Combinable)
            and (field.name == "cqrs_revision" or replicated is None or field.name in replicated
                 or field.attname in tracked)
        ]
        if stale:
            self.refresh_from_db(using=using, fields=stale)

    def get_tracked_fields_data(self) -> dict[str, Any] | None:
        """previous_data of the pending SAVE: previous values of changed tracked fields."""
        previous: dict[str, Any] | None = self.__dict__.get(tracking.PREVIOUS_ATTR)
        return previous

    def cqrs_sync(self, using: str | None = None, queue: str | None = None) -> bool:
        """Emit SYNC (the replicas save it whatever their revision); ``queue``: only that replica's
        queue on RabbitMQ. False for an unsaved or vanished instance."""
        if self._state.adding:
            return False
        if not self.CQRS_SERIALIZER:
            try:
                self.refresh_from_db(using=using)
            except self.DoesNotExist:
                return False
        changes.emit_change(type(self), self, SignalType.SYNC, using or self._state.db or "default", queue=queue)
        return True

    def is_sync_instance(self) -> bool:
        """Override to replicate only some instances (the others emit nothing)."""
        return True

    def get_cqrs_meta(self, **kwargs: Any) -> dict[str, Any]:
        """Override to send metadata (payload ``meta``); called with signal_type, instance_data, ..."""
        return {}

    def get_custom_cqrs_delete_data(self) -> Any:
        """Override to send more in a DELETE (``instance_data["custom"]``)."""
        return None

    @classmethod
    def relate_cqrs_serialization(cls, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        """Override to select_related/prefetch_related what CQRS_SERIALIZER reads."""
        return queryset
