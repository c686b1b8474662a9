"""Which topics exist, known to this process without a query (no I/O).

Loaded once when the server starts and kept current by announcements (a topic created or deleted
anywhere), so a connection to a name that is not a topic costs no database round trip: a flood of
connections to random names must not queue ahead of everyone else's ORM work. Until it is loaded
(a runtime that never started, as in in-process tests) every name is looked up, and so it is while
the announcement reader cannot catch up (``BrokerRuntime.topic_view``).
"""

from __future__ import annotations

from collections.abc import Iterable


class TopicDirectory:
    def __init__(self) -> None:
        self._slugs: set[str] = set()
        self.ready = False

    def load(self, slugs: Iterable[str]) -> None:
        self._slugs = set(slugs)
        self.ready = True

    def missing(self, slug: str) -> bool:
        """True when ``slug`` is known not to be a topic (a lookup would find nothing)."""
        return self.ready and slug not in self._slugs

    def found(self, slug: str, exists: bool) -> None:
        """Record what a lookup or an announcement said about ``slug``."""
        if exists:
            self._slugs.add(slug)
        else:
            self._slugs.discard(slug)

    def __len__(self) -> int:
        return len(self._slugs)
