"""Pings sent because a consumer attached (no I/O; callers pass the time).

A backend module that starts between two ping rounds would be ``unknown`` (a new topic, never
pinged) or ``offline`` (it missed the last round) for up to ``PING_INTERVAL_S``. So a consumer
attaching to a DASF source topic has the topic pinged at once, unless its latest ping was answered
(``start_attach_pings`` checks); its pong then makes the topic online within a round trip. Every
attach counts, not only the first in a process: a half-open socket of the module's previous run, or a
consumer that never answers, must not keep its replacement waiting for the next round.

A client attaching and detaching in a loop must not have the server ping and write per connection:
a topic is pinged at most once per ``min_interval_s`` in a process. An attach within that time is
not dropped but coalesced into one ping at the end of it, so a module that attaches just after a
consumer that does not answer (which used the ping up) is still online within ``min_interval_s``.
"""

from __future__ import annotations

from dataclasses import dataclass


def pings_on_attach(*, supports_dasf: bool, is_response_topic: bool) -> bool:
    """Whether a consumer attaching asks for a ping: only for DASF source topics (a response
    topic's consumer is a requester, which answers no ping)."""
    return supports_dasf and not is_response_topic


@dataclass(frozen=True, slots=True)
class AttachPing:
    slug: str
    topic_id: int


class AttachPings:
    """Topics to ping because a consumer attached, each at most once per ``min_interval_s``."""

    def __init__(self, min_interval_s: float) -> None:
        if min_interval_s <= 0:
            raise ValueError("min_interval_s must be positive")
        self.min_interval_s = min_interval_s
        # slug -> when it was last pinged for an attach (entries older than the interval go).
        self._sent: dict[str, float] = {}
        # slug -> (when its ping is due, the topic's id); at most one per topic.
        self._pending: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def request(self, slug: str, topic_id: int, now: float) -> float:
        """A consumer attached to ``slug``: when its ping will go out (``now`` or later)."""
        pending = self._pending.get(slug)
        if pending is not None:
            return pending[0]
        sent = self._sent.get(slug)
        due = now if sent is None else max(now, sent + self.min_interval_s)
        self._pending[slug] = (due, topic_id)
        return due

    def due(self, now: float) -> list[AttachPing]:
        """The pings to send now; they count as sent at ``now``."""
        ready = [AttachPing(slug, topic_id) for slug, (when, topic_id) in self._pending.items() if when <= now]
        for ping in ready:
            del self._pending[ping.slug]
            self._sent[ping.slug] = now
        if ready:
            cutoff = now - self.min_interval_s
            for slug in [slug for slug, sent in self._sent.items() if sent <= cutoff]:
                del self._sent[slug]
        return ready

    def wait_s(self, now: float) -> float | None:
        """How long until the next ping is due (0: one is); None when none is pending."""
        if not self._pending:
            return None
        return max(0.0, min(when for when, _ in self._pending.values()) - now)
