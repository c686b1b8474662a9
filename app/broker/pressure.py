"""Back-pressure on producers, as plain decisions (no I/O): the memory a message waiting for its
commit holds, and whether a producer must wait for commits before the server reads its next frame.

A producer can send faster than the database stores (megabyte messages into SQLite); without a bound
the messages submitted to the group-commit writer pile up in memory. Instead the server stops reading
the producer's socket (TCP slows the client) until its commits catch up: nothing is dropped or
refused, and acks still follow commits in order.
"""

from __future__ import annotations

import sys

from app.broker.services import NewMessage

# The most memory parsed JSON takes per character of its text: ``[{},{},...]`` parses to an empty
# dict (64 bytes) and a pointer (8) per three characters. Properties are counted at this rate, so
# no shape of them holds more than the op is counted for.
PARSED_JSON_BYTES_PER_CHAR = 24


def held_bytes(op: NewMessage) -> int:
    """The memory ``op`` holds until it is committed, in bytes (at least): its delivery frame, its
    payload and a string context by their size in memory (a string of wide characters takes 2 or 4
    bytes per character), and its parsed properties at the worst rate for their length. That length
    is taken as the frame's characters outside payload and context (the broker's fields included):
    a few kilobytes for a usual message, so it is not encoded again to find out."""
    size = sys.getsizeof(op.frame)
    rest = len(op.frame)
    if op.payload is not None:
        size += sys.getsizeof(op.payload)
        rest -= len(op.payload)
    if isinstance(op.context, str):
        size += sys.getsizeof(op.context)
        rest -= len(op.context)
    return size + PARSED_JSON_BYTES_PER_CHAR * max(rest, 0)


def must_wait(own_bytes: int, own_limit: int, writer_bytes: int, writer_limit: int) -> bool:
    """Whether a producer with ``own_bytes`` not yet committed waits before its next frame.

    Over its own limit it waits; over the writer's limit it waits only while some of the writer's
    bytes are its own, so it is released by its own commits and a producer with nothing pending is
    never held up by others (each sends at most one message past the writer's limit). One message
    always goes, however large: a producer with nothing pending never waits.
    """
    if own_bytes <= 0:
        return False
    return own_bytes > own_limit or writer_bytes > writer_limit
