"""A master's changes into the outbox: SAVE, SYNC and DELETE payloads, and the model signals
that emit them in the transaction of the change (connected per master model at startup, so
models without replication keep Django's fast deletes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db.models import signals
from django.utils import timezone

from app.cqrs import events, tracking
from app.cqrs.payload import SignalType, TransportPayload

if TYPE_CHECKING:
    from app.cqrs.mixins import MasterMixin


def emit_change(sender: type[MasterMixin], instance: MasterMixin, signal: SignalType, using: str,
                queue: str | None = None) -> None:
    """SAVE or SYNC of ``instance`` as it is in the database now, into the transaction of ``using``."""
    if not sender.CQRS_PRODUCE or not instance.is_sync_instance():
        return
    assert sender.CQRS_ID is not None
    sync = signal is SignalType.SYNC
    instance_data = instance.to_cqrs_dict(using, sync=sync)
    previous_data = None if sync else instance.get_tracked_fields_data()
    instance.__dict__.pop(tracking.PREVIOUS_ATTR, None)
    meta = instance.get_cqrs_meta(instance_data=instance_data, previous_data=previous_data, signal_type=signal.value)
    payload = TransportPayload(
        signal_type=signal, cqrs_id=sender.CQRS_ID, instance_data=instance_data,
        instance_pk=tracking.json_value(instance.pk), previous_data=previous_data,
        correlation_id=events.correlation_id(signal, sender.CQRS_ID, instance.pk, queue),
        retries=0, expires=events.expires(), meta=meta,
    )
    events.emit_payload(payload, queue=queue, using=using)
    if instance.CQRS_TRACKED_FIELDS is not None:
        tracking.remember(instance)


def emit_delete(sender: type[MasterMixin], instance: MasterMixin, using: str) -> None:
    """DELETE as django-cqrs sends it: the pk as ``id``, the next revision, the time now."""
    if not sender.CQRS_PRODUCE or not instance.is_sync_instance():
        return
    assert sender.CQRS_ID is not None
    instance_data: dict[str, Any] = {
        "id": tracking.json_value(instance.pk),
        "cqrs_revision": instance.cqrs_revision + 1,
        "cqrs_updated": str(timezone.now()),
    }
    custom = instance.get_custom_cqrs_delete_data()
    if custom:
        instance_data["custom"] = custom
    meta = instance.get_cqrs_meta(instance_data=instance_data, signal_type=SignalType.DELETE.value)
    payload = TransportPayload(
        signal_type=SignalType.DELETE, cqrs_id=sender.CQRS_ID, instance_data=instance_data,
        instance_pk=tracking.json_value(instance.pk),
        correlation_id=events.correlation_id(SignalType.DELETE, sender.CQRS_ID, instance.pk, None),
        retries=0, expires=events.expires(), meta=meta,
    )
    events.emit_payload(payload, using=using)


def on_post_save(sender: type[MasterMixin], instance: MasterMixin, using: str, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields and "cqrs_revision" not in update_fields:
        return  # a partial save without CQRS fields: not replicated (django-cqrs alike)
    emit_change(sender, instance, SignalType.SAVE, using)


def on_post_delete(sender: type[MasterMixin], instance: MasterMixin, using: str, **kwargs: Any) -> None:
    emit_delete(sender, instance, using)


def connect_masters() -> None:
    """Check every installed master model and connect its signals (AppConfig.ready)."""
    from app.cqrs.mixins import MasterMixin

    seen: dict[str, str] = {}
    for model in apps.get_models():
        if not issubclass(model, MasterMixin):
            continue
        _check(model, seen)
        uid = f"switchyard-cqrs-{model._meta.label}"
        signals.post_save.connect(on_post_save, sender=model, dispatch_uid=uid)
        signals.post_delete.connect(on_post_delete, sender=model, dispatch_uid=uid)
        if model.CQRS_TRACKED_FIELDS is not None:
            signals.post_init.connect(tracking.on_post_init, sender=model, dispatch_uid=uid)


def _check(model: type[MasterMixin], seen: dict[str, str]) -> None:
    label = model._meta.label
    if not model.CQRS_ID:
        raise ImproperlyConfigured(f"{label}: CQRS_ID is not set")
    if model.CQRS_ID in seen:
        raise ImproperlyConfigured(f"{label}: CQRS_ID {model.CQRS_ID!r} is {seen[model.CQRS_ID]}'s already")
    seen[model.CQRS_ID] = label
    if model.CQRS_SERIALIZER and model.CQRS_FIELDS != tracking.ALL_FIELDS:
        raise ImproperlyConfigured(f"{label}: CQRS_FIELDS can't be set together with CQRS_SERIALIZER")
    names = {field.name for field in model._meta.concrete_fields}
    for setting in ("CQRS_FIELDS", "CQRS_TRACKED_FIELDS"):
        value = getattr(model, setting)
        if value is None or value == tracking.ALL_FIELDS:
            continue
        if isinstance(value, str) or not set(value) <= names or len(set(value)) != len(value):
            raise ImproperlyConfigured(f"{label}: {setting} must be '__all__' or distinct field names of the model")
