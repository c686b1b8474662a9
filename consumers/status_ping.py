"""``/ws/status-ping``: where consumers answer the broker's ping and api_info probes."""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from pydantic import ValidationError

from app import codec
from app.availability.answers import ApiInfoWrite, api_info_problem
from app.availability.services import status_of
from app.broker import services
from app.broker.runtime import get_runtime
from app.broker.topics import TopicView
from consumers.base import AckingConsumer, context_echo, describe
from consumers.frames import ProducerAck, ProducerFrame


class StatusPingConsumer(AckingConsumer):

    metrics_kind = "status_ping"
    async def on_connect(self) -> None:
        # Source topics this connection answered for, with its rights on them.
        self.topics: dict[str, TopicView] = {}
        self.runtime = get_runtime()

    async def on_disconnect(self) -> None:
        if hasattr(self, "runtime"):
            for slug in self.topics:
                self.runtime.hub.unwatch(slug, self)

    def recheck_rights(self) -> None:
        """Rights changed on a topic this socket answered for: look them up again."""
        for slug in self.topics:
            self.runtime.hub.unwatch(slug, self)
        self.topics.clear()

    async def on_frame(self, raw: dict[str, Any]) -> None:
        try:
            frame = ProducerFrame.model_validate(raw)
        except ValidationError as exc:
            self.refuse(f"invalid frame: {describe(exc)}", raw)
            return
        source = frame.properties.get("source_topic")
        if not isinstance(source, str) or not source:
            self.refuse("no source_topic in properties", raw)
            return
        topic = self.topics.get(source)
        if topic is None:
            topic = await self.runtime.topic_view(source, self.user, self.principal)
            if topic is None:
                self.refuse(f"topic {source} does not exist", raw)
                return
            self.topics[source] = topic
            self.runtime.hub.watch(source, self)
        if not topic.rights.consume:
            self.refuse(f"not allowed to answer for topic {source}", raw)
            return
        kind = frame.properties.get("messageType")
        api_info = frame.properties.get("api_info")
        writes, now = self.runtime.answer_writes, self.runtime.loop.time()
        if kind == "pong":
            if writes.pong(source, now):
                try:
                    await database_sync_to_async(services.record_pong)(topic.id)
                except BaseException:
                    writes.pong_failed(source)
                    raise
                status = await database_sync_to_async(status_of)(topic.id)
                self.runtime.board.update(status, self.runtime.loop.time())
        elif isinstance(api_info, str):
            try:
                info = codec.loads(api_info)
            except codec.DecodeError as exc:
                too_deep = codec.too_deep_to_parse(exc)
                self.refuse(f"api_info nests deeper than {codec.MAX_DEPTH} levels" if too_deep
                            else "api_info is not valid JSON", raw)
                return
            problem = api_info_problem(api_info, info, max_bytes=settings.MAX_API_INFO_BYTES)
            if problem is not None:
                self.refuse(problem, raw)
                return
            decision = writes.api_info(source, api_info, now)
            if decision is ApiInfoWrite.TOO_SOON:
                self.refuse(f"api_info for topic {source} changed again within {writes.min_interval_s:g} s; "
                            "answer again later", raw)
                return
            if decision is ApiInfoWrite.WRITE:
                try:
                    await database_sync_to_async(services.record_api_info)(topic.id, info)
                except BaseException:
                    writes.api_info_failed(source)
                    raise
        else:
            self.refuse(f"expected a pong or an api_info response, got messageType {kind!r}", raw)
            return
        self.push_model(ProducerAck(messageId=frame.messageId or str(uuid.uuid4()), result="ok", **context_echo(raw)))
