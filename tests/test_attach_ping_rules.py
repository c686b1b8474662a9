"""Pings on attach, without a server: which attach asks for one, the per-topic rate limit, when the
ping moves ``last_ping``, and that it never turns a dead consumer's topic online."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from app.availability.attach_pings import AttachPing, AttachPings, pings_on_attach
from app.availability.rules import Availability, attach_ping_marks, availability
from app.availability.services import start_attach_pings
from app.broker.models import Topic
from tests.protocol import make_topic, unique

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
WINDOW, GRACE, INTERVAL = 120.0, 10.0, 60.0
RULE = {"window_s": WINDOW, "grace_s": GRACE, "interval_s": INTERVAL}
MIN_INTERVAL_S = 10.0


def ago(seconds: float | None, now: datetime = NOW) -> datetime | None:
    return None if seconds is None else now - timedelta(seconds=seconds)


ATTACHES = [
    # (supports_dasf, is_response_topic, expected, why)
    (True, False, True, "a consumer of a DASF source topic"),
    (True, True, False, "a response topic: its consumer is a requester"),
    (False, False, False, "the topic is excluded from pings"),
    (False, True, False, "nothing qualifies"),
]


@pytest.mark.parametrize(("dasf", "response", "expected", "why"), ATTACHES, ids=[a[3] for a in ATTACHES])
def test_which_attach_asks_for_a_ping(dasf, response, expected, why):
    """Only consumers of DASF source topics ask for a ping."""
    assert pings_on_attach(supports_dasf=dasf, is_response_topic=response) is expected, why


MARKS = [
    # (seconds since last ping, marks, why)
    (None, True, "never pinged (a topic created after the last round)"),
    (INTERVAL + 30, True, "no round for more than an interval (no relay, or its leader died)"),
    (INTERVAL, True, "exactly one interval"),
    (INTERVAL - 1, False, "a round within the interval: any later pong answers it"),
    (0.5, False, "pinged a moment ago"),
]


@pytest.mark.parametrize(("ping", "marks", "why"), MARKS, ids=[m[2] for m in MARKS])
def test_when_an_attach_ping_moves_last_ping(ping, marks, why):
    """The attach ping is recorded as last_ping only when the latest ping is an interval old, or none."""
    assert attach_ping_marks(NOW, ago(ping), interval_s=INTERVAL) is marks, why


@pytest.mark.parametrize("ping", [None, 0.0, 5.0, INTERVAL - 1, INTERVAL, 100.0, 500.0])
def test_pong_to_an_attach_ping_is_online(ping):
    """Whatever the latest ping was, the pong that answers the attach ping makes the topic online."""
    last_ping = ago(ping)
    if attach_ping_marks(NOW, last_ping, interval_s=INTERVAL):
        last_ping = NOW
    pong_at = NOW + timedelta(seconds=0.2)
    assert availability(pong_at, last_ping, pong_at, **RULE) is Availability.ONLINE


def offline_states() -> list[tuple[float, float]]:
    """(seconds since last ping, seconds since last pong) of every offline topic on a 1 s grid."""
    found = []
    for ping in range(0, int(WINDOW) + 1):
        for pong in range(0, int(WINDOW) + 1):
            if availability(NOW, ago(ping), ago(pong), **RULE) is Availability.OFFLINE:
                found.append((float(ping), float(pong)))
    return found


def test_attach_ping_never_turns_a_dead_consumer_online():
    """From any offline state, an attach ping nobody answers keeps the topic offline (or unknown) until
    the next round: no flicker to online."""
    states = offline_states()
    assert states
    for ping, pong in states:
        last_ping, last_pong = ago(ping), ago(pong)
        if attach_ping_marks(NOW, last_ping, interval_s=INTERVAL):
            last_ping = NOW
        for later in range(0, int(GRACE) * 3):
            when = NOW + timedelta(seconds=later)
            assert availability(when, last_ping, last_pong, **RULE) is not Availability.ONLINE, (ping, pong, later)


def test_marking_every_attach_ping_would_flicker():
    """Why the attach ping leaves a fresh last_ping alone: moved, a module that answered api_info 30 s
    before missing the round would be online again for the grace."""
    last_ping, last_pong = ago(GRACE + 1), ago(GRACE + 1 + 30)
    assert availability(NOW, last_ping, last_pong, **RULE) is Availability.OFFLINE
    assert availability(NOW, NOW, last_pong, **RULE) is Availability.ONLINE  # the flicker avoided
    assert not attach_ping_marks(NOW, last_ping, interval_s=INTERVAL)


def test_first_attach_is_pinged_at_once():
    """A topic not pinged for an attach lately is due at once; it then counts as sent."""
    pings = AttachPings(MIN_INTERVAL_S)
    assert pings.wait_s(0.0) is None
    assert pings.request("a", 1, 100.0) == 100.0
    assert pings.wait_s(100.0) == 0.0
    assert pings.due(100.0) == [AttachPing("a", 1)]
    assert pings.due(100.0) == [] and pings.wait_s(100.0) is None


def test_attach_within_the_interval_is_coalesced_to_its_end():
    """Attaches within the interval after a ping share one ping at its end (not dropped, not one each)."""
    pings = AttachPings(MIN_INTERVAL_S)
    pings.request("a", 1, 100.0)
    pings.due(100.0)
    assert pings.request("a", 1, 103.0) == 110.0
    assert pings.request("a", 1, 105.0) == 110.0
    assert len(pings) == 1
    assert pings.wait_s(105.0) == pytest.approx(5.0)
    assert pings.due(109.9) == []
    assert pings.due(110.0) == [AttachPing("a", 1)]


def test_rate_limit_is_per_topic():
    """A ping for one topic does not delay another's."""
    pings = AttachPings(MIN_INTERVAL_S)
    pings.request("a", 1, 100.0)
    pings.due(100.0)
    assert pings.request("b", 2, 101.0) == 101.0
    assert pings.due(101.0) == [AttachPing("b", 2)]


def test_after_the_interval_an_attach_is_pinged_at_once():
    """Once the interval has passed since the last attach ping, the next attach is pinged at once."""
    pings = AttachPings(MIN_INTERVAL_S)
    pings.request("a", 1, 100.0)
    pings.due(100.0)
    assert pings.request("a", 1, 110.0) == 110.0


def test_flood_of_attaches_pings_once_per_interval():
    """Attaching every 10 ms for 100 s (a client looping connect / disconnect) sends one ping per interval."""
    pings = AttachPings(MIN_INTERVAL_S)
    sent: list[float] = []
    for step in range(10_000):
        now = step * 0.01
        pings.request("a", 1, now)
        sent.extend(now for _ in pings.due(now))
    assert len(sent) <= 100 / MIN_INTERVAL_S + 1
    assert all(b - a >= MIN_INTERVAL_S - 1e-9 for a, b in zip(sent, sent[1:], strict=False))


def test_min_interval_must_be_positive():
    """A zero interval would be no limit at all."""
    with pytest.raises(ValueError):
        AttachPings(0)


def test_start_attach_pings_only_dasf_source_topics():
    """Response topics and topics excluded from pings are neither marked nor returned."""
    source = make_topic()
    source_topic = Topic.objects.get(slug=source)
    response = Topic.objects.create(slug=f"{source}_{unique('r')}", response_for=source_topic)
    excluded = make_topic(dasf=False)
    ids = [source_topic.pk, response.pk, Topic.objects.get(slug=excluded).pk]
    assert start_attach_pings(ids, NOW) == [source]
    assert Topic.objects.get(pk=response.pk).last_ping is None
    assert Topic.objects.get(slug=excluded).last_ping is None
    assert Topic.objects.get(slug=source).last_ping == NOW


def test_start_attach_pings_keeps_a_fresh_ping():
    """A topic pinged within the interval keeps its last_ping; one pinged longer ago is marked."""
    fresh, stale = make_topic(), make_topic()
    interval = settings.PING_INTERVAL_S
    fresh_ping = ago(interval / 2)
    Topic.objects.filter(slug=fresh).update(last_ping=fresh_ping)
    Topic.objects.filter(slug=stale).update(last_ping=ago(interval + 1))
    ids = list(Topic.objects.filter(slug__in=[fresh, stale]).values_list("pk", flat=True))
    assert sorted(start_attach_pings(ids, NOW)) == sorted([fresh, stale])
    assert Topic.objects.get(slug=fresh).last_ping == fresh_ping
    assert Topic.objects.get(slug=stale).last_ping == NOW


def test_start_attach_pings_skips_online_topics():
    """An online topic is not pinged for an attach (its module answers the rounds); an offline one is."""
    online, offline = make_topic(), make_topic()
    pinged = ago(settings.PING_INTERVAL_S / 2)
    Topic.objects.filter(slug=online).update(last_ping=pinged, last_pong=ago(settings.PING_INTERVAL_S / 4))
    Topic.objects.filter(slug=offline).update(last_ping=pinged, last_pong=ago(settings.PING_INTERVAL_S * 1.5))
    assert Topic.objects.get(slug=online).availability(NOW) == "online"
    assert Topic.objects.get(slug=offline).availability(NOW) == "offline"
    ids = list(Topic.objects.filter(slug__in=[online, offline]).values_list("pk", flat=True))
    assert start_attach_pings(ids, NOW) == [offline]


def test_start_attach_pings_pings_a_topic_whose_answer_is_still_due():
    """A topic online only because the latest round's answer is still due (that ping may have reached
    only a dead module's socket) is pinged for an attach, keeping the round's last_ping."""
    slug = make_topic()
    pinged = ago(settings.PONG_GRACE_S / 3)
    Topic.objects.filter(slug=slug).update(last_ping=pinged, last_pong=ago(settings.PING_INTERVAL_S + 3))
    assert Topic.objects.get(slug=slug).availability(NOW) == "online"
    assert start_attach_pings([Topic.objects.get(slug=slug).pk], NOW) == [slug]
    assert Topic.objects.get(slug=slug).last_ping == pinged
