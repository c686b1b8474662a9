"""Tell every server process when rights on a topic change, so open connections re-read them.

Rights change in the admin, over the HTTP API or with ``dasf_topic``: object permission rows
(django-guardian) or a topic's own flags. The announcement goes out after the commit.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from guardian.models import GroupObjectPermission, UserObjectPermission

from app.broker.backplane import CONTROL_GROUP
from app.broker.models import Topic
from app.broker.runtime import running_runtime

logger = logging.getLogger(__name__)


def announce_rights_changed(slug: str) -> None:
    """Called in a worker thread (or a command's process) once the change is committed."""
    runtime = running_runtime()
    if runtime is not None and runtime.loop.is_running():
        runtime.loop.call_soon_threadsafe(runtime.rights_changed, slug)
        return
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return  # no server shares this process, and none can be reached
    try:
        async_to_sync(layer.group_send)(CONTROL_GROUP, {"type": "broker.rights", "slug": slug, "origin": "external"})
    except Exception:
        logger.exception("could not announce the rights change on %s", slug)


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


def connect() -> None:
    for model in (UserObjectPermission, GroupObjectPermission):
        post_save.connect(_permission_changed, sender=model, dispatch_uid=f"rights-save-{model.__name__}")
        post_delete.connect(_permission_changed, sender=model, dispatch_uid=f"rights-delete-{model.__name__}")
    post_save.connect(_topic_changed, sender=Topic, dispatch_uid="topic-save")
    post_delete.connect(_topic_changed, sender=Topic, dispatch_uid="topic-delete")
