"""Token issue and lookup, and the principal a connection acts as.

A key is verified by looking its sha256 up (``key_hash``, a unique index; worker keys the same way, and
the credential cache by the same digest as a dict key), never by comparing it in Python. What that
lookup's time can depend on is how many leading bytes of the candidate's digest match a stored digest.
The caller chooses the key, not its digest: steering a digest's prefix towards a stored one needs sha256
preimages, so timing teaches nothing about any stored key, and a 256-bit random key cannot be guessed
either. A secret that is compared in Python (``METRICS_TOKEN``) uses ``compare_digest``;
tests/test_secret_comparisons.py holds the verifying modules to that.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from app.auth.models import Token

ANONYMOUS_PRINCIPAL = "anonymous"

UserLike = AbstractBaseUser | AnonymousUser


AUTH_SCHEMES = frozenset({"token", "bearer"})


def key_from_authorization(header: str) -> str:
    """The key of ``Token <key>`` or ``Bearer <key>``; "" for anything else (authenticates nobody)."""
    parts = header.split()
    return parts[1] if len(parts) == 2 and parts[0].lower() in AUTH_SCHEMES else ""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(token: Token) -> str:
    """Give an unsaved ``token`` a new key; returns the clear key, of which only the hash is kept."""
    key = secrets.token_urlsafe(32)
    while key.startswith("-"):
        # A key is given on command lines (disabletoken, curl -H ...): one that starts with '-'
        # would be read as an option there.
        key = secrets.token_urlsafe(32)
    token.key_hash = hash_key(key)
    token.prefix = key[:8]
    return key


def create_token(user: Any, comment: str = "") -> tuple[Token, str]:
    """Create a token for ``user``; returns the row and the clear key, which is not stored."""
    token = Token(user=user, comment=comment)
    key = issue_key(token)
    token.save()
    return token, key


def _usable_tokens() -> QuerySet[Token]:
    """Tokens that authenticate: enabled, of an active user."""
    return Token.objects.filter(enabled=True, user__is_active=True)


def token_for_key(key: str) -> Token | None:
    """The enabled token with this key whose user is active, or None."""
    return _usable_tokens().select_related("user").filter(key_hash=hash_key(key)).first()


def still_authenticates(token_id: int | None, user_id: int) -> bool:
    """Whether a connection's token (or, opened with a session, its user) is still enabled and active."""
    if token_id is not None:
        return bool(_usable_tokens().filter(pk=token_id).exists())
    return bool(get_user_model().objects.filter(pk=user_id, is_active=True).exists())


def user_for_key(key: str) -> Any | None:
    """The active user owning an enabled token with this key, or None."""
    token = token_for_key(key)
    return token.user if token is not None else None


def principal_of(user: Any) -> str:
    """Delivery state is kept per principal: the authenticated user, or one anonymous principal."""
    if user is None or not getattr(user, "is_authenticated", False):
        return ANONYMOUS_PRINCIPAL
    from guardian.conf import settings as guardian_settings

    # guardian keeps anonymous grants on a real user row; it is the anonymous principal too.
    if user.get_username() == guardian_settings.ANONYMOUS_USER_NAME:
        return ANONYMOUS_PRINCIPAL
    return f"user:{user.pk}"


def ensure_user(username: str, *, create: bool = False, superuser: bool = False) -> Any:
    model = get_user_model()
    user = model.objects.get_or_create(username=username)[0] if create else model.objects.get(username=username)
    if superuser and not (user.is_superuser and user.is_staff):
        user.is_superuser = user.is_staff = True
        user.save(update_fields=["is_superuser", "is_staff"])
    return user
