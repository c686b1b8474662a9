"""Subscription storage (docs/architecture.md 18.3, 18.4): plain synchronous functions on the ORM,
called through ``database_sync_to_async``. Acks and dead letters go through the group-commit writer
instead (app.broker.services.SubscriptionAck and DeadLetter, applied by app.pulsar.cursors)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Min, OuterRef, Q
from django.utils import timezone

from app.broker.acks import remove_done
from app.broker.admission import Refusal
from app.broker.models import Message, Topic
from app.broker.naming import topic_name_error
from app.broker.permissions import grant, may_add_topics, rights_on
from app.broker.policy import StorePolicy
from app.broker.quotas import creating_principal, hold_principal, topic_quota_error
from app.broker.services import Replay, TopicError
from app.broker.topics import TopicView
from app.leases.models import Lease
from app.pulsar.delays import Mark
from app.pulsar.models import Release, Subscription, SubscriptionMessage, SubscriptionType
from app.pulsar.redelivery import dead_letter_creation_problem, dead_letter_topic_problem

# Messages the removal rule is re-applied to per transaction when a subscription goes.
RELEASE_PAGE = 500


class SubscriptionRefused(Exception):
    """A subscription that may not be created (SUBSCRIPTIONS_PER_PRINCIPAL)."""


def lease_name(topic_id: int, subscription_id: int) -> str:
    """The lease of the process serving a subscription (app/pulsar/subscriptions.py). The id, not
    the name: a lease name has at most 64 characters, a subscription name 200."""
    return f"sub:{topic_id}:{subscription_id}"


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    id: int
    topic_id: int
    name: str
    type: str
    start_sequence: int
    acked_through: int
    created_by: str = ""

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionState:
        return cls(subscription.pk, subscription.topic_id, subscription.name, subscription.type,
                   subscription.start_sequence, subscription.acked_through, subscription.created_by)


def subscription_quota_error(principal: str) -> str | None:
    limit = settings.SUBSCRIPTIONS_PER_PRINCIPAL
    if Subscription.objects.filter(created_by=principal).count() >= limit:
        return f"subscription limit reached: {principal} has created {limit} subscriptions, the most allowed"
    return None


def open_subscription(topic_id: int, name: str, type: str, principal: str, user: Any = None) -> SubscriptionState:
    """Get or create (race-safe across processes); created: start_sequence = acked_through = the
    topic's last_sequence now (Pulsar's default initial position, latest), created_by ``principal``
    (``user``'s), counted by SUBSCRIPTIONS_PER_PRINCIPAL; touches last_active. Does not change the
    type of an existing one. TopicError when the topic is gone, SubscriptionRefused over the limit."""
    kind = SubscriptionType(type)
    now = timezone.now()
    existing = Subscription.objects.filter(topic_id=topic_id, name=name).first()
    if existing is None:
        try:
            with transaction.atomic():
                if user is not None:
                    hold_principal(user)
                reason = subscription_quota_error(principal)
                if reason is not None:
                    raise SubscriptionRefused(reason)
                # The topic row stays locked until the subscription is committed: a message gets a
                # sequence above start_sequence only once every ack can see the subscription.
                last = (Topic.objects.select_for_update(no_key=True).filter(pk=topic_id)
                        .values_list("last_sequence", flat=True).first())
                if last is None:
                    raise TopicError(f"topic {topic_id} no longer exists")
                return SubscriptionState.of(Subscription.objects.create(
                    topic_id=topic_id, name=name, type=kind, start_sequence=last, acked_through=last,
                    created_by=principal, last_active=now,
                ))
        except IntegrityError:
            # Another process created it first (or the topic was deleted meanwhile).
            existing = Subscription.objects.filter(topic_id=topic_id, name=name).first()
            if existing is None:
                raise TopicError(f"topic {topic_id} no longer exists") from None
    if not Subscription.objects.filter(pk=existing.pk).update(last_active=now):
        # Deleted since it was read (unsubscribed, or collected): made anew.
        return open_subscription(topic_id, name, type, principal, user)
    return SubscriptionState.of(existing)


def find_subscription(topic_id: int, name: str) -> SubscriptionState | None:
    """The subscription ``name`` of the topic as stored now (touched), or None; never creates it."""
    found = Subscription.objects.filter(topic_id=topic_id, name=name).first()
    if found is None:
        return None
    if not Subscription.objects.filter(pk=found.pk).update(last_active=timezone.now()):
        return None  # deleted since it was read
    return SubscriptionState.of(found)


def set_subscription_type(subscription_id: int, type: str) -> None:
    Subscription.objects.filter(pk=subscription_id).update(type=SubscriptionType(type))


def touch(subscription_ids: list[int]) -> int:
    """The subscriptions have (or just had) consumers: they do not expire (SUBSCRIPTION_TTL_S).
    Called at every lease renewal of a served subscription and when its last consumer leaves.
    How many still exist (a renewal finding none: its subscription was deleted meanwhile)."""
    if not subscription_ids:
        return 0
    touched: int = Subscription.objects.filter(pk__in=subscription_ids).update(last_active=timezone.now())
    return touched


@dataclass(frozen=True, slots=True)
class Backlog:
    """A page of a subscription's backlog (as broker.services.ReplayPage), and, for a subscription
    that holds delayed messages back, the earliest due time of those the page read past."""

    replays: list[Replay]
    last_sequence: int
    held_next: datetime | None = None


@dataclass(frozen=True, slots=True)
class DueMessages:
    """Held messages that came due (app/pulsar/delays.py): the mark after them, and whether more are
    due now (a full page) or else when the next held one is."""

    replays: list[Replay]
    released: Mark
    more: bool
    held_next: datetime | None


def _released(mark: Mark) -> Q:
    return Q(deliver_at__isnull=True) | Q(deliver_at__lt=mark.at) | Q(deliver_at=mark.at, sequence__lte=mark.sequence)


def _held(mark: Mark) -> Q:
    return Q(deliver_at__gt=mark.at) | Q(deliver_at=mark.at, sequence__gt=mark.sequence)


def _recorded_counts(subscription_id: int, pks: list[int]) -> dict[int, int]:
    if not pks:
        return {}
    return dict(SubscriptionMessage.objects.filter(
        subscription_id=subscription_id, message_id__in=pks, redelivery_count__gt=0,
    ).values_list("message_id", "redelivery_count"))


def backlog(subscription_id: int, *, after: int, limit: int, released: Mark | None = None) -> Backlog:
    """Stored messages of the topic outstanding for the subscription with sequence > ``after``, in
    sequence order, at most ``limit``; Replay.redelivery_count is the recorded count (not counted
    up here). Backlog.last_sequence as in broker.services.outstanding; a subscription that no
    longer exists has an empty page with last_sequence 0. With ``released`` (a subscription that
    holds delayed messages back) messages it does not release are left out, and ``held_next`` is
    the earliest due time of those in the range the page covers."""
    with transaction.atomic():
        cursor = Subscription.objects.filter(pk=subscription_id).values_list("topic_id", "acked_through").first()
        if cursor is None:
            return Backlog([], 0)
        topic_id, acked_through = cursor
        last = Topic.objects.filter(pk=topic_id).values_list("last_sequence", flat=True).first() or 0
        acked = SubscriptionMessage.objects.filter(subscription_id=subscription_id, message=OuterRef("pk"),
                                                   acked_at__isnull=False)
        messages = Message.objects.filter(topic_id=topic_id, sequence__gt=max(after, acked_through),
                                          sequence__lte=last).filter(~Exists(acked))
        wanted = messages if released is None else messages.filter(_released(released))
        page = list(wanted.order_by("sequence").values_list("pk", "sequence", "message_id", "frame")[:limit])
        held_next = None
        if released is not None:
            through = page[-1][1] if len(page) >= limit else last
            held_next = (messages.filter(_held(released), sequence__lte=through)
                         .aggregate(first=Min("deliver_at"))["first"])
        counts = _recorded_counts(subscription_id, [pk for pk, *_ in page])
    return Backlog([Replay(seq, str(mid), frame, counts.get(pk, 0)) for pk, seq, mid, frame in page], last, held_next)


def due_messages(subscription_id: int, *, released: Mark, now: datetime, through: int, limit: int) -> DueMessages:
    """The messages a holding subscription read past (sequence <= ``through``) and held, that are
    outstanding and due by ``now``: in order of due time then sequence, at most ``limit``."""
    with transaction.atomic():
        cursor = Subscription.objects.filter(pk=subscription_id).values_list("topic_id", "acked_through").first()
        if cursor is None:
            return DueMessages([], released, False, None)
        topic_id, acked_through = cursor
        acked = SubscriptionMessage.objects.filter(subscription_id=subscription_id, message=OuterRef("pk"),
                                                   acked_at__isnull=False)
        held = Message.objects.filter(topic_id=topic_id, sequence__gt=acked_through, sequence__lte=through).filter(
            _held(released)).filter(~Exists(acked))
        rows = list(held.filter(deliver_at__lte=now).order_by("deliver_at", "sequence")
                    .values_list("pk", "sequence", "message_id", "frame", "deliver_at")[:limit])
        more = len(rows) >= limit
        if more:
            last_due: datetime | None = rows[-1][4]
            assert last_due is not None  # a held message has a due time
            mark, held_next = Mark(last_due, rows[-1][1]), None
        else:
            mark = released.advanced(now)
            held_next = held.filter(deliver_at__gt=mark.at).aggregate(first=Min("deliver_at"))["first"]
        counts = _recorded_counts(subscription_id, [row[0] for row in rows])
    replays = [Replay(seq, str(mid), frame, counts.get(pk, 0)) for pk, seq, mid, frame, _ in rows]
    return DueMessages(replays, max(released, mark), more, held_next)


def count_redeliveries(subscription_id: int, message_ids: list[str]) -> dict[str, int]:
    """+1 on each (row created when missing); returns the new counts by message id. Ids of
    messages not stored (a `disabled` topic, removed) or acked already are left out: the caller
    counts those itself."""
    wanted: dict[uuid.UUID, str] = {}
    for message_id in message_ids:
        try:
            wanted[uuid.UUID(message_id)] = message_id
        except ValueError:
            continue
    with transaction.atomic():
        cursor = Subscription.objects.filter(pk=subscription_id).values_list("topic_id", "acked_through").first()
        if cursor is None or not wanted:
            return {}
        topic_id, acked_through = cursor
        stored = {pk: (seq, mid) for pk, seq, mid in Message.objects.filter(
            topic_id=topic_id, sequence__gt=acked_through, message_id__in=list(wanted),
        ).values_list("pk", "sequence", "message_id")}
        rows = SubscriptionMessage.objects.filter(subscription_id=subscription_id, message_id__in=list(stored))
        rows.filter(acked_at__isnull=True).update(redelivery_count=F("redelivery_count") + 1)
        known = set(rows.values_list("message_id", flat=True))
        SubscriptionMessage.objects.bulk_create([
            SubscriptionMessage(subscription_id=subscription_id, message_id=pk, sequence=seq, redelivery_count=1)
            for pk, (seq, _) in stored.items() if pk not in known
        ], ignore_conflicts=True)
        counts = rows.filter(acked_at__isnull=True).values_list("message_id", "redelivery_count")
        return {wanted[stored[pk][1]]: count for pk, count in counts}


def delete_subscription(subscription_id: int, *, idle_before: datetime | None = None) -> bool:
    """unsubscribe: delete the cursor and its rows, then re-apply the removal rule to the messages
    it held (above its acked_through). The first RELEASE_PAGE of them at once, so a small backlog
    goes with the unsubscribe; the rest is left to the garbage-collection relay (release_pending).
    With ``idle_before`` (expiry) only while it is still idle since then and nobody holds its lease.
    Whether it was deleted."""
    with transaction.atomic():
        cursor = (Subscription.objects.select_for_update().filter(pk=subscription_id)
                  .values_list("topic_id", "acked_through", "last_active").first())
        if cursor is None:
            return False
        topic_id, acked_through, last_active = cursor
        if idle_before is not None and (last_active >= idle_before or _served({(topic_id, subscription_id)})):
            return False
        rows = SubscriptionMessage.objects.filter(subscription_id=subscription_id)
        rows._raw_delete(rows.db)
        Subscription.objects.filter(pk=subscription_id).delete()
        topic = Topic.objects.filter(pk=topic_id).select_related("response_for").first()
        release = None
        if topic is not None and topic.policy in (StorePolicy.CACHE, StorePolicy.CACHEALL) \
                and topic.last_sequence > acked_through:
            release = Release.objects.create(topic_id=topic_id, after_sequence=acked_through,
                                             through_sequence=topic.last_sequence)
    if release is not None:
        release_page(release.pk)
    return True


def _served(subscriptions: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which of these (topic id, subscription id) have their lease held: a process serves them."""
    names = {lease_name(topic_id, pk): (topic_id, pk) for topic_id, pk in subscriptions}
    held = Lease.objects.filter(name__in=list(names), expires_at__gt=timezone.now()).exclude(holder="")
    return {names[name] for name in held.values_list("name", flat=True)}


def release_page(release_id: int, limit: int | None = None) -> tuple[int, bool]:
    """Apply the removal rule to the next page of a release (RELEASE_PAGE messages); returns how
    many messages went and whether more of the release is left."""
    limit = limit or RELEASE_PAGE
    with transaction.atomic():
        release = Release.objects.select_for_update().filter(pk=release_id).first()
        if release is None:
            return 0, False
        topic = Topic.objects.select_related("response_for").get(pk=release.topic_id)
        # The cursors are locked as the writer's subscription acks lock them (app.pulsar.cursors).
        list(Subscription.objects.select_for_update().filter(topic_id=topic.pk).order_by("pk").values_list("pk"))
        page = list(Message.objects.filter(
            topic_id=topic.pk, sequence__gt=release.after_sequence, sequence__lte=release.through_sequence,
        ).order_by("sequence").values_list("pk", "sequence")[:limit])
        removed = remove_done(topic.pk, topic.policy, [pk for pk, _ in page])
        if len(page) < limit:
            release.delete()
            return removed, False
        release.after_sequence = page[-1][1]
        release.save(update_fields=["after_sequence"])
        return removed, True


def release_pending(max_pages: int = 100) -> int:
    """Work off what deleted subscriptions left (the garbage-collection relay); returns how many
    messages went. At most ``max_pages`` transactions per call, so one run stays short."""
    removed = pages = 0
    for release_id in Release.objects.order_by("pk").values_list("pk", flat=True):
        more = True
        while more and pages < max_pages:
            went, more = release_page(release_id)
            removed += went
            pages += 1
        if pages >= max_pages:
            break
    return removed


def expire_subscriptions(now: datetime | None = None) -> int:
    """Delete subscriptions without consumers idle (not touched) for SUBSCRIPTION_TTL_S, as Pulsar
    expires only subscriptions without consumers: one whose lease is held is served (its process
    touches it at every renewal), so it stays. 0 keeps them forever. Returns how many went."""
    ttl = settings.SUBSCRIPTION_TTL_S
    if ttl <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(seconds=ttl)
    idle = sorted(Subscription.objects.filter(last_active__lt=cutoff).values_list("topic_id", "pk"))
    expired = 0
    for start in range(0, len(idle), RELEASE_PAGE):  # the lease names of a page in one query
        page = set(idle[start:start + RELEASE_PAGE])
        expired += sum(delete_subscription(pk, idle_before=cutoff) for _, pk in sorted(page - _served(page)))
    return expired


def ensure_dead_letter_topic(slug: str, user: Any, principal: str, *, explicit: bool) -> TopicView:
    """The dead letter topic of a subscription, created when missing: not supports_dasf, private,
    its creator may produce to and consume it, counted by TOPICS_PER_PRINCIPAL; stored under the
    server's default policy, or `cache` when that stores nothing (a dead letter must not be lost).
    ``explicit``: the consumer named it (``deadLetterTopic``), so creating it takes the right to
    create topics. An existing one must pass ``redelivery.dead_letter_topic_problem``. TopicError
    otherwise."""
    reason = topic_name_error(slug)
    if reason is not None:
        raise TopicError(f"{reason} (for dead letters)")
    with transaction.atomic():
        topic = Topic.objects.select_related("response_for").filter(slug=slug).first()
        if topic is None:
            reason = _creation_problem(slug, user, explicit)
            if reason is not None:
                raise TopicError(reason)
            hold_principal(user)
            reason = topic_quota_error(principal)
            if reason is not None:
                raise TopicError(reason)
            default = StorePolicy(settings.STORE_SOURCE_MESSAGES)
            topic, created = Topic.objects.get_or_create(slug=slug, defaults={
                "is_public": False, "supports_dasf": False, "created_by": principal,
                "store_messages": None if default.stores else StorePolicy.CACHE.value,
            })
            if created:
                grant(user, topic, "can_produce", "can_consume")
    rights = rights_on(user, topic)
    reason = _dead_letter_problem(topic, rights.produce, principal)
    if reason is not None:
        raise TopicError(reason)
    return TopicView.of(topic, rights)


def dead_letter_refusal(slug: str, user: Any, principal: str, *, explicit: bool) -> Refusal | None:
    """Why a consumer handshake with ``maxRedeliverCount`` > 0 is refused for its dead letter topic
    ``slug``: 409 an existing topic that may not serve, 403 a missing one this principal may not
    have made; None when the first dead letter will find or make a usable one."""
    topic = Topic.objects.select_related("response_for").filter(slug=slug).first()
    if topic is None:
        reason = _creation_problem(slug, user, explicit)
        return None if reason is None else Refusal(HTTPStatus.FORBIDDEN, reason)
    reason = _dead_letter_problem(topic, rights_on(user, topic).produce, principal)
    return None if reason is None else Refusal(HTTPStatus.CONFLICT, reason)


def _creation_problem(slug: str, user: Any, explicit: bool) -> str | None:
    return dead_letter_creation_problem(slug, explicit=explicit, may_add_topics=explicit and may_add_topics(user),
                                        allow_auto=settings.ALLOW_AUTO_TOPIC_CREATION)


def _dead_letter_problem(topic: Topic, may_produce: bool, principal: str) -> str | None:
    return dead_letter_topic_problem(topic.slug, response_topic=topic.is_response_topic,
                                     creator=creating_principal(topic.created_by), principal=principal,
                                     may_produce=may_produce)
