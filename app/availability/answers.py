"""What a pong or an ``api_info`` answer on ``/ws/status-ping`` may cost (no I/O; callers pass the time).

Anyone who may consume a topic may answer for it, as fast as they like, and each answer would be an
UPDATE (and a re-read for the status viewers). A pong only says "someone answered by now", so one
written per ``min_interval_s`` per topic says the same as all of them, provided that interval is well
below ``PONG_GRACE_S`` (the rule accepts a pong up to the grace before the ping it answers). An
``api_info`` answer carries data: it is written unless it is the one this process wrote for the topic
within the interval, and it is bounded in size and depth before it is stored, since the admin and the
status viewers decode it again and again.
"""

from __future__ import annotations

import hashlib

from app import codec


def api_info_problem(text: str, value: object, *, max_bytes: int) -> str | None:
    """Why an ``api_info`` answer (the JSON ``text`` and what it parsed to) may not be stored."""
    size = len(text.encode())
    if size > max_bytes:
        return f"api_info is {size} bytes, more than the {max_bytes} allowed"
    if codec.nests_too_deeply(text, value):
        return f"api_info nests deeper than {codec.MAX_DEPTH} levels"
    return None


class AnswerWrites:
    """Which answers to write, per topic: pongs at most once per ``min_interval_s``, an ``api_info``
    unless it repeats the last one written within that time."""

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        # slug -> when a pong was last written; slug -> (when, digest) of the last api_info written.
        self._pongs: dict[str, float] = {}
        self._apis: dict[str, tuple[float, bytes]] = {}
        self._pruned_at = 0.0

    def pong(self, slug: str, now: float) -> bool:
        """Whether to write this pong (it counts as written at ``now`` if so)."""
        self._prune(now)
        last = self._pongs.get(slug)
        if last is not None and now - last < self.min_interval_s:
            return False
        self._pongs[slug] = now
        return True

    def api_info(self, slug: str, text: str, now: float) -> bool:
        """Whether to write this ``api_info`` answer (it counts as written at ``now`` if so)."""
        self._prune(now)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        last = self._apis.get(slug)
        if last is not None and last[1] == digest and now - last[0] < self.min_interval_s:
            return False
        self._apis[slug] = (now, digest)
        return True

    def _prune(self, now: float) -> None:
        # Entries older than the interval decide nothing: drop them once per interval, so memory
        # follows the topics answered recently, not every topic ever answered.
        if now - self._pruned_at < self.min_interval_s:
            return
        self._pruned_at = now
        cutoff = now - self.min_interval_s
        self._pongs = {slug: at for slug, at in self._pongs.items() if at > cutoff}
        self._apis = {slug: last for slug, last in self._apis.items() if last[0] > cutoff}
