"""The messages of a subscription waiting for a consumer with credit (app/pulsar/dispatcher.py).
Plain state, no I/O.

One line in order for every type but ``Key_Shared``, which keeps one line per key: a key whose
consumer has no credit is then passed over at once, however many of its messages wait, and the
later messages of a key stay behind its earlier ones. Redelivered messages waiting here are indexed
by id, so an ack that crosses a redelivery finds its message without a scan (and an unknown id
costs nothing).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from app.pulsar.members import Pending


class Waiting:
    def __init__(self, by_key: bool) -> None:
        self.by_key = by_key
        self._lines: dict[str, deque[Pending]] = {}
        self._count = 0
        self._again: dict[str, Pending] = {}  # redelivered messages waiting, by id
        # Live messages of a `disabled` topic dropped since the queue was last empty.
        self.dropped = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Pending]:
        for line in self._lines.values():
            yield from line

    def _line_of(self, item: Pending) -> deque[Pending]:
        key = item.key if self.by_key else ""
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = deque()
        return line

    def _added(self, item: Pending) -> None:
        self._count += 1
        if item.count:
            self._again[item.message_id] = item

    def append(self, item: Pending) -> None:
        self._line_of(item).append(item)
        self._added(item)

    def put_first(self, items: Iterable[Pending]) -> None:
        """``items`` (in publish order) go ahead of what waits (of their key)."""
        for item in reversed(list(items)):
            self._line_of(item).appendleft(item)
            self._added(item)

    def keys(self) -> list[str]:
        """The keys with messages waiting ("" for every message but under Key_Shared)."""
        return list(self._lines)

    def first(self, key: str = "") -> Pending | None:
        line = self._lines.get(key)
        return line[0] if line else None

    def pop_first(self, key: str = "") -> Pending:
        line = self._lines[key]
        item = line.popleft()
        if not line:
            del self._lines[key]
        self._removed(item)
        return item

    def pop_oldest(self) -> Pending | None:
        """The first message of the first line (the oldest waiting, but under Key_Shared)."""
        for key in self._lines:
            return self.pop_first(key)
        return None

    def _removed(self, item: Pending) -> None:
        self._count -= 1
        if item.count:
            self._again.pop(item.message_id, None)
        if not self._count:
            self.dropped = 0

    def take_back(self, message_id: str) -> Pending | None:
        """The redelivered message ``message_id`` waiting here, taken out, or None."""
        item = self._again.get(message_id)
        if item is None:
            return None
        key = item.key if self.by_key else ""
        line = self._lines[key]
        line.remove(item)
        if not line:
            del self._lines[key]
        self._removed(item)
        return item

    def add_live(self, item: Pending, most: int) -> Pending | None:
        """A live message of a `disabled` topic (nothing stored could replace one): queued, and the
        oldest waiting dropped and returned when more than ``most`` would wait."""
        self.append(item)
        if self._count <= most:
            return None
        self.dropped += 1
        return self.pop_oldest()

    def clear(self) -> None:
        self._lines.clear()
        self._again.clear()
        self._count = 0
        self.dropped = 0
