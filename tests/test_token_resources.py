"""API tokens over HTTP on a real server: the key is shown once, users manage only their own
tokens, and disabling or deleting one revokes it at once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission

from app.api.unstorable import NUL_REFUSED
from app.auth.models import Token
from app.auth.services import hash_key
from tests.api_client import API, call
from tests.protocol import auth, make_token, make_topic, make_user, subscribe
from tests.servers import ServerProcess
from tests.test_announcements import closed_with


def token_maker() -> tuple[Any, str]:
    """A user who may add tokens (``switchyard_auth.add_token``), and a token of theirs."""
    user = make_user()
    user.user_permissions.add(Permission.objects.get(content_type__app_label="switchyard_auth", codename="add_token"))
    return user, make_token(user)


def test_created_key_is_shown_once_and_stored_hashed(server: ServerProcess) -> None:
    """The 201 body holds the key, which authenticates; only its hash is stored and no list shows it."""
    user, key = token_maker()
    status, body = call(server, "/tokens", "POST", key, {"comment": "gateway"})
    assert status == 201 and body["user"] == user.username and body["prefix"] == body["key"][:8]
    row = Token.objects.get(pk=body["id"])
    assert row.key_hash == hash_key(body["key"]) and body["key"] not in (row.key_hash, row.prefix)
    status, page = call(server, "/tokens", key=body["key"])
    assert status == 200 and {t["id"] for t in page["items"]} == set(Token.objects.filter(user=user).values_list(
        "pk", flat=True))
    assert all("key" not in item for item in page["items"]) and body["key"] not in str(page)


def test_create_needs_add_token(server: ServerProcess) -> None:
    """A user without switchyard_auth.add_token cannot mint tokens (403); anonymous callers get 401."""
    user = make_user()
    assert call(server, "/tokens", "POST", make_token(user), {})[0] == 403
    assert call(server, "/tokens", "POST", None, {})[0] == 401
    assert Token.objects.filter(user=user).count() == 1


def test_nul_in_a_comment_is_not_a_server_error(server: ServerProcess) -> None:
    """A comment with a NUL is stored (SQLite), or refused with 422 where PostgreSQL cannot hold it."""
    status, body = call(server, "/tokens", "POST", token_maker()[1], {"comment": "gate\x00way"})
    assert (status == 201 and body["comment"] == "gate\x00way") or (status, body["detail"]) == (422, NUL_REFUSED)


def test_only_superusers_create_for_others(server: ServerProcess) -> None:
    """Naming another user is 403 for a user, 201 for a superuser (the token is that user's)."""
    other = make_user()
    assert call(server, "/tokens", "POST", token_maker()[1], {"user": other.username})[0] == 403
    admin = make_token(make_user(is_superuser=True, is_staff=True))
    status, body = call(server, "/tokens", "POST", admin, {"user": other.username})
    assert status == 201 and Token.objects.get(pk=body["id"]).user == other


def test_list_is_own_tokens_only(server: ServerProcess) -> None:
    """A user lists their own tokens only, even when filtering by another user."""
    user, key = token_maker()
    other = make_user()
    make_token(other)
    assert call(server, f"/tokens?user={other.username}", key=key)[1]["items"] == []
    assert {t["user"] for t in call(server, "/tokens", key=key)[1]["items"]} == {user.username}


def test_superuser_lists_anyones_tokens(server: ServerProcess) -> None:
    """A superuser filters every user's tokens by username, page by page."""
    other = make_user()
    made = [make_token(other) for _ in range(3)]
    admin = make_token(make_user(is_superuser=True, is_staff=True))
    seen: list[str] = []
    url: str | None = f"{API}/tokens?user={other.username}&limit=2"
    while url is not None:
        status, page = call(server, url, key=admin)
        assert status == 200
        seen += [t["prefix"] for t in page["items"]]
        url = page["next"]
    assert seen == [key[:8] for key in made]


def test_others_tokens_are_404(server: ServerProcess) -> None:
    """Disabling or deleting somebody else's token is 404 (as a missing one), and it stays enabled."""
    victim = make_user()
    make_token(victim)
    pk = Token.objects.get(user=victim).pk
    key = token_maker()[1]
    assert call(server, f"/tokens/{pk}/disable", "POST", key)[0] == 404
    assert call(server, f"/tokens/{pk}", "DELETE", key)[0] == 404
    assert Token.objects.get(pk=pk).enabled


async def test_disable_closes_that_tokens_socket(server: ServerProcess) -> None:
    """Disabling a token over HTTP closes the socket opened with it (4401); another token's stays."""
    owner = make_user()
    doomed, kept = make_token(owner), make_token(owner)
    slug = make_topic(public=False, anonymous=False, consumers=(owner,))
    closing = await subscribe(server.ws, slug, headers=auth(doomed))
    staying = await subscribe(server.ws, slug, "other", headers=auth(kept))
    pk = Token.objects.get(key_hash=hash_key(doomed)).pk
    status, body = call(server, f"/tokens/{pk}/disable", "POST", kept)
    assert status == 200 and body["enabled"] is False
    await closed_with(closing, 4401)
    assert staying.close_code is None
    assert call(server, "/tokens", key=doomed)[0] == 401


def test_deleted_token_no_longer_authenticates(server: ServerProcess) -> None:
    """A user deletes their own token (204); its key is then a 401."""
    user = make_user()
    key = make_token(user)
    pk = Token.objects.get(user=user).pk
    assert call(server, f"/tokens/{pk}", "DELETE", key) == (204, None)
    assert call(server, "/tokens", key=key)[0] == 401
