from __future__ import annotations

from django.db import models


class Lease(models.Model):
    """Who runs the loop ``name`` until ``expires_at``; renewed while its holder lives."""

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=128, blank=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at:%H:%M:%S}"
