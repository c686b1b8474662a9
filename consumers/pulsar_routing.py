"""``/ws/v2/consumer/...``: which connection class serves a handshake (docs/architecture.md 18.1).

DASF topics keep today's ``TopicConsumer`` (``demessaging``'s PulsarConfig relies on it); other
topics get Pulsar's subscriptions (``PulsarConsumer``). A topic that does not exist (yet) is served
by ``TopicConsumer``, which waits for it, when its name is that of a response topic of an existing
topic: the ``demessaging`` requester opens its response topic before its request creates it.
Anything else missing goes to ``PulsarConsumer``: refused with 404, or created there when
``ALLOW_AUTO_TOPIC_CREATION`` is on (so that rule never takes a response topic's name first).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser

from app.auth.services import principal_of
from app.broker.naming import response_topic_sources, topic_name_error
from app.broker.runtime import BrokerRuntime, get_runtime
from app.pulsar.semantics import PathShape
from consumers.auth import refuse_unread_handshake
from consumers.pulsar_consumer import PulsarConsumer
from consumers.refusals import DATABASE_ERRORS, database_failed
from consumers.subscriber import TopicConsumer


async def named_like_a_response_topic(runtime: BrokerRuntime, slug: str, user: Any, principal: str) -> bool:
    """Whether a missing ``slug`` is named like a response topic of an existing topic."""
    for source in response_topic_sources(slug):
        if await runtime.topic_view(source, user, principal) is not None:
            return True
    return False


class PulsarConsumerRoute:
    def __init__(self) -> None:
        self.dasf = TopicConsumer.as_asgi(path_shape=PathShape.PULSAR)
        self.pulsar = PulsarConsumer.as_asgi()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        slug: str = scope["url_route"]["kwargs"]["topic"]
        user = scope.get("user") or AnonymousUser()
        principal = principal_of(user)
        runtime = get_runtime()
        dasf = False
        if topic_name_error(slug) is None:
            try:
                topic = await runtime.topic_view(slug, user, principal)
                dasf = topic.supports_dasf if topic is not None else await named_like_a_response_topic(
                    runtime, slug, user, principal
                )
            except DATABASE_ERRORS as exc:
                return await refuse_unread_handshake(receive, send, database_failed(exc))
        await (self.dasf if dasf else self.pulsar)(scope, receive, send)
