"""``cqrs_dead_letters retry``'s decision, as django-cqrs makes it: a dead letter goes back to the
replica's own queue (``cqrs.<queue>.<cqrs_id>``) with ``retries`` at 0 and, if it had an expiry, a
fresh one (``CQRS_MESSAGE_TTL_S`` from now: it may have passed already)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from django.conf import settings

from app.cqrs.apply import requeue_routing_key
from app.cqrs.payload import read_body
from app.cqrs.replica import ReplicaRegistry


def revived(body: bytes, queue: str, now: datetime) -> tuple[str, bytes] | None:
    """(routing key, body) to republish a dead letter with, or None to leave it where it is: a body
    that is no payload, or one of a ``cqrs_id`` no replica model here has (the queue has no binding
    for it: republished, it would be routed nowhere and lost)."""
    dct = read_body(body)
    if isinstance(dct, str) or not isinstance(dct.get("cqrs_id"), str):
        return None
    if ReplicaRegistry.get_model_by_cqrs_id(dct["cqrs_id"]) is None:
        return None
    dct["retries"] = 0
    if dct.get("expires"):
        ttl = settings.CQRS_MESSAGE_TTL_S or 86400  # django-cqrs's default master TTL
        dct["expires"] = (now + timedelta(seconds=ttl)).replace(microsecond=0).isoformat()
    return requeue_routing_key(queue, dct["cqrs_id"]), json.dumps(dct).encode()
