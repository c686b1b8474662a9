"""Store policies (docs/architecture.md section 5) as plain decisions, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Collection

from django.conf import settings


class StorePolicy(enum.StrEnum):
    DISABLED = "disabled"  # live only, nothing stored
    CACHE = "cache"  # stored until any consumer acks
    CACHEALL = "cacheall"  # stored until every principal with consume rights acked
    STORE = "store"  # stored until an admin or retention removes it

    @property
    def stores(self) -> bool:
        return self is not StorePolicy.DISABLED


def effective_policy(own: str | None, *, is_response_topic: bool) -> StorePolicy:
    """A topic's own policy, else the server default for its kind."""
    if own:
        return StorePolicy(own)
    default = settings.STORE_RESPONSE_MESSAGES if is_response_topic else settings.STORE_SOURCE_MESSAGES
    return StorePolicy(default)


def removed_after_ack(
    policy: StorePolicy, acked_by: set[str], consumers: set[str], waiting: Collection[int] = (),
) -> bool:
    """Whether a stored message goes once ``acked_by`` principals acked it. ``waiting``: the Pulsar
    subscriptions that existed when it was published (start_sequence below its sequence) and have
    not acked it; none may be left (docs/architecture.md 18.3). A subscription's ack is also its
    principal's, so it is in ``acked_by`` too."""
    if waiting:
        return False
    if policy is StorePolicy.CACHE:
        return bool(acked_by)
    if policy is StorePolicy.CACHEALL:
        return bool(acked_by) and consumers <= acked_by
    return False
