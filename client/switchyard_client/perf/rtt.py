"""``perf rtt``: one process publishes to a topic and consumes it (a subscription of its own, removed at
the end); latency is send -> receive, and send -> ack on the producer's side.

Before the measured run, unmeasured warm-up messages go out until one comes back: a broker may attach
a consumer a moment after its handshake, and a message published before that never arrives.
"""

from __future__ import annotations

import argparse
import contextlib
import uuid

from switchyard_client import Producer, SwitchyardError
from switchyard_client.perf.consume import Receiver
from switchyard_client.perf.produce import Sender, describe_load, drain_s
from switchyard_client.perf.report import Side
from switchyard_client.perf.runner import Session
from switchyard_client.perf.tally import Tally

WARM_UP_S = 10.0
WARM_UP_EVERY_S = 0.05
# After the last ack, received messages are awaited while they keep coming (a pause this long ends
# the wait), for this long at most.
RECEIVE_IDLE_S = 2.0
RECEIVE_DRAIN_S = 10.0


async def run(args: argparse.Namespace, topic: str) -> int:
    run_id = uuid.uuid4().hex[:12]
    subscription = f"perf-rtt-{run_id}"
    config = {"topics": [topic], "subscription": subscription, "rate": args.rate, "size": args.size,
              "duration_s": args.duration, "count": args.count, "max_pending": args.max_pending,
              "receiver_queue_size": args.receiver_queue_size, "send_timeout_s": args.send_timeout}
    session = Session("rtt", args, config)
    sender: Sender | None = None
    receiver: Receiver | None = None
    unsettled = 0

    async def body() -> None:
        nonlocal sender, receiver, unsettled
        async with session.client() as client:
            consumer = client.subscribe(topic, subscription, receiver_queue_size=args.receiver_queue_size)
            await consumer.start()
            producer = await client.producer(topic)
            receiving = Receiver([consumer], Tally(session.now()), run=run_id)
            receiving.start()
            try:
                await _warm_up(session, producer, receiving, run_id)
                receiving.tally = Tally(session.now())
                sender = Sender([producer], Tally(session.now()), size=args.size, rate=args.rate,
                                count=args.count, max_pending=args.max_pending, properties={"perf_run": run_id})
                receiver = receiving
                session.begin(f"perf rtt: {describe_load(args, [topic], 1)}",
                              [Side("sent", "send -> ack", sender.tally),
                               Side("received", "send -> receive", receiving.tally)])
                sender.start()
                await session.wait(args.duration or None, sender.finished)
                unsettled = await sender.stop(drain_s(session))
                await _receive_rest(session, sender, receiving)
                await receiving.stop()
            finally:
                with contextlib.suppress(SwitchyardError, TimeoutError, OSError):
                    await consumer.unsubscribe()

    error = await session.execute(body)
    if sender is None or receiver is None:
        return session.failed(error)
    missing = max(0, sender.tally.messages - receiver.tally.messages)
    return session.finish(f"perf rtt: {describe_load(args, [topic], 1)}", delivered=receiver.tally.messages,
                          missing=missing, unsettled=unsettled)


async def _warm_up(session: Session, producer: Producer, receiver: Receiver, run_id: str) -> None:
    deadline = session.now() + WARM_UP_S
    while not receiver.warmed.is_set():
        if session.now() > deadline:
            raise TimeoutError(f"{producer.topic}: no message came back to the consumer within {WARM_UP_S:g} s")
        await producer.send(b"", properties={"perf_run": run_id, "perf_warmup": "1"})
        await session.wait(WARM_UP_EVERY_S, receiver.warmed)


async def _receive_rest(session: Session, sender: Sender, receiver: Receiver) -> None:
    """Until every acked message came back, while they keep coming, within RECEIVE_DRAIN_S."""
    deadline = session.now() + RECEIVE_DRAIN_S
    while receiver.tally.messages < sender.tally.messages and not session.stopping:
        left = deadline - session.now()
        if left <= 0:
            return
        receiver.progress.clear()
        await session.wait(min(RECEIVE_IDLE_S, left), receiver.progress)
        if not receiver.progress.is_set():
            return
