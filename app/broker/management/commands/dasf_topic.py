"""``manage.py dasf_topic``: create, change, inspect or remove a topic.

The arguments are dasf-broker-django's, so admins' existing scripts keep working.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from guardian.shortcuts import get_users_with_perms
from guardian.utils import get_anonymous_user

from app.broker.creation import convert_response_topic
from app.broker.models import Topic
from app.broker.permissions import grant
from app.broker.policy import StorePolicy


class Command(BaseCommand):
    help = "Create or modify a broker topic and who may use it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="the topic name")
        parser.add_argument("-n", "--new", action="store_true", help="create the topic if it does not exist")
        parser.add_argument("--public", action="store_const", const=True, dest="public", default=None,
                            help="everyone may publish")
        parser.add_argument("--no-public", action="store_const", const=False, dest="public",
                            help="only permitted users may publish")
        parser.add_argument("--dasf", action="store_const", const=True, dest="dasf", default=None,
                            help="consumers answer DASF ping / api_info (default for new topics)")
        parser.add_argument("--no-dasf", action="store_const", const=False, dest="dasf",
                            help="exclude the topic from pings")
        parser.add_argument("--anonymous", action="store_true",
                            help="make it public and let anonymous clients consume")
        parser.add_argument("-c", "--consumer", action="append", default=[], metavar="USER",
                            help="user who may consume (repeatable)")
        parser.add_argument("-p", "--producer", action="append", default=[], metavar="USER",
                            help="user who may publish (repeatable)")
        parser.add_argument("-vs", "--view-status", action="append", default=[], metavar="USER",
                            help="user who may see the availability (repeatable)")
        parser.add_argument("--create-consumer", action="store_true", help="create missing consumer users")
        parser.add_argument("--create-producer", action="store_true", help="create missing producer users")
        parser.add_argument("--create-view-status", action="store_true", help="create missing status users")
        parser.add_argument("--store-messages", choices=["default", *[p.value for p in StorePolicy]],
                            help="store policy; 'default' uses the server setting")
        parser.add_argument("-rm", "--remove", action="store_true", help="delete the topic")
        parser.add_argument("--convert-response-topic", action="store_true",
                            help="if the topic is a response topic (a request created it), make it a topic of "
                                 "its own: every right on it, its stored responses and its source link are dropped")
        parser.add_argument("-i", "--show-info", action="store_true", help="print the topic as JSON")
        parser.add_argument("-db", "--database", default="default", help="database alias")

    def handle(self, *args: Any, **options: Any) -> None:
        self.created_users: list[str] = []
        db = options["database"]
        slug = options["slug"]
        with transaction.atomic(using=db):
            topic = Topic.objects.using(db).filter(slug=slug).first()
            if options["remove"]:
                if topic is None:
                    raise CommandError(f"topic {slug} does not exist")
                topic.delete()
                self.stdout.write(f"removed topic {slug}")
                return
            before = None if topic is None else _summary(topic)
            if topic is None:
                if not options["new"]:
                    raise CommandError(f"topic {slug} does not exist (use -n / --new to create it)")
                topic = Topic(slug=slug)
                try:
                    topic.full_clean(exclude=["last_sequence"])
                except ValidationError as exc:
                    raise CommandError(f"invalid topic {slug!r}: {'; '.join(exc.messages)}") from exc
            elif topic.is_response_topic:
                self._claim(topic, options)
            elif options["new"] and topic.created_by:
                # Made by a client (a first message, a dead letter topic, auto-creation), whose rights
                # on it stand: "create" must not hand an admin's grants to a topic someone claimed.
                raise CommandError(
                    f"topic {slug} already exists, created by {topic.created_by} (who holds rights on it): "
                    "choose another name, remove it with -rm, or change it knowingly without -n / --new"
                )
            self._configure(topic, options)
            topic.save(using=db)
            self._grant(topic, options)
            after = _summary(topic)
        if options["show_info"]:
            self.stdout.write(json.dumps(_info(topic), indent=2, default=str))
        else:
            if self.created_users:
                self.stdout.write(f"created user{'s' if len(self.created_users) > 1 else ''} "
                                  f"{', '.join(dict.fromkeys(self.created_users))}")
            self.stdout.write(_report(topic.slug, before, after))

    def _claim(self, topic: Topic, options: dict[str, Any]) -> None:
        """A request made this topic: whoever sent it holds rights on it, so it is never taken over
        silently (the admin's grants would join the requester's)."""
        if options["convert_response_topic"]:
            convert_response_topic(topic)
            self.stdout.write(f"converted response topic {topic.slug} into a topic of its own "
                              "(its rights and stored responses were dropped)")
            return
        if options["new"] or _changes(options):
            source = topic.response_for.slug if topic.response_for is not None else "?"
            raise CommandError(
                f"{topic.slug} is a response topic (of {source}, created by a request of "
                f"{topic.created_by or 'unknown'}), not a topic of its own: choose another name, remove it "
                "with -rm, or take it over with --convert-response-topic (drops every right on it and its "
                "stored responses)"
            )

    def _configure(self, topic: Topic, options: dict[str, Any]) -> None:
        if options["public"] is not None:
            topic.is_public = options["public"]
        if options["anonymous"]:
            topic.is_public = True
        if options["dasf"] is not None:
            topic.supports_dasf = options["dasf"]
        if options["store_messages"]:
            topic.store_messages = None if options["store_messages"] == "default" else options["store_messages"]

    def _grant(self, topic: Topic, options: dict[str, Any]) -> None:
        if options["anonymous"]:
            grant(get_anonymous_user(), topic, "can_consume")
        for key, perm, create in (
            ("consumer", "can_consume", options["create_consumer"]),
            ("producer", "can_produce", options["create_producer"]),
            ("view_status", "can_view_status", options["create_view_status"]),
        ):
            for username in options[key]:
                user, created = _user(username, create)
                if created:
                    self.created_users.append(username)
                grant(user, topic, perm)


def _changes(options: dict[str, Any]) -> bool:
    """Whether the options change the topic or its rights (not just show or remove it)."""
    return bool(
        options["public"] is not None or options["dasf"] is not None or options["anonymous"]
        or options["store_messages"] or options["consumer"] or options["producer"] or options["view_status"]
    )


def _user(username: str, create: bool) -> tuple[Any, bool]:
    """The user, and whether it was created now."""
    model = get_user_model()
    if create:
        return model.objects.get_or_create(username=username)
    try:
        return model.objects.get(username=username), False
    except model.DoesNotExist as exc:
        raise CommandError(f"user {username!r} does not exist (use the matching --create-* flag)") from exc


def _users(topic: Topic, perm: str) -> list[str]:
    found: Any = get_users_with_perms(topic, only_with_perms_in=[perm], with_group_users=True)
    return sorted(user.get_username() for user in found)


# What is reported after a change, in this order: (key, label).
_RIGHTS = (("can_produce", "produce"), ("can_consume", "consume"), ("can_view_status", "view status"))


def _summary(topic: Topic) -> dict[str, Any]:
    """The topic's settings and who holds which right, as the report shows them."""
    anonymous = get_anonymous_user().get_username()
    policy = topic.store_messages or f"default ({topic.policy.value})"
    summary: dict[str, Any] = {
        "public": topic.is_public,
        "dasf": topic.supports_dasf,
        "store": policy,
    }
    for perm, _ in _RIGHTS:
        summary[perm] = ["anonymous clients" if name == anonymous else name for name in _users(topic, perm)]
    return summary


def _report(slug: str, before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """What was done (created / updated with its changes / unchanged), then the settings and rights now."""
    settings_now = (f"{'public' if after['public'] else 'private'}, {'DASF' if after['dasf'] else 'not DASF'}, "
                    f"store policy {after['store']}")
    if before is None:
        head = f"created topic {slug}"
    else:
        changes = [f"{label} {_shown(before[key])} -> {_shown(after[key])}"
                   for key, label in (("public", "public"), ("dasf", "DASF"), ("store", "store policy"))
                   if before[key] != after[key]]
        for perm, label in _RIGHTS:
            added = [name for name in after[perm] if name not in before[perm]]
            if added:
                changes.append(f"may {label}: +{', +'.join(added)}")
        head = f"updated topic {slug}: {'; '.join(changes)}" if changes else f"topic {slug} unchanged"
    lines = [head, f"  {'settings:':<13}{settings_now}"]
    for perm, label in _RIGHTS:
        holders = _viewers(after) if perm == "can_view_status" else list(after[perm])
        if perm == "can_produce" and after["public"]:
            holders.insert(0, "anyone (public)")
        lines.append(f"  {label + ':':<13}{', '.join(holders) or 'none'}")
    return "\n".join(lines)


def _viewers(summary: dict[str, Any]) -> list[str]:
    """Who may see the topic's status (app/broker/permissions.py rights_on): anyone on a public topic,
    else whoever holds the right to view it, to produce or to consume."""
    if summary["public"]:
        return ["anyone (public topic)"]
    return sorted({*summary["can_view_status"], *summary["can_produce"], *summary["can_consume"]})


def _shown(value: Any) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def _info(topic: Topic) -> dict[str, Any]:
    return {
        "slug": topic.slug,
        "is_public": topic.is_public,
        "supports_dasf": topic.supports_dasf,
        "store_messages": topic.store_messages or f"default ({topic.policy.value})",
        "is_response_topic": topic.is_response_topic,
        "response_for": topic.response_for.slug if topic.response_for is not None else None,
        "created_by": topic.created_by or None,
        "consumers": _users(topic, "can_consume"),
        "producers": _users(topic, "can_produce"),
        "status_viewers": _users(topic, "can_view_status"),
        "last_ping": topic.last_ping,
        "last_pong": topic.last_pong,
        "messages": topic.messages.count(),
        "api_info": topic.api_info,
    }
