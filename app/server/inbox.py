"""What uvicorn's websocket protocol uses of asyncio.Queue and asyncio.Event, for a fraction of their
memory per connection: each of those holds a deque (~760 bytes with its first block) from birth, and a
connection had four of them. These hold a list, or nothing, until something waits.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Inbox:
    """An unbounded queue with one reader at a time: asyncio.Queue's put_nowait, get and empty."""

    __slots__ = ("_items", "_getter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        getter, self._getter = self._getter, None
        if getter is not None and not getter.done():
            getter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("Inbox.get is already awaited by another task")
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        return self._items.pop(0)


class Flag:
    """asyncio.Event's is_set, set, clear and wait, holding no waiter list while nobody waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        await waiter
        return True
