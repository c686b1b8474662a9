"""A worker for tests, on plain ``websockets`` (no Switchyard code): connects to ``/ws/workers/``,
reports its metadata, runs ``noop`` and ``sleep`` requests (each in a task of its own, so a worker
of concurrency above 1 runs several), heartbeats, and prints what happens as JSON lines on stdout
for the test to read. It exits when the server closes the connection.

    python tests/work_worker.py ws://127.0.0.1:8000/ws/workers/ KEY --metadata '{"gpu": true}'

Tests make it hang with SIGSTOP (no heartbeat, the socket stays open) and kill it with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import websockets


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def run(url: str, key: str, metadata: dict[str, Any], max_sleep_s: float) -> None:
    tasks: dict[int, asyncio.Task[None]] = {}
    async with websockets.connect(url, additional_headers={"Authorization": f"Token {key}"}) as ws:

        async def send(frame: dict[str, Any]) -> None:
            await ws.send(json.dumps(frame))

        async def heartbeat(interval_s: float) -> None:
            while True:
                await asyncio.sleep(interval_s)
                await send({"type": "heartbeat"})

        async def execute(request: dict[str, Any]) -> None:
            request_id, data = request["id"], request["task_data"]
            say("started", id=request_id, attempts=request["attempts"], task=request["task_name"])
            await send({"type": "started", "work_request_id": request_id})
            result = "success"
            if request["task_name"] == "noop":
                result = data.get("result", "success")
            elif request["task_name"] == "sleep":
                await asyncio.sleep(min(data["duration_s"], max_sleep_s))
            else:
                result = "error"
            await send({"type": "completed", "work_request_id": request_id, "result": result,
                        "output_data": {"ran": request_id}})
            say("completed", id=request_id, result=result)

        beating: asyncio.Task[None] | None = None
        try:
            async for text in ws:
                frame = json.loads(text)
                kind = frame["type"]
                if kind == "connected":
                    say("connected", worker=frame["worker"])
                    beating = asyncio.create_task(heartbeat(frame["heartbeat_interval_s"]))
                elif kind == "request_dynamic_metadata":
                    await send({"type": "metadata", "metadata": metadata})
                elif kind == "work_request_available":
                    request = frame["work_request"]
                    tasks[request["id"]] = asyncio.create_task(execute(request))
                    tasks[request["id"]].add_done_callback(lambda t, i=request["id"]: tasks.pop(i, None))
                elif kind == "aborted":
                    task = tasks.pop(frame["work_request_id"], None)
                    if task is not None:
                        task.cancel()
                    say("aborted", id=frame["work_request_id"])
                elif kind == "connection_rejected":
                    say("rejected", reason_code=frame["reason_code"])
                else:
                    say(kind, **{k: v for k, v in frame.items() if k != "type"})
        finally:
            for task in [*tasks.values(), *([beating] if beating else [])]:
                task.cancel()
        say("closed", code=ws.close_code)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("--metadata", default="{}")
    parser.add_argument("--max-sleep", type=float, default=3600.0, help="cut sleep tasks to this (a re-run)")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.url, args.key, json.loads(args.metadata), args.max_sleep))
    except websockets.ConnectionClosed as exc:
        say("closed", code=exc.rcvd.code if exc.rcvd else None)
    except OSError as exc:
        say("unreachable", error=str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
