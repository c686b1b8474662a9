"""Tell every server process when topics, rights or credentials change, so open connections and
cached lookups follow.

Rights change in the admin, over the HTTP API, with ``dasf_topic`` or in a shell: object
permission rows (django-guardian), a topic's own flags, topics created or deleted. Credentials are
revoked by disabling or deleting a token, or deactivating or deleting a user. Each change is
written as an announcement in its own transaction (app/broker/announcements.py), which every
server reads within ``ANNOUNCEMENT_POLL_INTERVAL_S``; a server making the change also applies it
at once after the commit and tells the others over the backplane.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from guardian.models import GroupObjectPermission, UserObjectPermission

from app.auth.models import Token
from app.auth.services import principal_of
from app.broker import announcements
from app.broker.models import Topic
from app.broker.runtime import BrokerRuntime, running_runtime

logger = logging.getLogger(__name__)


def _serving() -> BrokerRuntime | None:
    runtime = running_runtime()
    return runtime if runtime is not None and runtime.loop.is_running() else None


def _apply_here(runtime: BrokerRuntime | None, apply: Callable[[BrokerRuntime], None]) -> None:
    if runtime is None:
        return
    # A fresh context: the caller's is asgiref's worker-thread context, and a connection task
    # spawned in it would see its own database_sync_to_async call as a deadlock.
    transaction.on_commit(
        lambda: runtime.loop.call_soon_threadsafe(apply, runtime, context=contextvars.Context())
    )


def announce_rights_changed(slug: str, *, exists: bool = True, response: bool = False) -> None:
    runtime = _serving()
    origin = announcements.PROCESS_ID if runtime else ""
    announcements.record_rights(slug, exists=exists, response=response, origin=origin)
    _apply_here(runtime, lambda r: r.rights_changed(slug, exists=exists, response=response))


def announce_revoked(token_id: int | None, principal: str | None) -> None:
    runtime = _serving()
    announcements.record_revoked(token_id, principal, origin=announcements.PROCESS_ID if runtime else "")
    _apply_here(runtime, lambda r: r.credentials_revoked(token_id, principal))


def _permission_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.content_type_id != ContentType.objects.get_for_model(Topic).pk:
        return
    found = Topic.objects.filter(pk=instance.object_pk).values_list("slug", "response_for_id").first()
    if found is not None:
        announce_rights_changed(found[0], response=found[1] is not None)


def _topic_changed(sender: Any, instance: Topic, **kwargs: Any) -> None:
    announce_rights_changed(
        instance.slug, exists=kwargs.get("signal") is not post_delete, response=instance.response_for_id is not None
    )


def _token_changed(sender: Any, instance: Token, **kwargs: Any) -> None:
    if kwargs.get("signal") is post_delete or not instance.enabled:
        announce_revoked(instance.pk, None)


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if kwargs.get("signal") is post_delete or not instance.is_active:
        announce_revoked(None, principal_of(instance))


def connect() -> None:
    user_model = get_user_model()
    for signal in (post_save, post_delete):
        signal.connect(_token_changed, sender=Token, dispatch_uid=f"token-{id(signal)}")
        signal.connect(_user_changed, sender=user_model, dispatch_uid=f"user-{id(signal)}")
    for model in (UserObjectPermission, GroupObjectPermission):
        post_save.connect(_permission_changed, sender=model, dispatch_uid=f"rights-save-{model.__name__}")
        post_delete.connect(_permission_changed, sender=model, dispatch_uid=f"rights-delete-{model.__name__}")
    post_save.connect(_topic_changed, sender=Topic, dispatch_uid="topic-save")
    post_delete.connect(_topic_changed, sender=Topic, dispatch_uid="topic-delete")
