"""The relay's side of the outbox table: claims per key, settling, retries, dead letters, pruning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db.models import Q
from django.test import override_settings
from django.utils import timezone

from app.outbox.claims import Settlement, claim, next_due, prune, retry, settle, settle_and_claim, stats
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from tests.outbox import clear_outbox

WAITING = "waiting for the key's head"


@pytest.fixture(autouse=True)
def _clean_outbox() -> Iterator[None]:
    clear_outbox()
    yield


def emit_events(count: int, key: str | None = None, target: str = "topic") -> list[int]:
    """``count`` events (of ``key``), their pks in emit order."""
    return [emit("com.example.thing", "/things", {"n": n}, key=key, target=target).pk for n in range(count)]  # type: ignore[arg-type]


def pks(holder: str, limit: int = 100, **options: object) -> list[int]:
    return [event.pk for event in claim(holder, limit, **options)]  # type: ignore[arg-type]


def row(pk: int) -> OutboxEvent:
    return OutboxEvent.objects.get(pk=pk)


def fail_head(holder: str, head: int, rest: list[int], now: datetime) -> datetime:
    """Claim at ``now``, have ``head`` refused and the rest released; when the head is due again."""
    assert pks(holder, now=now) == [head, *rest]
    settle(holder, Settlement(failed=[(head, "refused")], released=[(pk, WAITING) for pk in rest]), now=now)
    return row(head).next_attempt_at


# --- claiming ------------------------------------------------------------------------------------


def test_claim_takes_head_and_successors_in_order() -> None:
    """A key's head is claimed with the events queued behind it, everything in pk order."""
    a1 = emit_events(1, "a")
    b1 = emit_events(1, "b")
    a2_a3 = emit_events(2, "a")
    assert pks("h1") == [*a1, *b1, *a2_a3]
    assert {row(pk).claimed_by for pk in [*a1, *b1, *a2_a3]} == {"h1"}


def test_held_key_claims_nothing_for_others() -> None:
    """While one holder has a key's head, another holder gets none of that key's events."""
    first, *rest = emit_events(3, "a")
    assert pks("h1", limit=1) == [first]
    emit_events(1, "a")
    assert pks("h2") == []
    assert all(row(pk).status == Status.PENDING for pk in rest)


def test_keyless_events_claimable_independently() -> None:
    """Keyless events do not wait for one another: a second holder takes those the first left."""
    events = emit_events(3)
    assert pks("h1", limit=1) == events[:1]
    assert pks("h2") == events[1:]


def test_skip_targets_excluded() -> None:
    """Events bound for a skipped target are not claimed; the others are."""
    with override_settings(OUTBOX_REDIS_URL="redis://127.0.0.1:1/0"):
        to_redis = emit_events(1, target="redis")
        to_topic = emit_events(1, target="topic")
    assert pks("h1", skip_targets={"redis"}) == to_topic
    assert pks("h2") == to_redis


def test_nothing_claimed_before_it_is_due() -> None:
    """A claim dated before an event's next attempt time does not take it."""
    before = timezone.now()
    emit_events(1, "a")
    assert pks("h1", now=before - timedelta(seconds=1)) == []


def test_holder_claims_behind_its_own_claims_only_when_asked() -> None:
    """With behind_own, a key's events behind the holder's own claimed ones are claimable by it; by
    no one else, and not by it without behind_own."""
    first, *rest = emit_events(3, "a")
    assert pks("h1", limit=1) == [first]
    assert pks("h1") == []
    assert pks("h2", behind_own=True) == []
    assert pks("h1", behind_own=True) == rest


def test_claim_behind_own_stops_at_a_foreign_event() -> None:
    """Behind the holder's own event, a retry waiting for its time still holds back the rest of the key."""
    head, waiting, last = emit_events(3, "a")
    now = timezone.now()
    assert pks("h1", limit=1, now=now) == [head]
    OutboxEvent.objects.filter(pk=waiting).update(status=Status.RETRY, next_attempt_at=now + timedelta(hours=1))
    assert pks("h1", behind_own=True, now=now) == []
    assert row(last).status == Status.PENDING


def test_settle_and_claim_records_and_claims_in_one_call() -> None:
    """settle_and_claim marks the published ones and claims the key's next events behind the rest."""
    events = emit_events(4, "a")
    assert pks("h1", limit=2) == events[:2]
    claimed, due = settle_and_claim("h1", Settlement(published=events[:1]), 10, due_if_none=True)
    assert [e.pk for e in claimed] == events[2:] and due is None
    assert [row(pk).status for pk in events] == [Status.PUBLISHED, *[Status.PROCESSING] * 3]


def test_settle_and_claim_with_nothing_left_says_when_a_retry_is_due() -> None:
    """Claiming nothing with due_if_none, settle_and_claim returns the next retry's time."""
    head, *rest = emit_events(2, "a")
    due = fail_head("h1", head, rest, timezone.now())
    assert settle_and_claim("h2", Settlement(), 10, due_if_none=True) == ([], due)


# --- failures and retries ------------------------------------------------------------------------


def test_refused_head_waits_in_retry() -> None:
    """A refused head goes to retry with one attempt counted and its next attempt in the future."""
    head, *rest = emit_events(3, "a")
    now = timezone.now()
    due = fail_head("h1", head, rest, now)
    event = row(head)
    assert (event.status, event.attempts, event.last_error, event.claimed_by) == (Status.RETRY, 1, "refused", None)
    assert due > now
    assert next_due() == due


def test_successors_wait_behind_a_retry() -> None:
    """The released successors of a head in retry stay unclaimable until the head is due again."""
    head, *rest = emit_events(3, "a")
    now = timezone.now()
    due = fail_head("h1", head, rest, now)
    assert [row(pk).status for pk in rest] == [Status.PENDING, Status.PENDING]
    assert pks("h2", now=now) == []
    assert pks("h2", now=due) == [head, *rest]


def test_successors_flow_once_head_published() -> None:
    """Once the head is published, its released successors are claimable."""
    head, *rest = emit_events(3, "a")
    assert pks("h1") == [head, *rest]
    settle("h1", Settlement(published=[head], released=[(pk, WAITING) for pk in rest]))
    assert row(head).status == Status.PUBLISHED
    assert pks("h2") == rest


def test_other_keys_flow_during_a_retry() -> None:
    """A key in retry holds back only its own events."""
    head, *rest = emit_events(2, "a")
    now = timezone.now()
    fail_head("h1", head, rest, now)
    other = emit_events(2, "b")
    assert pks("h2") == other


@override_settings(OUTBOX_MAX_ATTEMPTS=2, OUTBOX_FAILED_BLOCKS_KEY=True)
def test_failed_event_blocks_its_key() -> None:
    """After OUTBOX_MAX_ATTEMPTS refusals the event is failed and its successors wait for it."""
    head, *rest = emit_events(3, "a")
    due = fail_head("h1", head, rest, timezone.now())
    assert row(head).status == Status.RETRY
    fail_head("h1", head, rest, due)
    event = row(head)
    assert (event.status, event.attempts) == (Status.FAILED, 2)
    assert pks("h2", now=timezone.now() + timedelta(days=1)) == []
    assert next_due() is None


@override_settings(OUTBOX_MAX_ATTEMPTS=1, OUTBOX_FAILED_BLOCKS_KEY=False)
def test_failed_event_skipped_when_not_blocking() -> None:
    """With OUTBOX_FAILED_BLOCKS_KEY off, a failed event's successors go on without it."""
    head, *rest = emit_events(3, "a")
    fail_head("h1", head, rest, timezone.now())
    assert row(head).status == Status.FAILED
    assert pks("h2") == rest


@override_settings(OUTBOX_MAX_ATTEMPTS=1)
def test_retry_requeues_failed_events() -> None:
    """retry() puts a failed event back to pending with no attempts counted, claimable at once."""
    head, *rest = emit_events(2, "a")
    fail_head("h1", head, rest, timezone.now())
    assert retry() == 1
    event = row(head)
    assert (event.status, event.attempts) == (Status.PENDING, 0)
    assert pks("h2") == [head, *rest]


@override_settings(OUTBOX_MAX_ATTEMPTS=1)
def test_retry_selects_by_query() -> None:
    """retry(Q) touches only the dead letters it selects."""
    a = emit_events(1, "a")
    b = emit_events(1, "b")
    now = timezone.now()
    assert pks("h1", now=now) == [*a, *b]
    settle("h1", Settlement(failed=[(a[0], "refused"), (b[0], "refused")]), now=now)
    assert retry(Q(key="b")) == 1
    assert (row(a[0]).status, row(b[0]).status) == (Status.FAILED, Status.PENDING)


@override_settings(OUTBOX_FAILED_BLOCKS_KEY=False)
def test_requeued_dead_letter_does_not_let_successors_skip_a_retry() -> None:
    """Behind a requeued dead letter, a waiting retry still goes before the events after it."""
    dead, waiting, last = emit_events(3, "a")
    with override_settings(OUTBOX_MAX_ATTEMPTS=1):
        fail_head("h1", dead, [waiting, last], timezone.now())
    due = fail_head("h1", waiting, [last], timezone.now())
    assert retry(Q(pk=dead)) == 1
    assert pks("h2", now=due) == [dead]
    settle("h2", Settlement(published=[dead]), now=due)
    assert pks("h2", now=due) == [waiting, last]


# --- claims that expire, releases ----------------------------------------------------------------


def test_expired_claim_taken_over() -> None:
    """A claim past OUTBOX_CLAIM_TTL_S is taken over by another holder, head and successors."""
    events = emit_events(2, "a")
    now = timezone.now()
    assert pks("h1", now=now) == events
    ttl = timedelta(seconds=settings.OUTBOX_CLAIM_TTL_S)
    assert pks("h2", now=now + ttl - timedelta(seconds=1)) == []
    assert pks("h2", now=now + ttl + timedelta(seconds=1)) == events
    assert {row(pk).claimed_by for pk in events} == {"h2"}


def test_settle_after_takeover_reports_lost() -> None:
    """The first holder's late settle counts the events as lost and leaves the rows alone."""
    events = emit_events(2, "a")
    now = timezone.now()
    assert pks("h1", now=now) == events
    later = now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL_S + 1)
    assert pks("h2", now=later) == events
    before = [(e.status, e.claimed_by, e.claimed_until, e.published_at) for e in map(row, events)]
    assert settle("h1", Settlement(published=events[:1], failed=[(events[1], "refused")])) == 2
    assert [(e.status, e.claimed_by, e.claimed_until, e.published_at) for e in map(row, events)] == before
    assert row(events[1]).attempts == 0


def test_released_events_go_back_to_pending() -> None:
    """Released events never attempted are pending again, unclaimed, claimable at once."""
    events = emit_events(2, "a")
    assert pks("h1") == events
    assert settle("h1", Settlement(released=[(pk, "relay stopped") for pk in events])) == 0
    for event in map(row, events):
        assert (event.status, event.claimed_by, event.claimed_until) == (Status.PENDING, None, None)
        assert event.last_error == "relay stopped"
    assert pks("h2") == events


def test_deferred_event_waits_as_a_retry_without_an_attempt() -> None:
    """A deferred (nacked) event goes back as a retry due after a back-off, no attempt counted; the
    successors released behind it wait for it."""
    head, *rest = emit_events(2, "a")
    now = timezone.now()
    assert pks("h1", now=now) == [head, *rest]
    settle("h1", Settlement(deferred=[(head, "nacked")], released=[(pk, WAITING) for pk in rest]), now=now)
    event = row(head)
    assert (event.status, event.attempts, event.last_error, event.claimed_by) == (Status.RETRY, 0, "nacked", None)
    assert event.next_attempt_at > now
    assert pks("h2", now=now) == []
    assert pks("h2", now=event.next_attempt_at) == [head, *rest]


def test_released_retry_stays_a_retry() -> None:
    """A released event that has failed before goes back as a retry, its attempts kept."""
    head, *rest = emit_events(2, "a")
    due = fail_head("h1", head, rest, timezone.now())
    assert pks("h2", now=due) == [head, *rest]
    settle("h2", Settlement(released=[(pk, "target unavailable") for pk in [head, *rest]]), now=due)
    assert (row(head).status, row(head).attempts) == (Status.RETRY, 1)
    assert row(rest[0]).status == Status.PENDING


# --- housekeeping --------------------------------------------------------------------------------


def test_prune_deletes_only_old_published() -> None:
    """prune() removes events published more than OUTBOX_RETENTION_S ago and nothing else."""
    old, recent, pending = emit_events(3)
    now = timezone.now()
    assert pks("h1", now=now) == [old, recent, pending]
    retention = timedelta(seconds=settings.OUTBOX_RETENTION_S)
    settle("h1", Settlement(published=[old]), now=now - retention - timedelta(seconds=1))
    settle("h1", Settlement(published=[recent]), now=now - retention + timedelta(seconds=1))
    settle("h1", Settlement(released=[(pending, "later")]))
    assert prune(now=now) == 1
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {recent, pending}


def test_stats_counts_and_lag() -> None:
    """stats() counts events per status and measures the age of the oldest unpublished one."""
    statuses = [Status.PENDING, Status.PENDING, Status.PROCESSING, Status.RETRY, Status.PUBLISHED, Status.FAILED]
    events = emit_events(len(statuses))
    now = timezone.now()
    for pk, status, age in zip(events, statuses, [30, 5, 10, 20, 600, 900], strict=True):
        OutboxEvent.objects.filter(pk=pk).update(status=status, created_at=now - timedelta(seconds=age))
    assert stats(now=now) == {
        "pending": 2.0, "processing": 1.0, "published": 1.0, "retry": 1.0, "failed": 1.0, "lag_s": 30.0,
    }


def test_stats_of_settled_outbox_has_no_lag() -> None:
    """With nothing left to publish the lag is zero."""
    events = emit_events(1)
    assert pks("h1") == events
    settle("h1", Settlement(published=events))
    assert stats()["lag_s"] == 0.0
