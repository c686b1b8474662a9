"""W3: sequential request / reply through a response topic, as a DASF client and backend module do.

The requester consumes its response topic R (``<topic>_<8 letters>``; the socket opens before R
exists) and publishes requests naming R in ``properties.response_topic``. The responder consumes
the topic, acks, and publishes the answer to R. One request at a time: the round trip is the
latency a DASF call sees (two publishes, two deliveries, and under a storing policy two commits).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from benchmarks import wire
from benchmarks.procstat import CpuMeter
from benchmarks.stats import latency_summary_ms, rate

WARMUP_TIMEOUT_S = 15.0
# Longer than two of Switchyard's resync intervals (2 s), after which a stored message the fast path
# dropped is fetched from the database.
REPLY_TIMEOUT_S = 5.0


class AckCounter:
    """Reads a producer socket's acks (nobody waits for them: the reply is what counts)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ok: set[Any] = set()  # contexts acked "ok"
        self.errors = 0
        self.first_error: str | None = None

    async def read(self) -> None:
        try:
            while True:
                ack = wire.loads(await self.ws.recv(decode=False))
                if ack.get("result") == "ok":
                    self.ok.add(ack.get("context"))
                else:
                    self.errors += 1
                    self.first_error = self.first_error or str(ack.get("result"))[:200]
        except ConnectionClosed:
            return


async def respond(inbox: ClientConnection, outbox: ClientConnection, run: str, seen: set[Any]) -> None:
    """The backend module: ack each request, answer it on the response topic."""
    try:
        while True:
            request = wire.loads(await inbox.recv(decode=False))
            message_id = request.get("messageId")
            if message_id is not None:
                await inbox.send(wire.ack_of(message_id), text=True)
            props = request.get("properties") or {}
            if props.get("run") != run:
                continue
            context = props.get("requestContext")
            seen.add(context)
            answer = {"payload": request.get("payload", ""), "context": str(context),
                      "properties": {"run": run, "requestContext": context, "messageType": "response",
                                     "status": "success"}}
            await outbox.send(wire.dumps(answer), text=True)
    except ConnectionClosed:
        return


async def collect_replies(inbox: ClientConnection, run: str, waiting: dict[Any, asyncio.Future[float]],
                          answered: set[Any], counts: dict[str, int]) -> None:
    """The requester's response-topic consumer: ack each answer and hand it to the waiting call."""
    try:
        while True:
            reply = wire.loads(await inbox.recv(decode=False))
            arrived = time.perf_counter()
            message_id = reply.get("messageId")
            if message_id is not None:
                await inbox.send(wire.ack_of(message_id), text=True)
            props = reply.get("properties") or {}
            if props.get("run") != run:
                counts["foreign"] += 1
                continue
            context = props.get("requestContext")
            answered.add(context)
            future = waiting.pop(context, None)
            if future is None:
                counts["unexpected"] += 1
            elif not future.done():
                future.set_result(arrived)
    except ConnectionClosed:
        return


async def run_request_reply(
    *,
    requester_base: str,
    responder_base: str,
    topic: str,
    count: int,
    payload_bytes: int,
    deadline_s: float,
    server_pids: list[int],
) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + deadline_s
    run = uuid.uuid4().hex[:12]
    payload = wire.payload_of(payload_bytes)
    response_topic = wire.response_topic_for(topic)
    # The order a DASF deployment has: the backend module listens; the requester opens its
    # response-topic consumer (R does not exist yet) and its producer; the backend module opens its
    # producer on R when it has something to answer (here up front, also before R exists).
    backend_in = await wire.open_socket(wire.consumer_url(responder_base, topic, f"backend-module-{run}"))
    inbox = await wire.open_socket(wire.consumer_url(requester_base, response_topic, f"python-backend-{run}"))
    requests = await wire.open_socket(wire.producer_url(requester_base, topic))
    backend_out = await wire.open_socket(wire.producer_url(responder_base, response_topic))
    request_acks, answer_acks = AckCounter(requests), AckCounter(backend_out)
    waiting: dict[Any, asyncio.Future[float]] = {}
    requests_seen: set[Any] = set()
    answered: set[Any] = set()
    counts = {"foreign": 0, "unexpected": 0}
    tasks = [
        asyncio.create_task(respond(backend_in, backend_out, run, requests_seen)),
        asyncio.create_task(collect_replies(inbox, run, waiting, answered, counts)),
        asyncio.create_task(request_acks.read()),
        asyncio.create_task(answer_acks.read()),
    ]
    result: dict[str, Any] = {"requested": count, "payload_bytes": payload_bytes, "response_topic": response_topic}
    loop = asyncio.get_running_loop()

    async def call(context: Any, timeout_s: float) -> float | None:
        """One request; its round trip in seconds, or None when no answer came in time."""
        future: asyncio.Future[float] = loop.create_future()
        waiting[context] = future
        frame = {"payload": payload, "context": context,
                 "properties": {"run": run, "response_topic": response_topic, "requestContext": context,
                                "messageType": "request"}}
        t0 = time.perf_counter()
        await requests.send(wire.dumps(frame), text=True)
        try:
            return await asyncio.wait_for(future, timeout_s) - t0
        except TimeoutError:
            waiting.pop(context, None)
            return None

    try:
        # Warm-up: the first call creates R and attaches the waiting requester socket.
        warm_until = min(deadline, time.monotonic() + WARMUP_TIMEOUT_S)
        warmed = False
        n = 0
        while not warmed and time.monotonic() < warm_until:
            warmed = await call(f"warmup-{n}", 0.5) is not None
            n += 1
        if not warmed:
            result["error"] = "no answer to warm-up requests"
            return result
        meter = CpuMeter(server_pids)
        meter.start()
        t_start = time.perf_counter()
        rtts: list[float] = []
        timeouts = 0
        sent = 0
        for i in range(count):
            if time.monotonic() > deadline:
                break
            sent += 1
            # A reply may take longer than the deadline leaves (it still counts if it comes later).
            rtt = await call(i, min(REPLY_TIMEOUT_S, max(0.5, deadline - time.monotonic())))
            if rtt is None:
                timeouts += 1
            else:
                rtts.append(rtt)
        elapsed = time.perf_counter() - t_start
        result.update(meter.stop())

        def missing() -> tuple[set[Any], set[Any]]:
            """Requests acked "ok" that never reached the responder; answers acked "ok" that
            never reached the requester."""
            requests_lost = {c for c in request_acks.ok if isinstance(c, int)} - requests_seen
            answers_lost = {int(c) for c in answer_acks.ok if isinstance(c, str) and c.isdigit()} - answered
            return requests_lost, answers_lost

        # The last acks may trail their answers, and a timed-out answer may still come (a stored
        # message is repaired from the database): wait, bounded, before counting losses.
        await asyncio.sleep(0.1)
        for _ in range(int(REPLY_TIMEOUT_S / 0.05) if timeouts else 0):
            if not any(missing()):
                break
            await asyncio.sleep(0.05)
        lost_requests, lost_answers = missing()
        result.update({
            "sent": sent,
            "answered": len(rtts),
            "timeouts": timeouts,
            "lost": len(lost_requests) + len(lost_answers),
            "request_ack_errors": request_acks.errors,
            "answer_ack_errors": answer_acks.errors,
            "first_ack_error": request_acks.first_error or answer_acks.first_error,
            "unexpected_replies": counts["unexpected"],
            "round_trips_per_s": rate(len(rtts), elapsed),
            "rtt_ms": latency_summary_ms(rtts),
            "complete": sent == count,
            "elapsed_s": round(time.monotonic() - started, 2),
        })
        return result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in (backend_in, inbox, requests, backend_out)),
                             return_exceptions=True)
