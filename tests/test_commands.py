"""Management commands: dasf_topic (dasf-broker-django's arguments) and createtoken."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from guardian.utils import get_anonymous_user

from app.auth.models import Token
from app.auth.services import hash_key, user_for_key
from app.broker.models import Topic
from tests.protocol import make_user, unique
from tests.servers import ROOT


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def run_with_stderr(err: StringIO, *args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue()


def test_new_anonymous_topic():
    """--new --anonymous makes a public topic anonymous clients may consume."""
    slug = unique()
    run("dasf_topic", slug, "--new", "--anonymous")
    topic = Topic.objects.get(slug=slug)
    assert topic.is_public and get_anonymous_user().has_perm("broker.can_consume", topic)


def test_rights_and_policy():
    """-c / -p / -vs grant rights, --store-messages sets the policy, --no-dasf excludes pings."""
    consumer, producer, viewer = make_user(), make_user(), make_user()
    slug = unique()
    run("dasf_topic", slug, "-n", "--no-public", "--no-dasf", "-c", consumer.username, "-p", producer.username,
        "-vs", viewer.username, "--store-messages", "cacheall")
    topic = Topic.objects.get(slug=slug)
    assert (topic.is_public, topic.supports_dasf, topic.store_messages) == (False, False, "cacheall")
    assert consumer.has_perm("broker.can_consume", topic)
    assert producer.has_perm("broker.can_produce", topic)
    assert viewer.has_perm("broker.can_view_status", topic)


def test_create_users_flag():
    """--create-consumer creates a missing consumer user."""
    slug, name = unique(), unique("newuser")
    run("dasf_topic", slug, "-n", "-c", name, "--create-consumer")
    assert Topic.objects.filter(slug=slug).exists()
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.filter(username=name).exists()


def test_missing_topic_without_new():
    """Changing a topic that does not exist fails unless --new is given."""
    with pytest.raises(CommandError, match="does not exist"):
        run("dasf_topic", unique())


def test_remove_and_info():
    """-i prints the topic as JSON; -rm deletes it."""
    slug = unique()
    info = json.loads(run("dasf_topic", slug, "-n", "--store-messages", "store", "-i"))
    assert info["slug"] == slug and info["store_messages"] == "store"
    run("dasf_topic", slug, "-rm")
    assert not Topic.objects.filter(slug=slug).exists()


def response_topic() -> tuple[str, object]:
    """A response topic as a request leaves it: its requester may consume it."""
    from app.broker.permissions import grant

    requester = make_user()
    source = Topic.objects.create(slug=unique())
    topic = Topic.objects.create(slug=f"{source.slug}_r", response_for=source, created_by=f"user:{requester.pk}")
    grant(requester, topic, "can_consume")
    return topic.slug, requester


def test_changing_a_response_topic_is_refused():
    """Granting on a response topic without --convert-response-topic fails; -i still shows it."""
    slug, requester = response_topic()
    admin_pick = make_user()
    with pytest.raises(CommandError, match="is a response topic"):
        run("dasf_topic", slug, "-c", admin_pick.username)
    info = json.loads(run("dasf_topic", slug, "-i"))
    assert info["consumers"] == [requester.username] and info["created_by"] == f"user:{requester.pk}"


def test_new_on_a_topic_a_client_created_is_refused():
    """--new on a topic a client created (its rights stand) fails instead of adopting it."""
    squatter = make_user()
    topic = Topic.objects.create(slug=unique(), created_by=f"user:{squatter.pk}", supports_dasf=False)
    with pytest.raises(CommandError, match="already exists, created by"):
        run("dasf_topic", topic.slug, "--new", "--dasf", "-c", make_user().username)
    topic.refresh_from_db()
    assert not topic.supports_dasf


def test_changing_a_topic_a_client_created_without_new():
    """Without --new an admin may still change a client's topic knowingly."""
    topic = Topic.objects.create(slug=unique(), created_by="user:1", supports_dasf=False)
    run("dasf_topic", topic.slug, "--dasf")
    topic.refresh_from_db()
    assert topic.supports_dasf


def test_conversion_drops_the_requesters_rights():
    """--convert-response-topic leaves only the admin's grants and no source link."""
    slug, requester = response_topic()
    owner = make_user()
    info = json.loads(run("dasf_topic", slug, "--new", "--convert-response-topic", "-c", owner.username, "-i")
                      .split("\n", 1)[1])
    assert info["consumers"] == [owner.username] and not info["is_response_topic"] and info["created_by"] is None


def test_name_longer_than_the_limit(settings):
    """--new refuses a name longer than TOPIC_NAME_MAX_CHARS."""
    settings.TOPIC_NAME_MAX_CHARS = 20
    slug = "n" * 21
    with pytest.raises(CommandError, match="TOPIC_NAME_MAX_CHARS"):
        run("dasf_topic", slug, "--new")
    assert not Topic.objects.filter(slug=slug).exists()


def test_createtoken_prints_only_the_key():
    """createtoken prints just the key on stdout, stores only its sha256, and the key authenticates."""
    name = unique("tok")
    out = subprocess.run(
        [sys.executable, "manage.py", "createtoken", name, "--create-user"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    key = out.strip()
    assert "\n" not in key and len(key) > 30
    token = Token.objects.get(user__username=name)
    assert token.key_hash == hash_key(key) and key not in (token.key_hash, token.prefix)
    assert user_for_key(key).username == name


def test_createtoken_says_what_it_did_on_stderr():
    """createtoken tells on stderr which token it made for whom (a new user, a superuser), never the key."""
    name = unique("tok")
    err = StringIO()
    call_command("createtoken", name, "--create-user", "--superuser", stdout=StringIO(), stderr=err)
    token = Token.objects.get(user__username=name)
    assert err.getvalue().startswith(f"created token {token.prefix}… for {name} (new user, superuser);"), err.getvalue()
    err = StringIO()
    key = run_with_stderr(err, "createtoken", name).strip()
    assert err.getvalue().startswith(f"created token {key[:8]}… for {name};") and key not in err.getvalue()


def test_disabled_token_authenticates_nobody():
    """A disabled token is treated as no token."""
    from app.auth.services import create_token

    token, key = create_token(make_user())
    token.enabled = False
    token.save()
    assert user_for_key(key) is None


def test_disabletoken():
    """disabletoken turns a key off and says so (again: already disabled); an unknown key is an error."""
    from app.auth.services import create_token

    user = make_user()
    token, key = create_token(user)
    assert run("disabletoken", key).startswith(f"disabled token {token.prefix}… of {user.username}:")
    token.refresh_from_db()
    assert not token.enabled and user_for_key(key) is None
    assert run("disabletoken", key) == f"token {token.prefix}… of {user.username} was already disabled\n"
    with pytest.raises(CommandError):
        run("disabletoken", "not-a-key")


def test_new_topic_says_it_was_created_and_who_may_do_what():
    """dasf_topic --new --anonymous prints that it created the topic, its settings and the rights now."""
    slug = unique()
    assert run("dasf_topic", slug, "--new", "--anonymous").splitlines() == [
        f"created topic {slug}",
        "  settings:    public, DASF, store policy default (cache)",
        "  produce:     anyone (public)",
        "  consume:     anonymous clients",
        "  view status: anyone (public topic)",
    ]


def test_grant_says_what_changed():
    """A grant and a flag change print "updated" with the changes, then the rights now; users made are named."""
    slug, alice, bob = unique(), make_user(), unique("bob")
    run("dasf_topic", slug, "--new")
    out = run("dasf_topic", slug, "-c", alice.username, "-vs", bob, "--create-view-status", "--store-messages",
              "store").splitlines()
    assert out[0] == f"created user {bob}"
    assert out[1] == (f"updated topic {slug}: store policy default (cache) -> store; may consume: +{alice.username}; "
                      f"may view status: +{bob}")
    assert out[2:] == ["  settings:    private, DASF, store policy store", "  produce:     none",
                       f"  consume:     {alice.username}", f"  view status: {', '.join(sorted([alice.username, bob]))}"]


def test_view_status_names_producers_and_consumers_of_a_private_topic():
    """On a private topic whoever may produce or consume may view its status too; with nobody, none."""
    slug, alice, bob = unique(), make_user(), make_user()
    assert run("dasf_topic", slug, "--new").splitlines()[-1] == "  view status: none"
    out = run("dasf_topic", slug, "-p", alice.username, "-c", bob.username).splitlines()
    assert out[-1] == f"  view status: {', '.join(sorted([alice.username, bob.username]))}"


def test_repeated_grant_says_unchanged():
    """Granting a right a user already holds reports the topic unchanged."""
    slug, alice = unique(), make_user()
    run("dasf_topic", slug, "--new", "-p", alice.username)
    assert run("dasf_topic", slug, "-p", alice.username).splitlines()[0] == f"topic {slug} unchanged"


def test_keys_never_start_with_a_dash(monkeypatch):
    """A new key never starts with '-' (a command line would read it as an option): such a draw is made again."""
    import secrets

    from app.auth.services import create_token

    draws = iter(["-starts-with-a-dash", "fine-key"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(draws))
    _, key = create_token(make_user())
    assert key == "fine-key"


def test_disabletoken_reads_a_key_after_double_dash():
    """A key given after '--' is read as the key, whatever it starts with (older keys may start with '-')."""
    from app.auth.services import create_token

    token, key = create_token(make_user())
    assert run("disabletoken", "--", key).startswith(f"disabled token {token.prefix}")
