"""What a pong or an ``api_info`` answer on ``/ws/status-ping`` may cost (no I/O; callers pass the time).

Anyone who may consume a topic may answer for it, as fast as they like, and each answer would be an
UPDATE (and a re-read for the status viewers). A pong only says "someone answered by now", so one
written per ``min_interval_s`` per topic says the same as all of them, provided that interval is well
below ``PONG_GRACE_S`` (the rule accepts a pong up to the grace before the ping it answers). An
``api_info`` answer carries data, so it is never acked without being written, except when it repeats
the one this process wrote for the topic within the interval; a different one within the interval is
refused (a module answers one probe per attach: two APIs for one topic within a second are a flood or
two versions of a module fighting). It is bounded in size and depth before it is stored, since the
admin and the status viewers decode it again and again. A write that fails gives its turn back, so the
next answer is written.
"""

from __future__ import annotations

import enum
import hashlib

from app import codec


def api_info_problem(text: str, value: object, *, max_bytes: int) -> str | None:
    """Why an ``api_info`` answer (the JSON ``text`` and what it parsed to) may not be stored."""
    size = len(text.encode())
    if size > max_bytes:
        return f"api_info is {size} bytes, more than the {max_bytes} allowed"
    if codec.nests_too_deeply(text, value):
        return f"api_info nests deeper than {codec.MAX_DEPTH} levels"
    # What PostgreSQL's jsonb cannot hold (a NUL) failed the write there, logging a traceback.
    return codec.json_refusal(value, "api_info")


class ApiInfoWrite(enum.Enum):
    WRITE = "write"
    WRITTEN = "written within the interval"
    TOO_SOON = "another one was written within the interval"


class AnswerWrites:
    """Which answers to write, per topic: pongs and ``api_info`` answers each at most once per
    ``min_interval_s``; a repeated ``api_info`` within that time not at all."""

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

    def pong_failed(self, slug: str) -> None:
        """The pong could not be written: the next one is."""
        self._pongs.pop(slug, None)

    def api_info(self, slug: str, text: str, now: float) -> ApiInfoWrite:
        """Whether to write this ``api_info`` answer (it counts as written at ``now`` if so)."""
        self._prune(now)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        last = self._apis.get(slug)
        if last is not None and now - last[0] < self.min_interval_s:
            return ApiInfoWrite.WRITTEN if last[1] == digest else ApiInfoWrite.TOO_SOON
        self._apis[slug] = (now, digest)
        return ApiInfoWrite.WRITE

    def api_info_failed(self, slug: str) -> None:
        """The api_info could not be written: the next one is."""
        self._apis.pop(slug, None)

    def _prune(self, now: float) -> None:
        # Entries older than the interval decide nothing: drop them once per interval, so memory
        # follows the topics answered recently, not every topic ever answered.
        if now - self._pruned_at < self.min_interval_s:
            return
        self._pruned_at = now
        cutoff = now - self.min_interval_s
        self._pongs = {slug: at for slug, at in self._pongs.items() if at > cutoff}
        self._apis = {slug: last for slug, last in self._apis.items() if last[0] > cutoff}
