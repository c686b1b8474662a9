"""Topics over HTTP (list, create, get, update, delete) on a real server: visibility, cursor
pagination, the rights each change needs, and that changes reach open sockets."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from guardian.models import UserObjectPermission
from guardian.shortcuts import get_perms

from app.api.unstorable import NUL_REFUSED
from app.broker.models import Topic
from app.broker.permissions import grant
from tests.api_client import API, call
from tests.browser import Browser
from tests.protocol import auth, connect, make_token, make_topic, make_user, set_password, subscribe, unique
from tests.servers import ServerProcess
from tests.test_announcements import closed_with, publish_until


def key_with(*codenames: str) -> tuple[Any, str]:
    """A user granted these ``broker`` model permissions and nothing else, and a token of theirs."""
    user = make_user()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="broker", codename__in=codenames))
    return user, make_token(user)


def superuser_key() -> str:
    return make_token(make_user(is_superuser=True, is_staff=True))


def names(page: dict[str, Any]) -> list[str]:
    return [item["name"] for item in page["items"]]


def walk(server: ServerProcess, first: str, key: str, between: Any = None) -> list[str]:
    """Every name on every page, following ``next`` links; ``between()`` runs after each page."""
    seen: list[str] = []
    url: str | None = first
    while url is not None:
        status, page = call(server, url, key=key)
        assert status == 200, page
        seen += names(page)
        url = page["next"]
        if between is not None:
            between()
    return seen


# Visibility
@pytest.mark.parametrize(("method", "body"), [("GET", None), ("PATCH", {"public": True}), ("DELETE", None)])
def test_hidden_topic_answers_like_a_missing_one(server: ServerProcess, method: str, body: Any) -> None:
    """A private topic the caller holds no right on is 404 with the missing topic's body, and unchanged."""
    _, key = key_with("change_topic", "delete_topic")
    hidden = make_topic(public=False, anonymous=False)
    missing = unique("missing")
    assert call(server, f"/topics/{hidden}", method, key, body) == (404, {"detail": f"topic {hidden} does not exist"})
    assert call(server, f"/topics/{missing}", method, key, body) == (404, {"detail": f"topic {missing} does not exist"})
    assert not Topic.objects.get(slug=hidden).is_public


def test_view_status_right_makes_a_topic_visible(server: ServerProcess) -> None:
    """A status viewer gets a private topic, with its settings."""
    viewer, key = key_with()
    slug = make_topic(public=False, anonymous=False, policy="store", dasf=False)
    grant(viewer, Topic.objects.get(slug=slug), "can_view_status")
    status, body = call(server, f"/topics/{slug}", key=key)
    assert status == 200
    assert body | {"created": None} == {
        "name": slug, "public": False, "supports_dasf": False, "store_messages": "store", "policy": "store",
        "response_for": None, "availability": "unknown", "last_ping": None, "last_pong": None, "created": None,
    }


def test_list_holds_only_visible_topics(server: ServerProcess) -> None:
    """The list shows public topics and those the caller holds a right on; superusers see all."""
    user, key = key_with()
    prefix = unique("vis")
    public, hidden, consumed = (make_topic(f"{prefix}-{n}", public=p, anonymous=False) for n, p in
                                (("a", True), ("b", False), ("c", False)))
    grant(user, Topic.objects.get(slug=consumed), "can_consume")
    assert names(call(server, f"/topics?prefix={prefix}", key=key)[1]) == [public, consumed]
    assert names(call(server, f"/topics?prefix={prefix}")[1]) == [public]
    assert names(call(server, f"/topics?prefix={prefix}", key=superuser_key())[1]) == [public, hidden, consumed]


def test_list_filters(server: ServerProcess) -> None:
    """The dasf, public and policy filters each narrow the list to the matching topics."""
    prefix = unique("flt")
    plain = make_topic(f"{prefix}-a", dasf=False)
    private = make_topic(f"{prefix}-b", public=False, policy="store")
    key = superuser_key()
    assert names(call(server, f"/topics?prefix={prefix}&dasf=false", key=key)[1]) == [plain]
    assert names(call(server, f"/topics?prefix={prefix}&public=false", key=key)[1]) == [private]
    assert names(call(server, f"/topics?prefix={prefix}&policy=store", key=key)[1]) == [private]
    assert names(call(server, f"/topics?prefix={prefix}&response=true", key=key)[1]) == []


def test_invalid_token_is_401(server: ServerProcess) -> None:
    """An Authorization header naming no token is 401, not served as anonymous."""
    status, body = call(server, "/topics", key="no-such-key")
    assert status == 401 and body["detail"].startswith("invalid token")


# Pagination
def test_pagination_walks_every_topic_once(server: ServerProcess) -> None:
    """Following ``next`` with limit=2 yields every topic exactly once, in name order."""
    prefix = unique("page")
    slugs = [make_topic(f"{prefix}-{n}") for n in range(5)]
    assert walk(server, f"{API}/topics?prefix={prefix}&limit=2", superuser_key()) == slugs


def test_pagination_is_stable_under_inserts(server: ServerProcess) -> None:
    """Topics created during a walk (before and after the cursor) never repeat or hide existing ones."""
    prefix = unique("ins")
    slugs = [make_topic(f"{prefix}-{n}") for n in range(1, 8, 2)]  # -1 -3 -5 -7
    added: list[str] = []

    def insert() -> None:
        n = len(added)
        added.extend([make_topic(f"{prefix}-0{n}"), make_topic(f"{prefix}-9{n}")])

    seen = walk(server, f"{API}/topics?prefix={prefix}&limit=2", superuser_key(), insert)
    assert len(seen) == len(set(seen)) and set(slugs) <= set(seen)
    assert seen == sorted(seen)


def test_foreign_cursor_is_422(server: ServerProcess) -> None:
    """A cursor that is not one of this list's is refused with 422 and a JSON reason."""
    status, body = call(server, "/topics?cursor=bm90LWEtY3Vyc29y")
    assert status == 422 and "cursor" in body["detail"]


def test_limit_is_bounded(server: ServerProcess) -> None:
    """A limit above the maximum is a 422."""
    assert call(server, "/topics?limit=100000")[0] == 422


# Create
def test_create_needs_add_topic(server: ServerProcess) -> None:
    """Creating is 401 anonymously and 403 without broker.add_topic; nothing is created."""
    slug = unique("new")
    assert call(server, "/topics", "POST", body={"name": slug})[0] == 401
    assert call(server, "/topics", "POST", key_with()[1], {"name": slug})[0] == 403
    assert not Topic.objects.filter(slug=slug).exists()


def test_creator_may_produce_and_consume(server: ServerProcess) -> None:
    """A user with broker.add_topic creates a private topic they may produce to and consume."""
    user, key = key_with("add_topic")
    slug = unique("new")
    status, body = call(server, "/topics", "POST", key, {"name": slug})
    assert status == 201 and body["name"] == slug and body["public"] is False
    topic = Topic.objects.get(slug=slug)
    assert sorted(get_perms(user, topic)) == ["can_consume", "can_produce"]


def test_create_settings_need_change_topic(server: ServerProcess) -> None:
    """Creating with settings other than the defaults needs broker.change_topic."""
    _, key = key_with("add_topic")
    slug = unique("new")
    assert call(server, "/topics", "POST", key, {"name": slug, "public": True})[0] == 403
    _, admin = key_with("add_topic", "change_topic")
    assert call(server, "/topics", "POST", admin, {"name": slug, "public": True})[1]["public"] is True


@pytest.mark.parametrize("name", ["has space", "status", "x" * 300])
def test_create_invalid_name_is_422(server: ServerProcess, name: str) -> None:
    """A name outside the rules (characters, reserved, length) is a 422."""
    assert call(server, "/topics", "POST", superuser_key(), {"name": name})[0] == 422


def test_create_existing_is_409(server: ServerProcess) -> None:
    """Creating a topic that exists is a 409."""
    assert call(server, "/topics", "POST", superuser_key(), {"name": make_topic()})[0] == 409


# Update
def test_update_needs_change_topic(server: ServerProcess) -> None:
    """A consumer of a topic may see it but not change it (403)."""
    user, key = key_with()
    slug = make_topic(public=False, anonymous=False, consumers=(user,))
    assert call(server, f"/topics/{slug}", "PATCH", key, {"public": True})[0] == 403
    assert not Topic.objects.get(slug=slug).is_public


def test_update_changes_only_given_settings(server: ServerProcess) -> None:
    """PATCH sets the given settings; store_messages null means the server default."""
    slug = make_topic(policy="store")
    status, body = call(server, f"/topics/{slug}", "PATCH", superuser_key(), {"store_messages": None})
    assert status == 200 and body["store_messages"] is None and body["public"] is True
    assert Topic.objects.get(slug=slug).store_messages is None


async def test_update_reaches_open_producer(server: ServerProcess) -> None:
    """Making a public topic private stops its anonymous producer: the change is announced."""
    slug = make_topic()
    producer = await connect(server.ws + slug)
    await publish_until(producer, accepted=True)
    assert call(server, f"/topics/{slug}", "PATCH", superuser_key(), {"public": False})[0] == 200
    await publish_until(producer, accepted=False)


# Delete
def test_delete_needs_delete_topic(server: ServerProcess) -> None:
    """A visible topic is not deleted without broker.delete_topic (403)."""
    slug = make_topic()
    assert call(server, f"/topics/{slug}", "DELETE", key_with("change_topic")[1])[0] == 403
    assert Topic.objects.filter(slug=slug).exists()


async def test_delete_closes_consumers_and_drops_grants(server: ServerProcess) -> None:
    """Deleting a topic removes it and its grants, and its open consumer is closed (4403)."""
    owner = make_user()
    slug = make_topic(public=False, anonymous=False, consumers=(owner,))
    pk = Topic.objects.get(slug=slug).pk
    ws = await subscribe(server.ws, slug, headers=auth(make_token(owner)))
    assert call(server, f"/topics/{slug}", "DELETE", superuser_key()) == (204, None)
    await closed_with(ws, 4403)
    assert not Topic.objects.filter(slug=slug).exists()
    assert not UserObjectPermission.objects.filter(object_pk=str(pk), content_type__model="topic").exists()


def test_nul_in_a_name_is_not_a_server_error(server: ServerProcess) -> None:
    """A NUL in a topic name is not found (SQLite), or refused with 422 where PostgreSQL cannot hold it."""
    status, body = call(server, "/topics/sensors%00-7", key=superuser_key())
    assert status == 404 or (status, body["detail"]) == (422, NUL_REFUSED)


# CSRF
def test_session_create_needs_csrf(server: ServerProcess) -> None:
    """A session-authenticated create without the CSRF token is 403 and creates nothing; with it, 201."""
    user = make_user(is_superuser=True, is_staff=True)
    browser = Browser(server.http)
    assert browser.admin_login(user.username, set_password(user)).status == 302
    slug = unique("csrf")
    refused = browser.send_json(f"{API}/topics", value={"name": slug}, headers={"Origin": browser.base})
    assert refused.status == 403 and refused.json()["detail"].startswith("CSRF check failed")
    assert not Topic.objects.filter(slug=slug).exists()
    assert browser.send_json(f"{API}/topics", value={"name": slug}, headers=browser.csrf_headers()).status == 201


# The OpenAPI document
def test_every_resource_operation_is_documented(server: ServerProcess) -> None:
    """Each topic and token operation has a summary and an example body for every answer it documents."""
    paths = call(server, "/openapi.json")[1]["paths"]
    resources = [f"{API}/topics", f"{API}/topics/{{slug}}", f"{API}/tokens", f"{API}/tokens/{{pk}}",
                 f"{API}/tokens/{{pk}}/disable"]
    for path in resources:
        for method, operation in paths[path].items():
            assert operation.get("summary"), (method, path)
            for code, answer in operation["responses"].items():
                if code != "204":
                    assert "example" in answer["content"]["application/json"], (method, path, code)
