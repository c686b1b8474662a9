"""``manage.py disabletoken <key>``: disable a token (say, a leaked key); its open sockets close."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.auth.models import Token
from app.auth.services import hash_key


class Command(BaseCommand):
    help = "Disable the token with this key; every server process closes its sockets (code 4401)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key")

    def handle(self, *args: Any, **options: Any) -> None:
        token = Token.objects.filter(key_hash=hash_key(options["key"])).first()
        if token is None:
            raise CommandError("no token has this key")
        if not token.enabled:
            self.stdout.write(f"token {token.prefix}… of {token.user} was already disabled")
            return
        token.enabled = False
        token.save(update_fields=["enabled"])
        self.stdout.write(f"disabled token {token.prefix}… of {token.user}: it authenticates nobody now, and "
                          "its open sockets are closed (4401)")
