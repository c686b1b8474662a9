"""Prometheus metrics at ``/metrics`` (text format, through prometheus_client).

The hot path counts with plain integers on module-level objects (``TALLY``, ``Buckets``): one
attribute increment, no lock. prometheus_client's own counters take a lock per ``inc`` (and, in
multiprocess mode, write an mmap file), which a per-frame count would pay on every frame. A
collector turns the integers into metric families when ``/metrics`` is scraped.

One process, one registry: ``manage.py serve`` is one process (one event loop); several processes
are several instances on ports of their own (switchyard@PORT behind nginx), each scraped at its
own ``/metrics`` and summed in queries (``sum by (kind) (...)``). No PROMETHEUS_MULTIPROC_DIR.

Figures read from the database (outbox events by status, relay lag, availability by status) are
read per scrape (a few COUNT queries).
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from bisect import bisect_left
from collections.abc import Iterator
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Error frames by what was wrong (a bounded label set: the reason text itself is unbounded).
ERROR_CATEGORIES = ("json", "frame_size", "depth", "invalid", "unsupported", "permission", "internal", "other")
# The ``kind`` of each consumer class (``metrics_kind``), present from the start, at 0.
CONNECTION_KINDS = ("dasf_producer", "dasf_consumer", "pulsar_producer", "pulsar_consumer", "pulsar_reader",
                    "status_ping", "status_viewer", "work_requests", "worker", "not_found", "other")
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def error_category(reason: str) -> str:
    """The category of an error frame's reason, from a fixed set."""
    text = reason.lower()
    for words, category in (
        (("not valid json", "json object", "binary frames"), "json"),
        (("larger than",), "frame_size"),
        (("nest", "deep"), "depth"),
        (("invalid",), "invalid"),
        (("unsupported",), "unsupported"),
        (("permission", "not allowed", "forbidden", "may not"), "permission"),
        (("internal error",), "internal"),
    ):
        if any(word in text for word in words):
            return category
    return "other"


class Buckets:
    """A histogram in plain integers: ``observe`` is a bisect and two additions."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class Tally:
    """Process-wide counts, changed on the event loop (and the group-commit thread) without locks."""

    def __init__(self) -> None:
        self.connections = dict.fromkeys(CONNECTION_KINDS, 0)
        self.frames_in = 0
        self.frames_out = 0
        self.deliveries = 0
        self.acks = 0
        self.redeliveries = 0
        self.errors = dict.fromkeys(ERROR_CATEGORIES, 0)
        self.batch_rows = Buckets(ROWS_BUCKETS)
        self.commit_seconds = Buckets(SECONDS_BUCKETS)
        self.producer_ack_seconds = Buckets(SECONDS_BUCKETS)

    def error(self, reason: str) -> None:
        self.errors[error_category(reason)] += 1


TALLY = Tally()


def _database_figures(now: datetime) -> tuple[dict[str, float], dict[str, int]]:
    from app.availability.rules import answered_q, unknown_q
    from app.broker.models import Topic
    from app.outbox.claims import stats

    window, grace, interval = settings.AVAILABILITY_WINDOW_S, settings.PONG_GRACE_S, settings.PING_INTERVAL_S
    unknown = Q(unknown_q(now, window_s=window))
    topics = Topic.objects.order_by()
    online = topics.exclude(unknown).filter(answered_q(now, grace_s=grace, interval_s=interval)).count()
    unknown_count = topics.filter(unknown).count()
    availability = {"online": online, "offline": topics.count() - online - unknown_count, "unknown": unknown_count}
    return stats(now=now), availability


class _Collector(Collector):
    def __init__(self, outbox: dict[str, float], availability: dict[str, int]) -> None:
        self.outbox, self.availability = outbox, availability

    def collect(self) -> Iterator[Metric]:
        t = TALLY
        gauge = GaugeMetricFamily("switchyard_connections", "Open websocket connections by kind", labels=["kind"])
        for kind, count in sorted(t.connections.items()):
            gauge.add_metric([kind], count)
        yield gauge
        for name, doc, value in (
            ("switchyard_frames_in", "Websocket frames received", t.frames_in),
            ("switchyard_frames_out", "Websocket frames queued for sending", t.frames_out),
            ("switchyard_deliveries", "Messages handed to local consumer connections", t.deliveries),
            ("switchyard_acks", "Consumer acks received", t.acks),
            ("switchyard_redeliveries", "Messages delivered again (replays of unacknowledged ones)", t.redeliveries),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        errors = CounterMetricFamily("switchyard_error_frames", "Error frames sent, by reason category",
                                     labels=["reason"])
        for category, count in t.errors.items():
            errors.add_metric([category], count)
        yield errors
        yield t.batch_rows.family("switchyard_commit_batch_rows", "Operations per group-commit transaction")
        yield t.commit_seconds.family("switchyard_commit_seconds", "Group-commit transaction latency")
        yield t.producer_ack_seconds.family("switchyard_producer_ack_seconds",
                                            "From a message's submission to its commit (its producer ack)")
        events = GaugeMetricFamily("switchyard_outbox_events", "Outbox events by status", labels=["status"])
        for status, figure in self.outbox.items():
            if status != "lag_s":
                events.add_metric([status], figure)
        yield events
        yield GaugeMetricFamily("switchyard_outbox_lag_seconds", "Age of the oldest unpublished outbox event",
                                value=self.outbox.get("lag_s", 0.0))
        topics = GaugeMetricFamily("switchyard_topics_availability", "Topics by availability", labels=["status"])
        for status, count in self.availability.items():
            topics.add_metric([status], count)
        yield topics


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def may_scrape(request: HttpRequest) -> bool:
    """``METRICS_TOKEN`` set: only ``Authorization: Bearer <token>``; unset: loopback clients only."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return secrets.compare_digest(given.encode(), token.encode())
    return _is_loopback(request.META.get("REMOTE_ADDR") or "")


async def metrics(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus text format."""
    if not may_scrape(request):
        return HttpResponse("forbidden: /metrics is served to loopback clients or with METRICS_TOKEN\n",
                            status=403, content_type="text/plain")
    started = time.monotonic()
    outbox, availability = await database_sync_to_async(_database_figures)(timezone.now())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(outbox, availability))
    body = generate_latest(registry)
    body += (f"# HELP switchyard_scrape_seconds Time to gather these metrics\n# TYPE switchyard_scrape_seconds gauge\n"
             f"switchyard_scrape_seconds {time.monotonic() - started}\n").encode()
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")
