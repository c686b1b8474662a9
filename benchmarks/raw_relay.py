"""The baseline: the same minimal broker protocol on the plain ``websockets`` library, in memory.

    python -m benchmarks.raw_relay --port 0      # prints "RAW_RELAY_READY port=N"

Producer ``/ws/<topic>``: each JSON object gets a ``messageId`` and a ``publishTime``, is serialised
once and written to every consumer of the topic, then the producer gets
``{"messageId", "context", "result": "ok"}``. Consumer ``/ws/<topic>/<subscription>``: every frame
is an ack (``{"messageId": ...}``), never answered. A response topic is just another topic. Nothing
is stored, checked or authorised: this is what Python on this machine can do at best, the yardstick
Switchyard is measured against in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

READY = "RAW_RELAY_READY port="
CLOSE_NOT_FOUND = 4404


class Relay:
    def __init__(self) -> None:
        # topic -> its consumer connections; a set keeps subscribe / unsubscribe O(1) with 10k sockets.
        self.topics: dict[str, set[ServerConnection]] = {}
        self.acks = 0

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = ws.request.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "ws":
            await self.produce(ws, parts[1])
        elif len(parts) == 3 and parts[0] == "ws":
            await self.consume(ws, parts[1])
        else:
            await ws.close(CLOSE_NOT_FOUND, "no such endpoint")

    async def produce(self, ws: ServerConnection, topic: str) -> None:
        loads, dumps = orjson.loads, orjson.dumps
        try:
            while True:
                # decode=False: orjson parses the UTF-8 bytes directly, as Switchyard's codec does.
                data = await ws.recv(decode=False)
                try:
                    frame = loads(data)
                except orjson.JSONDecodeError:
                    frame = None
                if not isinstance(frame, dict):
                    await ws.send(b'{"result":"send-error:frame must be a JSON object"}', text=True)
                    continue
                message_id = str(uuid.uuid4())
                frame["messageId"] = message_id
                frame["publishTime"] = datetime.now(UTC).isoformat()
                consumers = self.topics.get(topic)
                if consumers:
                    # Serialised once; broadcast writes without awaiting each socket (no back-pressure).
                    broadcast(consumers, dumps(frame), text=True)
                ack: dict[str, object] = {"messageId": message_id, "result": "ok"}
                if "context" in frame:
                    ack["context"] = frame["context"]
                await ws.send(dumps(ack), text=True)
        except ConnectionClosed:
            return

    async def consume(self, ws: ServerConnection, topic: str) -> None:
        consumers = self.topics.setdefault(topic, set())
        consumers.add(ws)
        try:
            while True:
                data = await ws.recv(decode=False)
                try:
                    ack = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(ack, dict) and "messageId" in ack:
                    self.acks += 1
        except ConnectionClosed:
            return
        finally:
            consumers.discard(ws)
            if not consumers and self.topics.get(topic) is consumers:
                del self.topics[topic]


async def main(host: str, port: int) -> None:
    relay = Relay()
    # Same transport settings as Switchyard under uvicorn: no permessage-deflate, 4 MiB frames.
    async with serve(relay.handle, host, port, compression=None, max_size=4 * 1024 * 1024,
                     backlog=2048) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"{READY}{bound}", flush=True)
        await server.serve_forever()


def _run(coro: object) -> None:
    # uvloop when installed, as Switchyard's server uses it: the baseline must not be handicapped.
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import resource

    # Each websocket is a file descriptor: 10,000 idle consumers need more than the usual 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        _run(main(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)
