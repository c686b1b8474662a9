"""Publishing claimed batches: each key's events one after another, keys side by side.

A refused or nacked event stops its key (its successors are released behind it, also those of
the batches after it); an unreachable target stops every key bound for it and is not tried again
until its back-off ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from app.outbox.claims import Settlement
from app.outbox.cloudevents import Outbound
from app.outbox.retries import backoff_s
from app.outbox.targets import PublishDeferred, PublishRejected, Target, TargetUnavailable, make_target

logger = logging.getLogger(__name__)

# Reconnect back-off for an unreachable target: 0.5 s doubling to 10 s (jittered): a reconnect
# attempt is cheap, and events wait for it.
RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 10.0


def ordered_groups(events: Sequence[Outbound]) -> list[list[Outbound]]:
    """Events that must go one after another: one list per key, in id order; keyless events
    each on their own."""
    groups: dict[str, list[Outbound]] = {}
    loose: list[list[Outbound]] = []
    for event in sorted(events, key=lambda e: e.pk):
        if event.key is None:
            loose.append([event])
        else:
            groups.setdefault(event.key, []).append(event)
    return [*groups.values(), *loose]


@dataclass
class _Health:
    failures: int = 0
    down_until: float = 0.0
    last_error: str = ""


class TargetPool:
    """Connected targets by name, connecting on first use and backing off one that is down."""

    def __init__(self, factory: Callable[[str], Target] = make_target) -> None:
        self._factory = factory
        self._targets: dict[str, Target] = {}
        self._health: dict[str, _Health] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def down(self) -> set[str]:
        """Targets in back-off now (their events are not claimed meanwhile)."""
        now = time.monotonic()
        return {name for name, h in self._health.items() if h.down_until > now}

    def back_in_s(self) -> float | None:
        """Seconds until the first target in back-off may be tried again."""
        now = time.monotonic()
        waits = [h.down_until - now for h in self._health.values() if h.down_until > now]
        return min(waits) if waits else None

    async def get(self, name: str) -> Target:
        health = self._health.setdefault(name, _Health())
        if health.down_until > time.monotonic():
            raise TargetUnavailable(f"{name} unavailable: {health.last_error}")
        target = self._targets.get(name)
        if target is not None:
            return target
        async with self._locks.setdefault(name, asyncio.Lock()):
            # Keys published side by side all get here: one connects, the rest take its result.
            if name in self._targets:
                return self._targets[name]
            if health.down_until > time.monotonic():
                raise TargetUnavailable(f"{name} unavailable: {health.last_error}")
            target = self._factory(name)
            try:
                await target.connect()
            except TargetUnavailable as exc:
                self._mark_down(name, str(exc))
                raise
            self._targets[name] = target
            if health.failures:
                logger.info("outbox target %s is reachable again", name)
            health.failures = 0
            return target

    async def failed(self, name: str, target: Target, error: str) -> None:
        """``target`` could not publish: drop its connection and back off."""
        if self._targets.get(name) is target:
            del self._targets[name]
            self._mark_down(name, error)
            await target.close()

    def _mark_down(self, name: str, error: str) -> None:
        health = self._health.setdefault(name, _Health())
        health.failures += 1
        health.last_error = error
        delay = backoff_s(health.failures, RECONNECT_BASE_S, RECONNECT_MAX_S)
        health.down_until = time.monotonic() + delay
        logger.warning("outbox target %s unavailable (%s); retrying in %.1fs", name, error, delay)

    async def close(self) -> None:
        targets, self._targets = list(self._targets.values()), {}
        for target in targets:
            await target.close()


async def _within(publishing: Coroutine[Any, Any, None], timeout_s: float) -> None:
    """Await ``publishing`` for at most ``timeout_s`` (TimeoutError after). asyncio.wait, because
    on Python 3.11 wait_for can lose a stop request that arrives as the publish completes."""
    task = asyncio.ensure_future(publishing)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        raise TimeoutError
    task.result()


class KeyChains:
    """Batches in flight side by side, each key's events still one after another: a batch's events
    of a key start once that key's events of the batches before are done, and are released
    behind them if those stopped."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Task[str | None]] = {}

    def start(self, events: Sequence[Outbound], pool: TargetPool, settlement: Settlement) -> Publishing:
        """Start publishing ``events``, recording each outcome in ``settlement`` as it happens (so
        a cancelled batch can still be settled for what was done)."""
        by_key: dict[str, asyncio.Task[str | None]] = {}
        tasks: list[asyncio.Task[str | None]] = []
        for group in ordered_groups(events):
            key = group[0].key
            before = self._last.get(key) if key is not None else None
            task = asyncio.ensure_future(_publish_after(before, group, pool, settlement))
            if key is not None:
                self._last[key] = by_key[key] = task
            tasks.append(task)
        # return_exceptions: done only once every key's task is (a task's bug must not let the
        # batch be settled, and its key forgotten, while its other keys still publish).
        return Publishing(asyncio.gather(*tasks, return_exceptions=True), by_key)

    def forget(self, publishing: Publishing) -> None:
        """Drop the keys whose last events were ``publishing``'s, once their outcome is recorded
        (claims then see it: a stopped key's later events are no longer claimable)."""
        for key, task in publishing.by_key.items():
            if self._last.get(key) is task:
                del self._last[key]


@dataclass
class Publishing:
    done: asyncio.Future[list[str | None | BaseException]]
    by_key: dict[str, asyncio.Task[str | None]]


async def publish_batch(events: Sequence[Outbound], pool: TargetPool, settlement: Settlement) -> None:
    """Publish ``events`` (each key in order, keys side by side) and return once all are done."""
    for outcome in await KeyChains().start(events, pool, settlement).done:
        if isinstance(outcome, BaseException):
            raise outcome


async def _publish_after(
    before: asyncio.Task[str | None] | None, group: list[Outbound], pool: TargetPool, settlement: Settlement
) -> str | None:
    if before is not None:
        if not before.done():
            await asyncio.wait({before})
        stopped = "relay stopped before publishing it" if before.cancelled() or before.exception() else before.result()
        if stopped:
            settlement.release_rest(group, stopped)
            return stopped
    return await _publish_in_order(group, pool, settlement)


async def _publish_in_order(group: list[Outbound], pool: TargetPool, settlement: Settlement) -> str | None:
    """Publish a key's events one after another; why the key stopped, or None."""
    for index, event in enumerate(group):
        target: Target | None = None
        waiting = f"waiting for event {event.id} of its key"
        try:
            target = await pool.get(event.target)
            if getattr(target, "bounds_publish", False):
                # The target raises TimeoutError itself: a timer per publish, not a task and a wait.
                await target.publish(event)
            else:
                await _within(target.publish(event), settings.OUTBOX_PUBLISH_TIMEOUT_S)
        except PublishRejected as exc:
            settlement.failed.append((event.pk, str(exc)))
            settlement.release_rest(group[index + 1:], waiting)
            return waiting
        except PublishDeferred as exc:
            settlement.deferred.append((event.pk, str(exc)))
            settlement.release_rest(group[index + 1:], waiting)
            return waiting
        except (TargetUnavailable, TimeoutError) as exc:
            reason = str(exc) or f"{event.target}: no confirmation in {settings.OUTBOX_PUBLISH_TIMEOUT_S}s"
            if target is not None:
                await pool.failed(event.target, target, reason)
            settlement.release_rest(group[index:], reason)
            return reason
        except Exception as exc:  # a bug in a target must not take the relay down
            logger.exception("outbox target %s failed on event %s", event.target, event.pk)
            settlement.failed.append((event.pk, f"{type(exc).__name__}: {exc}"))
            settlement.release_rest(group[index + 1:], waiting)
            return waiting
        settlement.published.append(event.pk)
    return None
