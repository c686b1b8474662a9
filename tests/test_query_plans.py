"""SQLite's query plans on the hot paths whose tables grow without bound: no statement walks the
table (a scan, or a range of rowids) where an index would bound it by the rows still open.

SQLite uses a partial index only when the query states the index's condition itself; a statement
that misses it works and answers right, and only grows slower as the table fills, which no other
test sees. These read the plan of each statement the operation ran.

The tables that count, because they grow with the traffic: stored messages (broker_message), their
delivery rows (broker_delivery) and subscription rows (pulsar_subscriptionmessage), the
announcements (broker_announcement), work requests (work_workrequest), outbox events
(outbox_outboxevent) and tokens (switchyard_auth_token: one per worker or client). A walk of a small table
(topics, users, workers, subscriptions) is left to SQLite's choice: on a few rows a scan is what it
should pick, and those tables grow with the deployment, not with its traffic."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from app.api.work_requests import WorkRequestFilter
from app.api.work_requests import _list as list_requests
from app.auth.models import Token
from app.auth.services import create_token, token_for_key
from app.broker import announcements
from app.broker.models import Announcement, Delivery, Message, Topic
from app.broker.policy import StorePolicy
from app.broker.services import (
    Ack,
    NewMessage,
    SubscriptionAck,
    get_topic,
    keep_response_topics,
    outstanding,
    write_batch,
)
from app.outbox import claims
from app.outbox.claims import Settlement, claim
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent
from app.pulsar.delays import Mark
from app.pulsar.models import SubscriptionMessage
from app.pulsar.services import backlog, due_messages, expire_subscriptions, open_subscription
from app.work import queue, reports, transitions, workers
from app.work.changes import read_changes
from app.work.models import Status, WorkRequest
from app.work.submission import submit
from tests.outbox import clear_outbox
from tests.protocol import make_topic, make_user, unique
from tests.work import clear_work, completed, pending, running, worker

# A plan step that reads a table row by row: a full scan, or every rowid below or above a bound.
WALK = re.compile(r"\bSCAN (?!.*\bUSING (COVERING )?INDEX\b)|USING INTEGER PRIMARY KEY \(rowid[<>]")
STEP = re.compile(r"^(?:SCAN|SEARCH) (\S+)")
NOT_ALIASES = {"WHERE", "SET", "ON", "AS", "INNER", "LEFT", "JOIN", "GROUP", "ORDER", "LIMIT", "VALUES", "USING",
               "WHEN", "THEN", "AND", "OR", "RETURNING", "DEFAULT", "SELECT"}
MESSAGES, DELIVERIES = Message._meta.db_table, Delivery._meta.db_table
SUBSCRIPTION_MESSAGES = SubscriptionMessage._meta.db_table
ANNOUNCEMENTS, TOKENS, TOPICS = Announcement._meta.db_table, Token._meta.db_table, Topic._meta.db_table
WORK, OUTBOX = WorkRequest._meta.db_table, OutboxEvent._meta.db_table


@pytest.fixture(autouse=True)
def _sqlite() -> Iterator[None]:
    if connection.vendor != "sqlite":
        pytest.skip("these read SQLite's planner; PostgreSQL's plans depend on its statistics")
    clear_outbox()
    clear_work()
    yield


def _names(table: str, sql: str) -> set[str]:
    """``table`` and the aliases ``sql`` gives it (a plan step names a table by its alias)."""
    found = re.findall(rf'"?\b{table}\b"?\s+(?:AS\s+)?"?(\w+)"?', sql, re.IGNORECASE)
    return {table, *(alias for alias in found if alias.upper() not in NOT_ALIASES)}


def walks(operation: Callable[[], object], table: str, *, expected: Collection[str] = (),
          unbounded: Collection[str] = ()) -> list[str]:
    """The statements ``operation`` ran on ``table`` whose plan walks it, each with its plan.
    ``expected``: plan steps that read the rows the operation is for (the rows after a feed's
    cursor), not a walk. ``unbounded``: indexes that, read as this operation would read them, hold
    every row of a status that grows (all published events, all pending requests): a walk too."""
    with CaptureQueriesContext(connection) as captured:
        operation()
    found = []
    raw = connection.connection
    for query in captured.captured_queries:
        sql = query["sql"]
        if table not in sql or not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
            continue
        # The group commit's statements are logged with their placeholders: any value plans alike.
        plan = [str(row[-1]) for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))]
        names = _names(table, sql)
        if any((WALK.search(step) or any(f"INDEX {index} " in step for index in unbounded))
               and (m := STEP.search(step)) and m.group(1) in names and step not in expected for step in plan):
            found.append(f"{sql}\n  " + "\n  ".join(plan))
    return found


# --- outbox ----------------------------------------------------------------------------------


def _outbox_rows() -> None:
    """A few published events, an open one per key and a waiting retry."""
    for n in range(3):
        emit("com.example.thing", "/things", {"n": n}, key=f"k{n}", target="topic")
    batch = claim("planner", 2)
    claims.settle("planner", Settlement(published=[event.pk for event in batch]))
    emit("com.example.thing", "/things", {"n": 9}, key="k9", target="topic")


def test_outbox_claim_reads_only_open_events() -> None:
    """Claiming key heads and the events queued behind them uses the open-events-by-key index."""
    for n in range(3):
        emit("com.example.thing", "/things", {"n": n}, key="a", target="topic")
    emit("com.example.thing", "/things", {"n": 3}, key="b", target="topic")
    assert walks(lambda: claim("planner", 10), OUTBOX) == []


def test_outbox_settle_reads_only_claimed_events() -> None:
    """Settling a batch (published, failed, released, deferred) reads the claimed rows by id."""
    _outbox_rows()
    batch = claim("planner", 10)
    pks = [event.pk for event in batch]
    settlement = Settlement(published=pks[:1], failed=[(pk, "no") for pk in pks[1:2]],
                            released=[(pk, "later") for pk in pks[2:3]], deferred=[(pk, "busy") for pk in pks[3:]])
    assert walks(lambda: claims.settle("planner", settlement), OUTBOX) == []


def test_outbox_next_due_reads_only_retries() -> None:
    """The earliest waiting retry is found among the open events, not every published one."""
    _outbox_rows()
    assert walks(lambda: claims.next_due(skip_targets=["rabbitmq"]), OUTBOX) == []


def test_outbox_prune_reads_only_published_events() -> None:
    """Pruning reads the published events through the prunable index."""
    _outbox_rows()
    prune = lambda: claims.prune(now=timezone.now() + timedelta(days=365))  # noqa: E731
    assert walks(prune, OUTBOX, unbounded={"outbox_status"}) == []


def test_outbox_stats_read_no_published_event_row_by_row() -> None:
    """Counting per status and finding the oldest open event use indexes."""
    _outbox_rows()
    assert walks(claims.stats, OUTBOX) == []


def test_outbox_retry_reads_only_dead_letters_and_retries() -> None:
    """Putting dead letters back in the queue reads only failed and waiting events."""
    _outbox_rows()
    assert walks(claims.retry, OUTBOX) == []


# --- work requests ---------------------------------------------------------------------------


def _work_rows() -> None:
    """Finished requests to walk past, and a pending and a running one."""
    completed(), completed(), pending(), running()


def test_submit_counts_only_the_creators_pending_requests() -> None:
    """Submission (the creator's quota, the new row, its event) reads no finished request."""
    user = make_user()
    _work_rows()
    assert walks(lambda: submit("noop", {}, created_by=user), WORK) == []


def test_queue_candidates_read_the_pending_queue() -> None:
    """A page of the scheduler's queue walks only the pending-queue index."""
    _work_rows()
    assert walks(queue.candidates, WORK) == []


def test_worker_search_reads_only_pending_and_running_requests() -> None:
    """A worker's search (its free slots, the queue, the assignment) reads no finished request."""
    _work_rows()
    taker = worker(concurrency=2)
    running(on=taker)
    assert walks(lambda: queue.search(taker.pk), WORK) == []


def test_claim_reads_only_the_request_and_the_workers_running_ones() -> None:
    """Assigning a request counts the worker's running requests through its index."""
    _work_rows()
    taker, request = worker(), pending()
    assert walks(lambda: transitions.claim(request.pk, taker.pk), WORK) == []


def test_complete_reads_only_the_request_and_its_dependents() -> None:
    """Completing a request reads it and its pending dependents, no other row."""
    _work_rows()
    request = running()
    assert walks(lambda: transitions.complete(request.pk, "success"), WORK, unbounded={"work_status_completed"}) == []


def test_complete_own_reads_only_the_workers_request() -> None:
    """A worker's completion report reads only the request it names."""
    _work_rows()
    taker = worker()
    request = running(on=taker)
    assert walks(lambda: reports.complete_own(taker.pk, request.pk, "success"), WORK) == []


def test_abort_reads_only_the_request_and_its_dependents() -> None:
    """Aborting a pending request reads it and its dependents, no other row."""
    _work_rows()
    request = pending()
    assert walks(lambda: transitions.abort(request.pk), WORK, unbounded={"work_status_completed"}) == []


def test_lost_worker_release_reads_only_its_running_requests() -> None:
    """A lost worker's requests go back to pending found through the running-by-worker index."""
    _work_rows()
    taker = worker(concurrency=2)
    running(on=taker), running(on=taker)
    assert walks(lambda: workers.release_requests(taker.pk), WORK) == []


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING, Status.COMPLETED])
def test_work_request_list_by_status_walks_no_request(status: Status) -> None:
    """The work-request list filtered by status reads through the status index, not row by row."""
    _work_rows()
    staff, filters = make_user(is_superuser=True), WorkRequestFilter(status=status)
    request = RequestFactory().get("/api/work-requests/")
    assert walks(lambda: list_requests(request, staff, filters), WORK) == []


def test_work_feed_reads_only_outbox_rows_after_the_cursor_and_holes() -> None:
    """The work-request feed reads the outbox rows after its cursor and its holes, not every row below."""
    _work_rows()
    last = OutboxEvent.objects.order_by("-id").values_list("id", flat=True)[0]
    found = walks(lambda: read_changes(last - 1, [last - 3], 100), OUTBOX, expected=after_cursor(OUTBOX))
    assert found == []


# --- broker ----------------------------------------------------------------------------------


def _message(topic_id: int) -> NewMessage:
    return NewMessage(topic_id=topic_id, message_id=uuid.uuid4(), producer_id=None, producer_principal="anonymous",
                      properties={}, payload="cGF5", context=None, publish_time=datetime.now(UTC), frame="{}")


def _stored(policy: str, count: int = 3) -> tuple[Topic, list[NewMessage]]:
    topic = Topic.objects.get(slug=make_topic(policy=policy, dasf=False))
    messages = [_message(topic.pk) for _ in range(count)]
    write_batch(messages)
    return topic, messages


def test_publish_writes_without_reading_stored_messages() -> None:
    """Storing a batch of messages reads no stored message."""
    topic, _ = _stored("store")
    assert walks(lambda: write_batch([_message(topic.pk) for _ in range(3)]), MESSAGES) == []


@pytest.mark.parametrize("policy", ["cache", "store"])
def test_ack_reads_only_the_acked_messages(policy: str) -> None:
    """An ack (deleting under cache, recorded under store) finds its messages by topic and id."""
    topic, messages = _stored(policy)
    ack = Ack(topic.pk, StorePolicy(policy), messages[0].message_id, "someone")
    for table in (MESSAGES, DELIVERIES):
        assert walks(lambda: write_batch([ack]), table) == [], table


def test_replay_reads_only_the_topics_unacked_messages() -> None:
    """A reconnect's replay of what a principal has not acked reads the topic's messages in order."""
    topic, messages = _stored("store")
    write_batch([Ack(topic.pk, StorePolicy.STORE, messages[0].message_id, "someone")])
    for table in (MESSAGES, DELIVERIES):
        assert walks(lambda: outstanding(topic.pk, StorePolicy.STORE, "someone"), table) == [], table


def test_get_topic_reads_no_message() -> None:
    """Looking a topic up by name reads no stored message (only the topics' unique name index)."""
    topic, _ = _stored("store")
    assert walks(lambda: get_topic(topic.slug), TOPICS) == []


def test_keep_response_topics_reads_them_by_name() -> None:
    """Keeping response topics in use finds them by their unique name."""
    topic, _ = _stored("store")
    assert walks(lambda: keep_response_topics([topic.slug]), TOPICS) == []


def _subscribed(policy: str) -> tuple[Topic, int, list[NewMessage]]:
    topic = Topic.objects.get(slug=make_topic(policy=policy, dasf=False))
    subscription = open_subscription(topic.pk, unique("sub"), "Shared", "someone")
    messages = [_message(topic.pk) for _ in range(3)]
    write_batch(messages)
    return topic, subscription.id, messages


def test_subscription_ack_reads_only_the_acked_messages() -> None:
    """A subscription's ack (its rows, the cursor's advance, the removal rule) reads by sequence."""
    topic, subscription, messages = _subscribed("cache")
    ack = SubscriptionAck(topic.pk, StorePolicy.CACHE, subscription, messages[1].message_id, "someone")
    for table in (MESSAGES, DELIVERIES, SUBSCRIPTION_MESSAGES):
        assert walks(lambda: write_batch([ack]), table) == [], table


def test_subscription_backlog_reads_only_messages_above_its_cursor() -> None:
    """A subscription's catch-up page reads the topic's messages above its cursor."""
    _, subscription, _ = _subscribed("store")
    for table in (MESSAGES, SUBSCRIPTION_MESSAGES):
        assert walks(lambda: backlog(subscription, after=0, limit=10), table) == [], table


def test_subscription_due_messages_read_only_held_ones() -> None:
    """Delayed messages coming due are read through the topic's delayed index."""
    _, subscription, _ = _subscribed("store")
    now = timezone.now()
    for table in (MESSAGES, SUBSCRIPTION_MESSAGES):
        found = walks(lambda: due_messages(subscription, released=Mark(now), now=now, through=10, limit=10), table)
        assert found == [], table


def test_subscription_expiry_reads_no_message() -> None:
    """Expiring idle subscriptions (their rows, the release of their messages) reads by subscription."""
    _subscribed("cache")
    later = timezone.now() + timedelta(days=3650)
    for table in (MESSAGES, SUBSCRIPTION_MESSAGES):
        assert walks(lambda: expire_subscriptions(later), table) == [], table


def after_cursor(table: str) -> set[str]:
    """The plan step of a feed's read of the rows after its cursor: those are what it reads."""
    return {f"SEARCH {table} USING INTEGER PRIMARY KEY (rowid>?)"}


def test_announcements_read_only_rows_after_the_cursor_and_holes() -> None:
    """The announcement loop reads the rows after its cursor and its holes by id, not every row below."""
    for _ in range(4):
        announcements.record_rights(unique("t"), exists=True, response=False, origin="")
    last = announcements.newest_ids()[0]
    found = walks(lambda: announcements.read(last - 1, [last - 3]), ANNOUNCEMENTS, expected=after_cursor(ANNOUNCEMENTS))
    assert found == []


def test_announcements_prune_reads_only_old_rows() -> None:
    """Pruning announcements reads the old rows through the creation-time index."""
    announcements.record_rights(unique("t"), exists=True, response=False, origin="")
    assert walks(lambda: announcements.prune(retention_s=3600), ANNOUNCEMENTS) == []


# --- auth ------------------------------------------------------------------------------------


def test_token_for_key_reads_one_token() -> None:
    """A key finds its token through the unique hash index."""
    user = make_user()
    for _ in range(3):
        create_token(user)
    _, key = create_token(user)
    assert walks(lambda: token_for_key(key), TOKENS) == []
