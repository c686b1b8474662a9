"""The admin on a real server: model names, and tokens added there (key made on the server, shown once,
stored hashed as ``manage.py createtoken`` stores it)."""

from __future__ import annotations

import hashlib
import html
import re
import urllib.parse
from typing import Any

import pytest
from django.core.management import call_command

from tests.browser import Answer, Browser
from tests.protocol import auth, make_token, make_topic, make_user, set_password, unique
from tests.servers import ServerProcess

TOKENS = "/admin/switchyard_auth/token/"
KEY = re.compile(r'<code id="token-key"[^>]*>([^<]+)</code>')


def staff(superuser: bool = False, perms: tuple[str, ...] = ()) -> tuple[Any, str]:
    """A staff user with a password (and the given switchyard_auth permissions)."""
    from django.contrib.auth.models import Permission

    user = make_user(is_staff=True, is_superuser=superuser)
    password = set_password(user)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="switchyard_auth", codename=codename))
    return user, password


def logged_in(server: ServerProcess, user: Any, password: str) -> Browser:
    browser = Browser(server.http)
    assert browser.admin_login(user.username, password).status == 302
    return browser


def post_form(browser: Browser, path: str, form: dict[str, str]) -> Answer:
    browser.request(path)  # the form page, for its CSRF cookie
    body = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": browser.cookie("csrftoken") or ""}).encode()
    return browser.request(path, "POST", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                "Referer": browser.base + path})


def add_token(browser: Browser, owner: Any, comment: str, enabled: bool = True) -> Answer:
    form = {"user": str(owner.pk), "comment": comment, **({"enabled": "on"} if enabled else {})}
    return post_form(browser, f"{TOKENS}add/", form)


def shown_key(answer: Answer) -> str:
    found = KEY.search(answer.body.decode())
    assert found, answer.body.decode()[:2000]
    return html.unescape(found.group(1))


def test_models_match_migrations() -> None:
    """The models need no migration that is not in the repository."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_admin_index_names_deliveries(server: ServerProcess) -> None:
    """The admin menu says "Deliveries", not "Deliverys"."""
    page = logged_in(server, *staff(superuser=True)).request("/admin/").body.decode()
    assert "Deliveries" in page and "Deliverys" not in page


def test_add_form_asks_only_user_comment_enabled(server: ServerProcess) -> None:
    """The add form has user, comment and enabled, and no field for a key or its hash."""
    page = logged_in(server, *staff(superuser=True)).request(f"{TOKENS}add/").body.decode()
    names = set(re.findall(r'<(?:input|select|textarea)[^>]* name="([^"]+)"', page))
    assert {"user", "comment", "enabled"} <= names, names
    assert not names & {"key", "key_hash", "prefix"}, names


def test_added_token_key_shown_once_works_and_is_stored_hashed(server: ServerProcess) -> None:
    """The page answering the form shows a key that authenticates its user; the DB holds only its hash."""
    from app.auth.models import Token

    browser = logged_in(server, *staff(superuser=True))
    owner = make_user()
    comment = unique("admin-issued")
    answer = add_token(browser, owner, comment)
    assert answer.status == 200, answer.body[:500]
    assert "no-store" in answer.headers["cache-control"]
    key = shown_key(answer)
    token = Token.objects.get(comment=comment)
    assert (token.user_id, token.enabled) == (owner.pk, True)
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest() and token.prefix == key[:8]
    assert not any(key in str(value) for value in Token.objects.filter(pk=token.pk).values().get().values())
    private = make_topic(public=False, anonymous=False, consumers=(owner,))
    status = f"/api/v1/topics/{private}/status"
    assert Browser(server.http).request(status).status == 404
    assert Browser(server.http).request(status, headers=auth(key)).status == 503  # visible: unknown


def test_key_not_shown_again(server: ServerProcess) -> None:
    """The token list and the token's change page show its prefix, never its key."""
    from app.auth.models import Token

    browser = logged_in(server, *staff(superuser=True))
    comment = unique("shown-once")
    key = shown_key(add_token(browser, make_user(), comment))
    token = Token.objects.get(comment=comment)
    for path in (TOKENS, f"{TOKENS}?q={comment}", f"{TOKENS}{token.pk}/change/", f"{TOKENS}{token.pk}/history/"):
        page = browser.request(path).body.decode()
        assert key not in page and key[8:20] not in page, path
    assert token.prefix in browser.request(f"{TOKENS}?q={comment}").body.decode()


def test_token_added_disabled_does_not_authenticate(server: ServerProcess) -> None:
    """A token added with "enabled" unticked is stored disabled and its key authenticates nobody."""
    from app.auth.services import user_for_key

    browser = logged_in(server, *staff(superuser=True))
    key = shown_key(add_token(browser, make_user(), unique("off"), enabled=False))
    assert user_for_key(key) is None


def test_change_form_cannot_move_a_token_to_another_user(server: ServerProcess) -> None:
    """On an existing token the user is read-only: a posted other user is ignored."""
    from app.auth.models import Token

    browser = logged_in(server, *staff(superuser=True))
    owner, other = make_user(), make_user()
    comment = unique("keep-owner")
    add_token(browser, owner, comment)
    token = Token.objects.get(comment=comment)
    answer = post_form(browser, f"{TOKENS}{token.pk}/change/", {"user": str(other.pk), "comment": comment})
    assert answer.status == 302, answer.body[:500]
    token.refresh_from_db()
    assert (token.user_id, token.enabled) == (owner.pk, False)


# Django logs a refused permission with its traceback.
@pytest.mark.server_errors(r"Forbidden \(Permission denied\): /admin/switchyard_auth/token/add/")
def test_staff_without_add_permission_gets_403(server: ServerProcess) -> None:
    """A staff user who may only view tokens gets 403 on the add form and on posting it; no token is made."""
    from app.auth.models import Token

    browser = logged_in(server, *staff(perms=("view_token",)))
    assert browser.request(TOKENS).status == 200
    assert browser.request(f"{TOKENS}add/").status == 403
    comment = unique("refused")
    assert add_token(browser, make_user(), comment).status == 403
    assert not Token.objects.filter(comment=comment).exists()


def test_staff_with_add_permission_adds_token_for_themself(server: ServerProcess) -> None:
    """A non-superuser granted add_token gets a key for their own user."""
    from app.auth.models import Token

    user, password = staff(perms=("view_token", "add_token"))
    comment = unique("granted")
    assert len(shown_key(add_token(logged_in(server, user, password), user, comment))) >= 40
    assert Token.objects.get(comment=comment).user_id == user.pk


def user_choices(page: str) -> list[str]:
    found = re.search(r'<select[^>]* name="user"[^>]*>(.*?)</select>', page, re.S)
    assert found, page[:2000]
    return re.findall(r'<option value="([^"]*)"', found.group(1))


def test_staff_add_form_offers_only_themself(server: ServerProcess) -> None:
    """A non-superuser's add form lists their own user as the only choice, with no user search."""
    make_user(is_superuser=True)
    user, password = staff(perms=("view_token", "add_token"))
    page = logged_in(server, user, password).request(f"{TOKENS}add/").body.decode()
    assert user_choices(page) == [str(user.pk)]
    assert "admin-autocomplete" not in page


@pytest.mark.parametrize("superuser_target", [True, False])
def test_staff_cannot_add_token_for_another_user(server: ServerProcess, superuser_target: bool) -> None:
    """A forged POST naming another user (a superuser or not) gets a form error; no token is made."""
    from app.auth.models import Token

    browser = logged_in(server, *staff(perms=("view_token", "add_token")))
    comment = unique("forged")
    answer = add_token(browser, make_user(is_superuser=superuser_target, is_staff=superuser_target), comment)
    assert answer.status == 200 and "Select a valid choice" in answer.body.decode(), answer.body[:500]
    assert not KEY.search(answer.body.decode())
    assert not Token.objects.filter(comment=comment).exists()


def test_superuser_picks_any_user_by_search(server: ServerProcess) -> None:
    """A superuser's user field is a search box (autocomplete, no list of every user) that finds any user."""
    browser = logged_in(server, *staff(superuser=True))
    page = browser.request(f"{TOKENS}add/").body.decode()
    assert "admin-autocomplete" in page and not any(user_choices(page))
    owner = make_user()
    query = urllib.parse.urlencode({"app_label": "switchyard_auth", "model_name": "token", "field_name": "user",
                                    "term": owner.username})
    found = browser.request(f"/admin/autocomplete/?{query}").json()
    assert [r["id"] for r in found["results"]] == [str(owner.pk)], found


@pytest.mark.parametrize("other_is_superuser", [True, False])
def test_staff_manage_only_their_own_tokens(server: ServerProcess, other_is_superuser: bool) -> None:
    """A staff user with every token permission neither lists, changes nor deletes another user's token
    (a superuser's or not: a token acts as its user); their own they manage."""
    from app.auth.models import Token

    other = make_user(is_superuser=other_is_superuser, is_staff=other_is_superuser)
    make_token(other)
    theirs = Token.objects.get(user=other)
    Token.objects.filter(pk=theirs.pk).update(enabled=False, comment="revoked")
    me, password = staff(perms=("view_token", "add_token", "change_token", "delete_token"))
    make_token(me)
    mine = Token.objects.get(user=me)
    browser = logged_in(server, me, password)
    assert theirs.prefix not in browser.request(f"{TOKENS}?q={other.username}").body.decode()
    for path in (f"{TOKENS}{theirs.pk}/change/", f"{TOKENS}{theirs.pk}/history/"):
        assert browser.request(path).status == 302, path  # "does not exist", back to the admin index
    post_form(browser, f"{TOKENS}{theirs.pk}/change/", {"comment": "taken", "enabled": "on"})
    post_form(browser, f"{TOKENS}{theirs.pk}/delete/", {"post": "yes"})
    assert Token.objects.filter(pk=theirs.pk, enabled=False, comment="revoked").exists()
    answer = post_form(browser, f"{TOKENS}{mine.pk}/change/", {"comment": "managed"})
    assert answer.status == 302 and Token.objects.get(pk=mine.pk).enabled is False


def test_topic_availability_and_api_info_are_not_editable(server: ServerProcess) -> None:
    """The topic form shows last ping, last pong and api_info but has no field for them: modules answer
    them, bounded where they answer (an admin form would store any size or depth)."""
    from app.broker.models import Topic

    slug = make_topic()
    page = logged_in(server, *staff(superuser=True)).request(
        f"/admin/broker/topic/{Topic.objects.get(slug=slug).pk}/change/").body.decode()
    assert 'name="slug"' in page
    for field in ("api_info", "last_ping", "last_pong"):
        assert f'name="{field}"' not in page, field


@pytest.mark.server_errors(r"Forbidden \(Permission denied\): /admin/pulsar/subscription/add/")
def test_subscriptions_listed_read_only_and_unsubscribed_by_action(server: ServerProcess) -> None:
    """Pulsar subscriptions are listed per topic (type, cursor); the admin cannot edit them, only unsubscribe."""
    from app.broker.models import Topic
    from app.pulsar.models import Subscription
    from app.pulsar.services import open_subscription

    slug = make_topic(dasf=False)
    state = open_subscription(Topic.objects.get(slug=slug).pk, "audit", "Failover", "anonymous")
    browser = logged_in(server, *staff(superuser=True))
    listing = browser.request(f"/admin/pulsar/subscription/?q={slug}").body.decode()
    assert "audit" in listing and "Failover" in listing and slug in listing
    assert browser.request("/admin/pulsar/subscription/add/").status == 403
    answer = post_form(browser, "/admin/pulsar/subscription/",
                       {"action": "unsubscribe", "_selected_action": str(state.id)})
    assert answer.status == 302
    assert not Subscription.objects.filter(pk=state.id).exists()
