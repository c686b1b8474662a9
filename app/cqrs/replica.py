"""Replica models, as django-cqrs 3.x has them (``dj_cqrs.mixins.ReplicaMixin``; its manager,
``Model.cqrs``, is app/cqrs/replica_manager.py).

A replica model names the master model it copies (``CQRS_ID``) and gets ``cqrs_revision`` and
``cqrs_updated`` columns. A payload is applied through ``cqrs_save`` / ``cqrs_delete``, with
django-cqrs's semantics:

- SAVE creates or updates by primary key; a payload whose ``cqrs_revision`` is older than the
  stored one, or equal to it (a duplicate: RabbitMQ delivers at least once), changes nothing;
- SYNC (re-sent on demand) applies whatever revision it carries (an older one is logged);
- DELETE deletes by the master's ``id`` (deleting what is not there is success).

Class attributes, as django-cqrs's: ``CQRS_MAPPING`` (master field -> replica field, the primary key
among them), ``CQRS_CUSTOM_SERIALIZATION`` (no check of the mapped fields: override ``cqrs_create``
and ``cqrs_update``), ``CQRS_SELECT_FOR_UPDATE`` (lock the row while it is updated),
``CQRS_NO_DB_OPERATIONS`` (no default database work: ``cqrs_save`` and ``cqrs_delete`` are the
model's own hooks), ``CQRS_META`` (hooks receive ``meta``), ``CQRS_ONLY_DIRECT_SYNCS``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import DataError, OperationalError, models
from django.db.models.signals import class_prepared

from app.cqrs.replica_manager import ReplicaManager


def values_refused(error: BaseException | None) -> bool:
    """Whether the database refused a payload's values themselves, as it will every time: a
    DataError (a string longer than its column, an integer out of range, a NUL character in
    PostgreSQL text), SQLite's OverflowError for an integer beyond 64 bits, or PostgreSQL's
    "program limit exceeded" (SQLSTATE class 54, e.g. a value too large for its index: an
    OperationalError, yet no outage)."""
    if isinstance(error, (DataError, OverflowError)):
        return True
    if isinstance(error, OperationalError):
        sqlstate = getattr(error.__cause__, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate.startswith("54")
    return False


class ReplicaRegistry:
    """Replica classes by ``CQRS_ID`` (the routing keys the replica's queue is bound to)."""

    models: ClassVar[dict[str, type[Any]]] = {}

    @classmethod
    def register_model(cls, model_cls: type[Any]) -> None:
        cqrs_id = getattr(model_cls, "CQRS_ID", None)
        if not cqrs_id:
            raise ValueError(f"{model_cls.__name__}: CQRS_ID must be set for every replica model")
        known = cls.models.get(cqrs_id)
        if known is not None and known is not model_cls:
            raise ValueError(f"Two models can't have the same CQRS_ID: {cqrs_id}.")
        cls.models[cqrs_id] = model_cls

    @classmethod
    def get_model_by_cqrs_id(cls, cqrs_id: str) -> type[Any] | None:
        return cls.models.get(cqrs_id)


class RawReplicaMixin:
    """A replica without a table of its own: its ``cqrs_save`` / ``cqrs_delete`` do the work.
    Register it with ``ReplicaRegistry.register_model`` (as with django-cqrs)."""

    CQRS_ID: ClassVar[str | None] = None
    CQRS_NO_DB_OPERATIONS: ClassVar[bool] = True
    CQRS_META: ClassVar[bool] = False
    CQRS_ONLY_DIRECT_SYNCS: ClassVar[bool] = False

    @classmethod
    def cqrs_save(cls, master_data: dict[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def cqrs_delete(cls, master_data: dict[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def should_retry_cqrs(current_retry: int, exception: BaseException | None = None) -> bool:
        """Whether a failed payload is tried again (``CQRS_MAX_RETRIES``; negative: forever). Never
        when the database refused its values (``values_refused``): it would refuse them again, and
        the instance's later changes would wait behind it for nothing."""
        if values_refused(exception):
            return False
        max_retries: int = settings.CQRS_MAX_RETRIES
        return max_retries < 0 or current_retry < max_retries

    @staticmethod
    def get_cqrs_retry_delay(current_retry: int) -> float:
        """Seconds before the next try: ``CQRS_RETRY_DELAY_S`` doubled per retry so far, capped at
        ``CQRS_RETRY_DELAY_MAX_S`` (django-cqrs waits the same delay every time)."""
        base: float = settings.CQRS_RETRY_DELAY_S
        cap: float = settings.CQRS_RETRY_DELAY_MAX_S
        return float(min(cap, base * 2 ** min(current_retry, 32)))


class ReplicaMixin(RawReplicaMixin, models.Model):
    """A model replicating a master model (registered by its ``CQRS_ID`` when the class is built)."""

    CQRS_MAPPING: ClassVar[dict[str, str] | None] = None
    CQRS_CUSTOM_SERIALIZATION: ClassVar[bool] = False
    CQRS_SELECT_FOR_UPDATE: ClassVar[bool] = False
    CQRS_NO_DB_OPERATIONS: ClassVar[bool] = False

    # As django-cqrs: ``objects`` first stays the default manager; ``cqrs`` does the CQRS work.
    objects = models.Manager()
    cqrs = ReplicaManager()

    cqrs_revision = models.IntegerField()
    cqrs_updated = models.DateTimeField()

    class Meta:
        abstract = True

    @classmethod
    def cqrs_save(  # type: ignore[override]
        cls,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Create or update the instance from the master's data; the instance, or None when the
        data cannot be applied (missing fields: django-cqrs retries those too)."""
        if cls.CQRS_NO_DB_OPERATIONS:
            return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)
        return cls.cqrs.save_instance(master_data, previous_data, sync, meta)

    @classmethod
    def cqrs_create(
        cls,
        sync: bool,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Create from mapped data; override for custom serialization."""
        return cls._default_manager.create(**mapped_data)

    def cqrs_update(
        self,
        sync: bool,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Update from mapped data; override for custom serialization."""
        for key, value in mapped_data.items():
            setattr(self, key, value)
        self.save()
        return self

    @classmethod
    def cqrs_delete(cls, master_data: dict[str, Any], meta: dict[str, Any] | None = None) -> bool:  # type: ignore[override]
        """Delete by the master's ``id``; True even when there was nothing to delete."""
        if cls.CQRS_NO_DB_OPERATIONS:
            return bool(super().cqrs_delete(master_data, meta=meta))
        return cls.cqrs.delete_instance(master_data)


def _check_mapping(model_cls: type[ReplicaMixin]) -> None:
    mapping = model_cls.CQRS_MAPPING
    if mapping is None:
        return
    names = list(mapping.values())
    fields = {f.name for f in model_cls._meta.fields}
    pk_name = model_cls._meta.pk.name
    problems = []
    if len(set(names)) != len(names):
        problems.append("duplicate names")
    if pk_name not in names:
        problems.append(f"the primary key {pk_name!r} is not in it")
    if set(names) - fields:
        problems.append(f"no such fields: {sorted(set(names) - fields)}")
    if problems:
        raise ValueError(f"{model_cls.__name__}.CQRS_MAPPING: {'; '.join(problems)}")


def _register(sender: type[Any], **kwargs: Any) -> None:
    if issubclass(sender, ReplicaMixin):
        _check_mapping(sender)
        ReplicaRegistry.register_model(sender)


class_prepared.connect(_register, dispatch_uid="switchyard_cqrs_replica")
