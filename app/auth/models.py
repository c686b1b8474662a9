"""API tokens: the key is shown once; only its sha256 hash is stored."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Token(models.Model):
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters of the key, so an admin can tell tokens apart without the secret.
    prefix = models.CharField(max_length=8, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="switchyard_tokens"
    )
    enabled = models.BooleanField(default=True)
    comment = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class LoginFailure(models.Model):
    """One admin login attempt counted as failed against its client address or its username (one
    row each) for ``LOGIN_FAILURE_WINDOW_S``; counted before its password is checked and withdrawn
    if it succeeds (app/auth/login_throttle.py). In the database so every server process sees them.

    Only a sha256 digest of the address or username is stored: people type their password into the
    username field, and a digest keeps every row the same size whatever was posted."""

    scope = models.CharField(max_length=8)
    digest = models.CharField(max_length=64)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["scope", "digest", "at"]), models.Index(fields=["at"])]

    def __str__(self) -> str:
        return f"{self.scope} {self.digest[:8]}… at {self.at:%Y-%m-%d %H:%M:%S}"
