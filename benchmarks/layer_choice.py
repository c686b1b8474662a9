"""Which channels_redis layer should carry the backplane? Measures, between two processes:
throughput of group_send -> receive (a topic group with one member process) and the round trip.

    .venv/bin/python benchmarks/layer_choice.py [--messages 20000] [--redis redis://127.0.0.1:6379/0]

Bounded: a fixed number of messages per layer, loopback Redis only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time

LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
PAYLOAD = "x" * 400  # about the size of a delivery frame with a 256-byte payload


def make_layer(kind: str, redis: str, prefix: str):  # type: ignore[no-untyped-def]
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    if kind == "pubsub":
        return RedisPubSubChannelLayer(hosts=[redis], prefix=prefix)
    return RedisChannelLayer(hosts=[redis], prefix=prefix, capacity=100_000)


def receiver(kind: str, redis: str, prefix: str, count: int, ready, results) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        layer = make_layer(kind, redis, prefix)
        channel = await layer.new_channel()
        await layer.group_add("topic.bench", channel)
        await layer.group_add("echo", channel)
        ready.set()
        first = await layer.receive(channel)
        start = time.perf_counter()
        for _ in range(count - 1):
            await layer.receive(channel)
        results.put(("throughput", (count - 1) / (time.perf_counter() - start), first["n"]))
        for _ in range(200):  # echo for the round trip
            message = await layer.receive(channel)
            await layer.group_send("back", {"type": "x", "n": message["n"]})
        await layer.flush() if kind == "core" else None

    asyncio.run(run())


async def sender(kind: str, redis: str, prefix: str, count: int) -> list[float]:
    layer = make_layer(kind, redis, prefix)
    channel = await layer.new_channel()
    await layer.group_add("back", channel)
    for n in range(count):
        await layer.group_send("topic.bench", {"type": "broker.deliver", "text": PAYLOAD, "n": n})
    rtts = []
    for n in range(200):
        t0 = time.perf_counter()
        await layer.group_send("echo", {"type": "x", "n": n})
        await layer.receive(channel)
        rtts.append(time.perf_counter() - t0)
    return rtts


def measure(kind: str, redis: str, count: int) -> dict[str, float]:
    prefix = f"bench{time.time_ns()}"
    ready, results = multiprocessing.Event(), multiprocessing.Queue()
    proc = multiprocessing.Process(target=receiver, args=(kind, redis, prefix, count, ready, results))
    proc.start()
    ready.wait(30)
    rtts = asyncio.run(sender(kind, redis, prefix, count))
    _, rate, _ = results.get(timeout=120)
    proc.join(60)
    return {"msgs_per_s": rate, "rtt_p50_ms": statistics.median(rtts) * 1000,
            "rtt_p99_ms": sorted(rtts)[int(len(rtts) * 0.99) - 1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    rows = {kind: measure(kind, args.redis, args.messages) for kind in LAYERS}
    for kind, row in rows.items():
        print(f"{kind:7s} {row['msgs_per_s']:9.0f} msg/s   "
              f"rtt p50 {row['rtt_p50_ms']:.2f} ms  p99 {row['rtt_p99_ms']:.2f} ms")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
