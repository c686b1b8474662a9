"""A consumer's ack bookkeeping across reconnects (Sans-I/O: decisions only, no socket).

The broker redelivers, on the next connection, every message the lost one did not ack. A message the
application already holds is not handed to it again: its ``ack()`` goes out on the connection the
message is now in flight on. An ack made while the message is in flight on no connection waits for
its redelivery; one that a lost connection may have dropped is sent again when the message returns.
A message the broker takes back on the same connection (its ack timeout) is handed over again.
"""

from __future__ import annotations

import enum
from collections import OrderedDict

# Message ids remembered as acked, in case their ack was lost with a connection: the most a consumer
# can have in flight (Switchyard's default UNACKED_PER_CONNECTION is 1000) with room to spare.
ACKED_MEMORY = 10_000


class OnDelivery(enum.Enum):
    SURFACE = "surface"  # new to the application: hand it over
    ACK = "ack"  # the application acked it already: ack it on this connection, do not hand it over
    HOLD = "hold"  # the application holds it, unacked: it is in flight here now, nothing to do


class OnAck(enum.Enum):
    SEND = "send"  # in flight on this connection: send the ack now
    DEFER = "defer"  # in flight on no connection: sent when the message is redelivered
    NONE = "none"  # acked already


class Ledger:
    def __init__(self, acked_memory: int = ACKED_MEMORY) -> None:
        self._in_flight: set[str] = set()
        self._held: set[str] = set()
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._acked_memory = acked_memory

    def delivered(self, message_id: str) -> OnDelivery:
        """A delivery of ``message_id`` arrived on the current connection."""
        # A second delivery on one connection: the broker took the message back (its ack timeout) and
        # the application gets it again, as from Pulsar's own clients. Only a new connection's
        # redelivery of a held message is the same delivery again.
        taken_back = message_id in self._in_flight
        self._in_flight.add(message_id)
        if message_id in self._acked:
            self._in_flight.discard(message_id)
            return OnDelivery.ACK
        if message_id in self._held and not taken_back:
            return OnDelivery.HOLD
        self._held.add(message_id)
        return OnDelivery.SURFACE

    def acked(self, message_id: str) -> OnAck:
        """The application acked ``message_id``."""
        if message_id in self._acked and message_id not in self._held:
            return OnAck.NONE
        self._held.discard(message_id)
        self._remember(message_id)
        if message_id in self._in_flight:
            self._in_flight.discard(message_id)
            return OnAck.SEND
        return OnAck.DEFER

    def nacked(self, message_id: str) -> bool:
        """The application gave ``message_id`` back: its redelivery is handed over again. Whether a
        negative ack is to be sent (it is in flight here; otherwise the broker redelivers it anyway)."""
        self._held.discard(message_id)
        if message_id in self._in_flight:
            self._in_flight.discard(message_id)
            return True
        return False

    def connection_lost(self) -> None:
        """Nothing is in flight on a connection that ended; acked ids stay remembered."""
        self._in_flight.clear()

    @property
    def held(self) -> int:
        return len(self._held)

    def _remember(self, message_id: str) -> None:
        self._acked[message_id] = None
        self._acked.move_to_end(message_id)
        while len(self._acked) > self._acked_memory:
            self._acked.popitem(last=False)
