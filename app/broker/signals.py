"""Tell every server process when rights on a topic change, so open connections re-read them.

Rights change in the admin, over the HTTP API or with ``dasf_topic``: object permission rows
(django-guardian) or a topic's own flags. The announcement goes out after the commit.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from guardian.models import GroupObjectPermission, UserObjectPermission

from app.auth.models import Token
from app.auth.services import principal_of
from app.broker.backplane import CONTROL_GROUP
from app.broker.models import Topic
from app.broker.runtime import BrokerRuntime, running_runtime

logger = logging.getLogger(__name__)


def _announce(local: Callable[[BrokerRuntime], None], message: dict[str, Any]) -> None:
    """Tell every server process, from a worker thread (or a command's process), after the commit:
    through this process's runtime when it serves, else straight onto the channel layer."""
    runtime = running_runtime()
    if runtime is not None and runtime.loop.is_running():
        # A fresh context: the caller's is asgiref's worker-thread context, and a connection task
        # spawned in it would see its own database_sync_to_async call as a deadlock.
        runtime.loop.call_soon_threadsafe(local, runtime, context=contextvars.Context())
        return
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return  # no server shares this process, and none can be reached
    try:
        async_to_sync(layer.group_send)(CONTROL_GROUP, {**message, "origin": "external"})
    except Exception:
        logger.exception("could not announce %s", message)


def announce_rights_changed(slug: str) -> None:
    _announce(lambda runtime: runtime.rights_changed(slug), {"type": "broker.rights", "slug": slug})


def announce_revoked(token_id: int | None, principal: str | None) -> None:
    _announce(
        lambda runtime: runtime.credentials_revoked(token_id, principal),
        {"type": "broker.revoked", "token_id": token_id, "principal": principal},
    )


def _permission_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.content_type_id != ContentType.objects.get_for_model(Topic).pk:
        return
    slug = Topic.objects.filter(pk=instance.object_pk).values_list("slug", flat=True).first()
    if slug:
        transaction.on_commit(lambda: announce_rights_changed(slug))


def _topic_changed(sender: Any, instance: Topic, created: bool = False, **kwargs: Any) -> None:
    if not created:
        slug = instance.slug
        transaction.on_commit(lambda: announce_rights_changed(slug))


def _token_changed(sender: Any, instance: Token, **kwargs: Any) -> None:
    if kwargs.get("signal") is post_delete or not instance.enabled:
        token_id = instance.pk
        transaction.on_commit(lambda: announce_revoked(token_id, None))


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if kwargs.get("signal") is post_delete or not instance.is_active:
        principal = principal_of(instance)
        transaction.on_commit(lambda: announce_revoked(None, principal))


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
