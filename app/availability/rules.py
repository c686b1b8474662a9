"""The availability rule, as a pure function and as the matching queryset filters.

- **online**: the consumer answered the latest ping (a pong no older than ``grace`` before it),
  or the answer is still due (the ping is younger than ``grace``) and it answered the round before
  (a pong no older than one ``interval`` plus ``grace`` before the ping): a dead consumer does not
  flicker back to online with every new ping;
- **offline**: pinged, not answered in time, but heard from within the window (it went away);
- **unknown**: never pinged or pinged too long ago (no relay), or not heard from within the window.

A ping sent because a consumer attached (``app/availability/attach_pings.py``) moves ``last_ping``
only when the latest ping is at least one ``interval`` old (or there is none): any pong after a
fresher ping already answers it (a pong is never older than the ping it answers), and a fresher
``last_ping`` would open the "answer still due" case for a consumer that missed the round before.
With the ping at least an interval old that case cannot hold: offline means the last pong is more
than ``grace`` before the old ping, so more than ``interval + grace`` before the new one.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from django.db.models import F, Q


class Availability(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


def availability(
    now: datetime,
    last_ping: datetime | None,
    last_pong: datetime | None,
    *,
    window_s: float,
    grace_s: float,
    interval_s: float,
) -> Availability:
    window, grace = timedelta(seconds=window_s), timedelta(seconds=grace_s)
    if last_ping is None or now - last_ping > window:
        return Availability.UNKNOWN
    if last_pong is None or now - last_pong > window:
        return Availability.UNKNOWN
    if last_pong >= last_ping - grace:
        return Availability.ONLINE
    if now - last_ping <= grace and last_pong >= last_ping - timedelta(seconds=interval_s) - grace:
        return Availability.ONLINE
    return Availability.OFFLINE


def attach_ping_marks(now: datetime, last_ping: datetime | None, *, interval_s: float) -> bool:
    """Whether a ping sent because a consumer attached is recorded as the topic's ``last_ping``."""
    return last_ping is None or now - last_ping >= timedelta(seconds=interval_s)


def attach_ping_marks_q(now: datetime, *, interval_s: float) -> Q:
    return Q(last_ping__isnull=True) | Q(last_ping__lte=now - timedelta(seconds=interval_s))


def unknown_q(now: datetime, *, window_s: float) -> Q:
    cutoff = now - timedelta(seconds=window_s)
    return (
        Q(supports_dasf=False)
        | Q(last_ping__isnull=True)
        | Q(last_ping__lt=cutoff)
        | Q(last_pong__isnull=True)
        | Q(last_pong__lt=cutoff)
    )


def answered_latest_q(now: datetime, *, window_s: float, grace_s: float) -> Q:
    """Topics whose latest ping was answered (online, and not only because the answer is still due)."""
    return ~unknown_q(now, window_s=window_s) & Q(last_pong__gte=F("last_ping") - timedelta(seconds=grace_s))


def answered_q(now: datetime, *, grace_s: float, interval_s: float) -> Q:
    grace = timedelta(seconds=grace_s)
    previous_round = timedelta(seconds=interval_s) + grace
    return Q(last_pong__gte=F("last_ping") - grace) | (
        Q(last_ping__gte=now - grace) & Q(last_pong__gte=F("last_ping") - previous_round)
    )
