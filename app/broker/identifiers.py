"""The message ids the broker gives: random version-4 UUIDs, as ``uuid.uuid4()`` makes them, from
random bytes read 4 KiB at a time. ``uuid4``'s ``os.urandom`` call per message was 5-8 % of the
event loop under load (benchmarks/RESULTS.md).

They stay unpredictable on purpose: the broker refuses a stored messageId as a duplicate, so a
producer that could guess the next id could make another producer's message fail.
"""

from __future__ import annotations

import os
import uuid
from collections import deque

IDS_PER_READ = 256

# Ready ids' bytes: deque's append and pop are atomic, so threads may share it.
_ready: deque[bytes] = deque()
# A forked child must not hand out the ids its parent has ready.
os.register_at_fork(after_in_child=_ready.clear)


def new_message_id() -> uuid.UUID:
    try:
        raw = _ready.popleft()
    except IndexError:
        pool = os.urandom(16 * IDS_PER_READ)
        _ready.extend(pool[i:i + 16] for i in range(16, len(pool), 16))
        raw = pool[:16]
    return uuid.UUID(bytes=raw, version=4)
