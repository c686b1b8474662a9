"""A topic's stored messages over HTTP on a real server: listing with filters and cursor pages,
one message, deleting one or many, and publishing one again to live consumers."""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from app.api.pagination import CURSOR_REFUSED
from app.broker import stored
from app.broker.models import Delivery, Message, Topic
from app.broker.permissions import grant
from tests.api_client import call
from tests.protocol import (
    auth,
    connect,
    eventually,
    make_token,
    make_topic,
    make_user,
    publish,
    recv_json,
    send_json,
    subscribe,
)
from tests.servers import ServerProcess


def holder_of(*codenames: str) -> tuple[Any, str]:
    """A user with these ``broker`` model permissions and nothing else, and a token of theirs."""
    user = make_user()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="broker", codename__in=codenames))
    return user, make_token(user)


async def stored_topic(server: ServerProcess, count: int, policy: str = "store") -> tuple[str, Any, str, list[str]]:
    """A private topic under ``policy``, a user who may produce and consume it, their token, and
    the ids of ``count`` messages they published there."""
    user = make_user()
    key = make_token(user)
    slug = make_topic(public=False, anonymous=False, policy=policy, dasf=False, consumers=(user,), producers=(user,))
    producer = await connect(server.ws + slug, auth(key))
    ids = []
    for n in range(count):
        ack = await publish(producer, n, properties={"n": str(n)})
        assert ack["result"] == "ok", ack
        ids.append(ack["messageId"])
    await producer.close()
    return slug, user, key, ids


def ids_of(page: dict[str, Any]) -> list[str]:
    return [item["message_id"] for item in page["items"]]


def query(**params: Any) -> str:
    return "?" + urllib.parse.urlencode(params)


# Reading
async def test_list_walks_every_stored_message_once_in_order(server: ServerProcess) -> None:
    """Following next links with limit=2 yields each stored message once, by sequence, as published."""
    slug, user, key, ids = await stored_topic(server, 5)
    seen: list[dict[str, Any]] = []
    url: str | None = f"/topics/{slug}/messages?limit=2"
    while url is not None:
        status, page = call(server, url, key=key)
        assert status == 200, page
        seen += page["items"]
        url = page["next"]
    assert [m["message_id"] for m in seen] == ids
    assert [m["sequence"] for m in seen] == sorted(m["sequence"] for m in seen)
    first = seen[0]
    assert first["producer"] == f"user:{user.pk}" and first["properties"] == {"n": "0"} and first["context"] == 0
    assert first["topic"] == slug and first["acked_by"] == [] and first["redelivery_count"] == 0


async def test_list_filters_by_publish_time(server: ServerProcess) -> None:
    """since is inclusive and until exclusive, on the publish time."""
    slug, _, key, ids = await stored_topic(server, 3)
    middle = Message.objects.get(message_id=ids[1]).publish_time.isoformat()
    assert ids_of(call(server, f"/topics/{slug}/messages" + query(since=middle), key=key)[1]) == ids[1:]
    assert ids_of(call(server, f"/topics/{slug}/messages" + query(until=middle), key=key)[1]) == ids[:1]


async def test_list_filters_by_delivery_state(server: ServerProcess) -> None:
    """A message a consumer acked is 'acked' (with who acked it); the others are 'unacked'."""
    slug, user, key, ids = await stored_topic(server, 3)
    consumer = await subscribe(server.ws, slug, headers=auth(key), probe=False)
    for _ in ids:
        frame = await recv_json(consumer)
        if frame["messageId"] == ids[1]:
            await send_json(consumer, {"messageId": frame["messageId"]})
    # Acks are committed by the group-commit writer, after the frame is read.
    await eventually(lambda: Delivery.objects.filter(message__message_id=ids[1], acked_at__isnull=False).exists())
    path = f"/topics/{slug}/messages"
    status, acked = call(server, path + query(state="acked"), key=key)
    assert status == 200 and ids_of(acked) == [ids[1]] and acked["items"][0]["acked_by"] == [f"user:{user.pk}"]
    assert ids_of(call(server, path + query(state="unacked"), key=key)[1]) == [ids[0], ids[2]]


async def test_state_of_one_principal(server: ServerProcess) -> None:
    """With principal=, the state is that principal's: another's ack does not make it acked."""
    slug, user, key, ids = await stored_topic(server, 1)
    Delivery.objects.create(message=Message.objects.get(message_id=ids[0]), principal="user:0", acked_at=timezone.now())
    path = f"/topics/{slug}/messages"
    assert ids_of(call(server, path + query(state="acked"), key=key)[1]) == ids
    assert ids_of(call(server, path + query(state="unacked", principal=f"user:{user.pk}"), key=key)[1]) == ids


async def test_list_filters_redelivered_messages(server: ServerProcess) -> None:
    """state=redelivered holds the messages handed out again to some principal, with their count."""
    slug, user, key, ids = await stored_topic(server, 2)
    Delivery.objects.create(message=Message.objects.get(message_id=ids[0]), principal=f"user:{user.pk}",
                            redelivery_count=2)
    status, page = call(server, f"/topics/{slug}/messages" + query(state="redelivered"), key=key)
    assert status == 200 and ids_of(page) == ids[:1] and page["items"][0]["redelivery_count"] == 2


async def test_principal_without_state_is_422(server: ServerProcess) -> None:
    """principal= says whose state is meant: alone it filters nothing, so it is refused."""
    slug, user, key, _ = await stored_topic(server, 1)
    assert call(server, f"/topics/{slug}/messages" + query(principal=f"user:{user.pk}"), key=key)[0] == 422


async def test_page_ends_at_the_byte_budget(server: ServerProcess) -> None:
    """Large messages fill a page by API_PAGE_MAX_BYTES (4 MiB), not by limit; the walk sees them all."""
    user = make_user()
    key = make_token(user)
    slug = make_topic(public=False, anonymous=False, policy="store", dasf=False, consumers=(user,), producers=(user,))
    producer = await connect(server.ws + slug, auth(key))
    big = "x" * (600 * 1024)
    ids = [(await publish(producer, n, payload=big))["messageId"] for n in range(8)]
    status, first = call(server, f"/topics/{slug}/messages?limit=50", key=key)
    assert status == 200 and 1 <= len(first["items"]) < len(ids) and first["next"] is not None
    seen = ids_of(first)
    url = first["next"]
    while url is not None:
        page = call(server, url, key=key)[1]
        seen += ids_of(page)
        url = page["next"]
    assert seen == ids


async def test_get_one_message(server: ServerProcess) -> None:
    """A stored message by id; an id the topic does not hold is 404; a malformed id 422."""
    slug, _, key, ids = await stored_topic(server, 1)
    status, body = call(server, f"/topics/{slug}/messages/{ids[0]}", key=key)
    assert status == 200 and body["message_id"] == ids[0]
    missing = uuid.uuid4()
    assert call(server, f"/topics/{slug}/messages/{missing}", key=key) == (
        404, {"detail": f"message {missing} does not exist in topic {slug}"})
    assert call(server, f"/topics/{slug}/messages/not-an-id", key=key)[0] == 422


async def test_message_of_another_topic_is_missing(server: ServerProcess) -> None:
    """A message id is looked up in the topic named in the path only."""
    slug, user, key, ids = await stored_topic(server, 1)
    other = make_topic(public=False, anonymous=False, consumers=(user,))
    assert call(server, f"/topics/{other}/messages/{ids[0]}", key=key)[0] == 404
    assert call(server, f"/topics/{other}/messages", key=key)[1]["items"] == []


async def test_reading_needs_the_consume_right(server: ServerProcess) -> None:
    """A producer that may not consume gets 403; a hidden topic 404; anonymous callers 401."""
    slug, _, _, ids = await stored_topic(server, 1)
    producer = make_user()
    topic = Topic.objects.get(slug=slug)
    grant(producer, topic, "can_produce")
    producer_key = make_token(producer)
    assert call(server, f"/topics/{slug}/messages", key=producer_key)[0] == 403
    assert call(server, f"/topics/{slug}/messages/{ids[0]}", key=producer_key)[0] == 403
    assert call(server, f"/topics/{slug}/messages", key=make_token(make_user()))[0] == 404
    public = make_topic(public=True, anonymous=False)
    assert call(server, f"/topics/{public}/messages")[0] == 401


async def test_view_message_permission_reads_any_visible_topic(server: ServerProcess) -> None:
    """broker.view_message reads the messages of a topic the caller may see but not consume."""
    slug, _, _, ids = await stored_topic(server, 1)
    Topic.objects.filter(slug=slug).update(is_public=True)
    _, key = holder_of("view_message")
    assert ids_of(call(server, f"/topics/{slug}/messages", key=key)[1]) == ids


# Deleting
async def test_delete_one_message_needs_delete_message(server: ServerProcess) -> None:
    """The topic's consumer may not delete (403); a holder of broker.delete_message may (204, row gone)."""
    slug, _, key, ids = await stored_topic(server, 2)
    path = f"/topics/{slug}/messages/{ids[0]}"
    assert call(server, path, "DELETE", key)[0] == 403
    Topic.objects.filter(slug=slug).update(is_public=True)
    _, deleter = holder_of("delete_message")
    assert call(server, path, "DELETE", deleter) == (204, None)
    assert list(Message.objects.filter(topic__slug=slug).values_list("message_id", flat=True)) == [uuid.UUID(ids[1])]
    assert call(server, path, "DELETE", deleter)[0] == 404


async def test_purge_deletes_what_matches_the_filters(server: ServerProcess) -> None:
    """DELETE on the list removes the matching messages only, and says how many."""
    slug, _, key, ids = await stored_topic(server, 3)
    Topic.objects.filter(slug=slug).update(is_public=True)
    _, deleter = holder_of("delete_message")
    middle = Message.objects.get(message_id=ids[1]).publish_time.isoformat()
    assert call(server, f"/topics/{slug}/messages" + query(until=middle), "DELETE", deleter) == (200, {"deleted": 1})
    assert ids_of(call(server, f"/topics/{slug}/messages", key=key)[1]) == ids[1:]
    assert call(server, f"/topics/{slug}/messages", "DELETE", key)[0] == 403


async def test_deleting_on_a_hidden_topic_is_404(server: ServerProcess) -> None:
    """broker.delete_message does not reveal private topics: one the caller may not see is 404."""
    slug, _, _, ids = await stored_topic(server, 1)
    _, deleter = holder_of("delete_message")
    for path in (f"/topics/{slug}/messages/{ids[0]}", f"/topics/{slug}/messages"):
        assert call(server, path, "DELETE", deleter) == (404, {"detail": f"topic {slug} does not exist"})
    assert Message.objects.filter(topic__slug=slug).count() == 1


def test_purge_goes_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A purge larger than a chunk deletes every match, a chunk per transaction."""
    slug = make_topic(policy="store", dasf=False)
    topic = Topic.objects.get(slug=slug)
    for sequence in range(1, 6):
        Message.objects.create(topic=topic, sequence=sequence, producer_principal="anonymous", frame="{}",
                               publish_time=timezone.now())
    Topic.objects.filter(pk=topic.pk).update(last_sequence=5)
    monkeypatch.setattr(stored, "PURGE_CHUNK", 2)
    assert stored.purge(topic, stored.MessageFilter()) == 5
    assert not Message.objects.filter(topic=topic).exists()


def test_purge_spares_messages_published_after_it_began() -> None:
    """Messages above the sequence the purge started at are left: a purge ends while producers go on."""
    slug = make_topic(policy="store", dasf=False)
    topic = Topic.objects.get(slug=slug)
    for sequence in (1, 2):
        Message.objects.create(topic=topic, sequence=sequence, producer_principal="anonymous", frame="{}",
                               publish_time=timezone.now())
    Topic.objects.filter(pk=topic.pk).update(last_sequence=1)  # sequence 2 is not committed as far as it knows
    assert stored.purge(topic, stored.MessageFilter()) == 1
    assert list(Message.objects.filter(topic=topic).values_list("sequence", flat=True)) == [2]


# Re-sending
async def test_resend_reaches_live_consumers_as_a_new_message(server: ServerProcess) -> None:
    """The copy has a new id and sequence, the original's payload and properties, and is delivered live."""
    slug, user, key, ids = await stored_topic(server, 1)
    consumer = await subscribe(server.ws, slug, headers=auth(key), probe=False)
    original = await recv_json(consumer)
    await send_json(consumer, {"messageId": original["messageId"]})
    status, sent = call(server, f"/topics/{slug}/messages/{ids[0]}/resend", "POST", key)
    assert status == 201 and sent["resent_from"] == ids[0] and sent["message_id"] != ids[0]
    copy = await recv_json(consumer)
    assert copy["messageId"] == sent["message_id"]
    assert (copy["payload"], copy["properties"], copy["context"]) == (
        original["payload"], original["properties"], original["context"])
    stored = Message.objects.get(message_id=sent["message_id"])
    assert stored.sequence == sent["sequence"] > Message.objects.get(message_id=ids[0]).sequence
    assert stored.producer_principal == f"user:{user.pk}"


def test_resent_copy_is_due_at_once() -> None:
    """The copy's frame keeps the original's fields but not its delay nor its redelivery count."""
    slug = make_topic(policy="store", dasf=False)
    topic = Topic.objects.get(slug=slug)
    original = Message.objects.create(
        topic=topic, sequence=1, producer_principal="anonymous", publish_time=timezone.now(), payload="cA==",
        frame=json.dumps({"payload": "cA==", "key": "k", "deliverAt": 1, "deliverAfterMs": 5, "redeliveryCount": 3}),
    )
    Topic.objects.filter(pk=topic.pk).update(last_sequence=1)
    delivered: list[stored.Resent] = []
    sent = stored.resend(original, topic, make_user(), timezone.now(), delivered.append)
    frame = json.loads(sent.frame)
    assert frame == {"payload": "cA==", "key": "k", "messageId": str(sent.message_id),
                     "publishTime": sent.publish_time.isoformat()}
    assert delivered == [sent] and Message.objects.get(message_id=sent.message_id).deliver_at is None


async def test_resend_on_a_topic_that_stores_nothing_now(server: ServerProcess) -> None:
    """After the policy became disabled the copy goes to live consumers only (sequence null)."""
    slug, _, key, ids = await stored_topic(server, 1)
    consumer = await subscribe(server.ws, slug, headers=auth(key), probe=False)
    await send_json(consumer, {"messageId": (await recv_json(consumer))["messageId"]})
    topic = Topic.objects.get(slug=slug)
    topic.store_messages = "disabled"
    topic.save(update_fields=["store_messages"])  # announced: the server re-reads the topic
    status, sent = call(server, f"/topics/{slug}/messages/{ids[0]}/resend", "POST", key)
    assert status == 201 and sent["sequence"] is None
    assert (await recv_json(consumer))["messageId"] == sent["message_id"]
    assert not Message.objects.filter(message_id=sent["message_id"]).exists()


async def test_resend_needs_produce_and_consume(server: ServerProcess) -> None:
    """A consumer that may not produce gets 403, and nothing is published."""
    slug, _, _, ids = await stored_topic(server, 1)
    reader = make_user()
    grant(reader, Topic.objects.get(slug=slug), "can_consume")
    assert call(server, f"/topics/{slug}/messages/{ids[0]}/resend", "POST", make_token(reader))[0] == 403
    assert Message.objects.filter(topic__slug=slug).count() == 1


# Re-sending inside a transactional bulk
async def test_resend_in_a_rolled_back_bulk_leaves_no_copy(server: ServerProcess) -> None:
    """A resend followed by a failing operation in a POST bulk stores nothing and delivers nothing."""
    slug, _, key, ids = await stored_topic(server, 1)
    consumer = await subscribe(server.ws, slug, headers=auth(key), probe=False)
    await send_json(consumer, {"messageId": (await recv_json(consumer))["messageId"]})
    status, results = call(server, "/_bulk/", "POST", key, [
        {"method": "post", "path": f"topics/{slug}/messages/{ids[0]}/resend"},
        {"method": "get", "path": f"topics/{slug}/messages/{uuid.uuid4()}"},
    ])
    assert status == 502 and [r["status"] for r in results] == [201, 404], results
    assert list(Message.objects.filter(topic__slug=slug).values_list("message_id", flat=True)) == [uuid.UUID(ids[0])]
    # A later resend outside the bulk is the next thing the consumer gets: the rolled-back copy never came.
    status, sent = call(server, f"/topics/{slug}/messages/{ids[0]}/resend", "POST", key)
    assert status == 201 and (await recv_json(consumer))["messageId"] == sent["message_id"]


async def test_resend_in_a_committed_bulk_is_delivered(server: ServerProcess) -> None:
    """Resends in a POST bulk that commits reach live consumers, in order."""
    slug, _, key, ids = await stored_topic(server, 2)
    consumer = await subscribe(server.ws, slug, headers=auth(key), probe=False)
    for _ in ids:
        await send_json(consumer, {"messageId": (await recv_json(consumer))["messageId"]})
    status, results = call(server, "/_bulk/", "POST", key, [
        {"method": "post", "path": f"topics/{slug}/messages/{message_id}/resend"} for message_id in ids
    ])
    assert status == 200, results
    assert [(await recv_json(consumer))["messageId"] for _ in ids] == [r["data"]["message_id"] for r in results]


# Bad input: a 4xx with a JSON body, never a server error
async def test_forged_cursor_is_a_422(server: ServerProcess) -> None:
    """A cursor of this list whose key is no sequence (text, null, an object, NUL) is a 422."""
    slug, _, key, _ = await stored_topic(server, 1)
    path = f"/api/v1/topics/{slug}/messages"
    for forged in ["x", None, {"a": 1}, [1, 2], "\x00", 2**70]:
        cursor = base64.urlsafe_b64encode(json.dumps([path, forged]).encode()).decode()
        status, body = call(server, path + query(cursor=cursor), key=key)
        assert (status, body) == (422, {"detail": CURSOR_REFUSED}), forged


async def test_publish_time_out_of_range_in_utc_is_a_422(server: ServerProcess) -> None:
    """since/until whose UTC falls outside years 1-9999 are a 422, listing or purging."""
    slug, _, key, ids = await stored_topic(server, 1)
    _, deleter = holder_of("delete_message")
    Topic.objects.filter(slug=slug).update(is_public=True)
    path = f"/topics/{slug}/messages"
    for bad in [{"until": "9999-12-31T23:59:59-14:00"}, {"since": "0001-01-01T00:00:00+14:00"}]:
        status, body = call(server, path + query(**bad), key=key)
        assert status == 422 and body["detail"][0]["loc"] == ["query", *bad], body
        assert call(server, path + query(**bad), "DELETE", deleter)[0] == 422
    assert ids_of(call(server, path + query(since="2000-01-01T00:00:00"), key=key)[1]) == ids


async def test_nul_in_topic_name_and_filters(server: ServerProcess) -> None:
    """NUL (which PostgreSQL refuses in text) in the topic name is a missing topic; in principal or producer a 422."""
    slug, _, key, ids = await stored_topic(server, 1)
    nul = urllib.parse.quote(slug + "\x00")
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", f"/{ids[0]}"), ("DELETE", f"/{ids[0]}"),
                         ("POST", f"/{ids[0]}/resend")]:
        assert call(server, f"/topics/{nul}/messages{path}", method, key)[0] == 404, (method, path)
    for params in [{"producer": "\x00"}, {"state": "acked", "principal": "user:\x00"}]:
        status, body = call(server, f"/topics/{slug}/messages" + query(**params), key=key)
        assert status == 422 and "NUL" in body["detail"][0]["msg"], body


async def test_resend_of_another_requesters_request_is_refused(server: ServerProcess) -> None:
    """A request whose response topic the caller may not consume is not re-sent: its answers are another's."""
    slug, _, key, ids = await stored_topic(server, 1)
    answers = make_topic(public=False, anonymous=False, consumers=(make_user(),))
    Message.objects.filter(message_id=ids[0]).update(response_topic=Topic.objects.get(slug=answers))
    status, body = call(server, f"/topics/{slug}/messages/{ids[0]}/resend", "POST", key)
    assert status == 403 and answers in body["detail"], body
    assert Message.objects.filter(topic__slug=slug).count() == 1
