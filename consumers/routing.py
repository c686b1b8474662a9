"""Websocket routes: the DASF shape and the Pulsar shape reach the same topics."""

from __future__ import annotations

from typing import Any

from django.urls import re_path

from app.broker.models import STATUS_PING_TOPIC, SUBSCRIPTION_PATTERN, TOPIC_PATTERN
from consumers.not_found import NotFoundConsumer
from consumers.producer import TopicProducer
from consumers.pulsar_consumer import PulsarConsumer
from consumers.pulsar_producer import PulsarProducer
from consumers.pulsar_reader import TopicReader
from consumers.pulsar_routing import PulsarConsumerRoute
from consumers.status_ping import StatusPingConsumer
from consumers.status_viewer import StatusViewerConsumer
from consumers.subscriber import TopicConsumer
from consumers.work_requests import WorkRequestsConsumer
from consumers.worker import WorkerConsumer

TOPIC = rf"(?P<topic>{TOPIC_PATTERN})"
SUBSCRIPTION = rf"(?P<subscription>{SUBSCRIPTION_PATTERN})"
# persistence / tenant / namespace: accepted and ignored, topics are one namespace.
PULSAR_PRODUCER = r"ws/v2/producer/[^/]+/[^/]+/[^/]+"
PULSAR_CONSUMER = r"ws/v2/consumer/[^/]+/[^/]+/[^/]+"
PULSAR_READER = r"ws/v2/reader/[^/]+/[^/]+/[^/]+"
# An ASGI app, typed Any as the consumers' as_asgi() are (re_path is typed for Django views).
pulsar_consumer_route: Any = PulsarConsumerRoute()

websocket_urlpatterns = [
    re_path(r"^ws/status/?$", StatusViewerConsumer.as_asgi()),
    re_path(r"^ws/work-requests/?$", WorkRequestsConsumer.as_asgi()),  # before ws/<topic>/
    re_path(rf"^ws/{STATUS_PING_TOPIC}/?$", StatusPingConsumer.as_asgi()),
    re_path(rf"^{PULSAR_PRODUCER}/{STATUS_PING_TOPIC}/?$", StatusPingConsumer.as_asgi()),
    re_path(r"^ws/workers/?$", WorkerConsumer.as_asgi()),  # before ws/<topic>: "workers" is reserved
    re_path(rf"^{PULSAR_PRODUCER}/{TOPIC}/?$", PulsarProducer.as_asgi()),
    re_path(rf"^{PULSAR_CONSUMER}/{TOPIC}/{SUBSCRIPTION}/?$", pulsar_consumer_route),
    re_path(rf"^{PULSAR_CONSUMER}/{TOPIC}/?$", PulsarConsumer.as_asgi()),  # no subscription: 400
    re_path(rf"^{PULSAR_READER}/{TOPIC}/?$", TopicReader.as_asgi()),
    re_path(rf"^ws/{TOPIC}/?$", TopicProducer.as_asgi()),
    re_path(rf"^ws/{TOPIC}/{SUBSCRIPTION}/?$", TopicConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
