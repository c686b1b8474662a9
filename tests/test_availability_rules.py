"""The availability rule as a table, and the queryset filters agreeing with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.availability.rules import Availability, availability
from app.broker.models import Topic
from tests.protocol import make_topic

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
WINDOW, GRACE, INTERVAL = 120.0, 10.0, 60.0
RULE = {"window_s": WINDOW, "grace_s": GRACE, "interval_s": INTERVAL}


def ago(seconds: float | None) -> datetime | None:
    return None if seconds is None else NOW - timedelta(seconds=seconds)


CASES = [
    # (seconds since last ping, seconds since last pong, expected, why)
    (None, None, Availability.UNKNOWN, "never pinged"),
    (None, 5, Availability.UNKNOWN, "a pong but never pinged"),
    (200, 199, Availability.UNKNOWN, "last ping older than the window (no relay)"),
    (30, None, Availability.UNKNOWN, "pinged, never answered"),
    (30, 29, Availability.ONLINE, "answered the latest ping"),
    (30, 35, Availability.ONLINE, "pong just before the ping, within grace"),
    (5, 65, Availability.ONLINE, "answer still due, answered the previous round"),
    (5, 100, Availability.OFFLINE, "answer still due, but it missed the previous round"),
    (30, 90, Availability.OFFLINE, "pinged, not answered in time, heard from recently"),
    (11, 65, Availability.OFFLINE, "grace passed without an answer"),
    (30, 130, Availability.UNKNOWN, "not heard from within the window"),
]


@pytest.mark.parametrize(("ping", "pong", "expected", "why"), CASES, ids=[c[3] for c in CASES])
def test_rule(ping, pong, expected, why):
    """Each combination of last ping and last pong has one availability."""
    assert availability(NOW, ago(ping), ago(pong), **RULE) is expected, why


@pytest.mark.parametrize(("ping", "pong", "expected", "why"), CASES, ids=[c[3] for c in CASES])
def test_queryset_agrees(ping, pong, expected, why):
    """online() / offline() / unknown() select exactly the topics the rule classifies so."""
    slug = make_topic()
    Topic.objects.filter(slug=slug).update(last_ping=ago(ping), last_pong=ago(pong))
    found = {
        status
        for status, qs in (
            (Availability.ONLINE, Topic.objects.online(NOW, **RULE)),
            (Availability.OFFLINE, Topic.objects.offline(NOW, **RULE)),
            (Availability.UNKNOWN, Topic.objects.unknown(NOW, **RULE)),
        )
        if qs.filter(slug=slug).exists()
    }
    assert found == {expected}, why


def test_non_dasf_topics_are_unknown():
    """A topic excluded from pings is always unknown."""
    slug = make_topic(dasf=False)
    Topic.objects.filter(slug=slug).update(last_ping=ago(1), last_pong=ago(1))
    assert Topic.objects.unknown(NOW, **RULE).filter(slug=slug).exists()
