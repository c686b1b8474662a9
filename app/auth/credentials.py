"""Tokens already checked by this process (no I/O): a reconnect storm of one client, or a fleet of
modules sharing a token, costs one lookup per ``AUTH_CACHE_TTL_S``, not one per handshake.

Revocations (announcements) drop entries at once; the time limit only bounds how long a change
that was never announced (a raw SQL update) goes unseen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Credential:
    user: Any
    token_id: int
    principal: str


class CredentialCache:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[Credential, float]] = OrderedDict()
        # Bumped by every revocation: a lookup that overlapped one is not cached.
        self.generation = 0

    def get(self, key_hash: str, now: float) -> Credential | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[key_hash]
            return None
        return entry[0]

    def put(self, key_hash: str, credential: Credential, now: float, generation: int) -> None:
        """Cache what a lookup started at revocation ``generation`` found."""
        if self.ttl_s <= 0 or generation != self.generation:
            return
        self._entries[key_hash] = (credential, now + self.ttl_s)
        self._entries.move_to_end(key_hash)
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def revoke(self, token_id: int | None, principal: str | None) -> None:
        self.generation += 1
        for key_hash, (credential, _) in list(self._entries.items()):
            if credential.token_id == token_id or (principal is not None and credential.principal == principal):
                del self._entries[key_hash]
