"""``manage.py createtoken <username> [--create-user] [--superuser]``: the new key on stdout, alone (so that
``KEY=$(manage.py createtoken alice)`` works), and what was done on stderr."""

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
        model = get_user_model()
        existed = model.objects.filter(username=options["username"]).exists()
        try:
            user = ensure_user(
                options["username"], create=options["create_user"], superuser=options["superuser"]
            )
        except model.DoesNotExist as exc:
            raise CommandError(f"user {options['username']!r} does not exist (use --create-user)") from exc
        token, key = create_token(user, comment=options["comment"])
        self.stdout.write(key)
        notes = [] if existed else ["new user"]
        if options["superuser"]:
            notes.append("superuser")
        about = f" ({', '.join(notes)})" if notes else ""
        self.stderr.write(f"created token {token.prefix}… for {user.get_username()}{about}; its key is printed "
                          "only this once (only its sha256 is stored)")
