"""``manage.py createtoken <username> [--create-user] [--superuser]``: prints only the new key."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.auth.services import create_token, ensure_user


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")
        parser.add_argument("--superuser", action="store_true", help="make the user a superuser")
        parser.add_argument("--comment", default="", help="note stored with the token")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = ensure_user(
                options["username"], create=options["create_user"], superuser=options["superuser"]
            )
        except get_user_model().DoesNotExist as exc:
            raise CommandError(f"user {options['username']!r} does not exist (use --create-user)") from exc
        _, key = create_token(user, comment=options["comment"])
        self.stdout.write(key)
