"""A consumer in a process of its own, so a scenario can SIGKILL or SIGSTOP it: it subscribes to each
URL in turn (reconnecting after any loss, with a short back-off) and prints one line per delivery:
``ACK <messageId>`` once it has sent the ack (the message counts as processed), or ``GOT <messageId>``
in ``--withhold`` mode (it takes messages and never acks them: a consumer that crashes before acking).

    python -m faults.consumer_process [--withhold] URL [URL ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import websockets

RECONNECT_S = 0.1


async def consume(urls: list[str], withhold: bool) -> None:
    attempt = 0
    while True:
        url = urls[attempt % len(urls)]
        attempt += 1
        try:
            async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
                print(f"CONNECTED {url}", flush=True)
                async for raw in ws:
                    frame = json.loads(raw)
                    message_id = frame.get("messageId") if isinstance(frame, dict) else None
                    if message_id is None or "payload" not in frame:
                        print(f"FRAME {raw!r}", flush=True)  # an error frame: the harness shows it
                        continue
                    if withhold:
                        print(f"GOT {message_id}", flush=True)
                        continue
                    await ws.send(json.dumps({"messageId": message_id}))
                    print(f"ACK {message_id}", flush=True)
        # InvalidHandshake: a server killed mid-handshake answers nothing (InvalidMessage), and one
        # starting may refuse (InvalidStatus); both are a connection lost, to try again.
        except (OSError, TimeoutError, websockets.ConnectionClosed, websockets.InvalidHandshake) as lost:
            print(f"LOST {type(lost).__name__}: {lost}", flush=True)
        await asyncio.sleep(RECONNECT_S)  # back-off before the next attempt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--withhold", action="store_true", help="never ack (print GOT instead)")
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    try:
        asyncio.run(consume(args.urls, args.withhold))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
