"""Messages to send, one per line of a file or of stdin, read as they come.

A thread reads the file descriptor with ``os.read`` (what is there, up to a block), so lines piped in
one at a time go out at once and a large file goes out in blocks. It reads the descriptor, not
``sys.stdin``: a daemon thread blocked in a buffered stream's read would make the interpreter abort at
exit, when it closes that stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterator

BLOCK_BYTES = 1 << 16
# Blocks read ahead of the sender: the reader waits beyond that (a large file is not read into memory).
BLOCKS_AHEAD = 8

_Item = list[bytes] | OSError | None


async def lines(fd: int) -> AsyncIterator[bytes]:
    """The lines of ``fd`` without their line ends, skipping empty ones, until end of file."""
    loop = asyncio.get_running_loop()
    blocks: asyncio.Queue[_Item] = asyncio.Queue(BLOCKS_AHEAD)

    def hand_over(item: _Item) -> None:
        asyncio.run_coroutine_threadsafe(blocks.put(item), loop).result()

    def pump() -> None:
        tail = b""
        try:
            try:
                while block := os.read(fd, BLOCK_BYTES):
                    *complete, tail = (tail + block).split(b"\n")
                    if complete:
                        hand_over(complete)
            except OSError as error:
                hand_over(error)
                return
            hand_over([tail])
            hand_over(None)
        except (RuntimeError, concurrent.futures.CancelledError):
            return  # the event loop closed or stopped waiting: the command ended before its input did

    threading.Thread(target=pump, name="switchyard-client input", daemon=True).start()
    while (item := await blocks.get()) is not None:
        if isinstance(item, OSError):
            # Not the server's fault: no "unreachable" exit code for it.
            raise RuntimeError(f"cannot read the messages: {item}") from item
        for text in item:
            text = text.removesuffix(b"\r")
            if text:
                yield text
