"""A polling worker for tests, on the standard library alone (no Switchyard code): the sibling of
tests/work_worker.py for a worker that cannot hold a socket. It reports its metadata, then asks for
work over HTTP (the worker endpoints under /api/v1/worker/), runs ``noop`` and ``sleep`` requests one
at a time, reports progress while it sleeps (its sign of life, and where it learns of an abort: 409),
and prints what happens as JSON lines on stdout, in the events tests/work_worker.py prints.

    python tests/work_poller.py http://127.0.0.1:8000 KEY --metadata '{"gpu": true}' --progress 0.5

Tests kill it with SIGKILL mid-request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

# Between two get-next calls that found nothing: short, so a test's requests start promptly.
IDLE_POLL_S = 0.1


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Api:
    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/") + "/api/v1/worker"
        self.headers = {"Authorization": f"Token {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return status, json.loads(raw) if raw else None


def run_task(api: Api, request: dict[str, Any], max_sleep_s: float, progress_s: float) -> str | None:
    """Run one request; its result, or None when the server said to stop (the status it answered is printed)."""
    if request["task_name"] == "noop":
        return str(request["task_data"].get("result", "success"))
    if request["task_name"] != "sleep":
        return "error"
    deadline = time.monotonic() + min(request["task_data"]["duration_s"], max_sleep_s)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, progress_s))
        status, body = api.call("POST", f"/work-requests/{request['id']}/progress", {"message": "sleeping"})
        if status != 200:
            stopped(request["id"], status, body)
            return None
    return "success"


def stopped(request_id: int, status: int, body: Any) -> None:
    """The server refused a report on ``request_id``: 409 is an abort, anything else a refusal."""
    if status == 409:
        say("aborted", id=request_id)
    else:
        say("refused", id=request_id, status=status, detail=(body or {}).get("detail"))


def run(api: Api, metadata: dict[str, Any], max_sleep_s: float, progress_s: float) -> None:
    status, body = api.call("PUT", "/metadata", metadata)
    if status != 200:
        say("rejected", status=status, detail=(body or {}).get("detail"))
        return
    say("connected", worker=body["name"])
    while True:
        status, request = api.call("POST", "/work-requests/next")
        if status == 204:
            time.sleep(IDLE_POLL_S)
            continue
        if status != 200:
            say("rejected", status=status, detail=(request or {}).get("detail"))
            return
        request_id = request["id"]
        say("started", id=request_id, attempts=request["attempts"], task=request["task_name"])
        status, body = api.call("POST", f"/work-requests/{request_id}/started")
        if status != 200:
            stopped(request_id, status, body)
            continue
        result = run_task(api, request, max_sleep_s, progress_s)
        if result is None:
            continue
        status, body = api.call("POST", f"/work-requests/{request_id}/completed",
                                {"result": result, "output_data": {"ran": request_id}})
        if status == 200:
            say("completed", id=request_id, result=result)
        else:
            stopped(request_id, status, body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="the server's base URL, http://host:port")
    parser.add_argument("key")
    parser.add_argument("--metadata", default="{}")
    parser.add_argument("--max-sleep", type=float, default=3600.0, help="cut sleep tasks to this (a re-run)")
    parser.add_argument("--progress", type=float, default=1.0, help="seconds between progress reports")
    args = parser.parse_args()
    try:
        run(Api(args.url, args.key), json.loads(args.metadata), args.max_sleep, args.progress)
    except OSError as exc:  # the server went away (URLError is an OSError)
        say("unreachable", error=str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
