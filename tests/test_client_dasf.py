"""The client SDK's DASF request / reply against the real ``demessaging``: ``Client.request`` calling a
demessaging backend module, and a demessaging client calling a ``Client.serve`` backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchyard_client import Client, RequestError, RequestTimeout
from switchyard_client.frames import StatusFrame
from tests.api_client import call
from tests.dasf_client import Modules, api_info_of, pulsar_args, result_of, send_request, ws_args
from tests.protocol import eventually, make_topic
from tests.servers import ServerProcess

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 20
API_INFO = {"classes": [], "functions": [{"name": "add"}], "rpc_schema": {}}


async def add(call: Any) -> Any:
    if call.get("func_name") != "add":
        raise ValueError(f"no function {call.get('func_name')!r}")
    return call["a"] + call.get("b", 1)


@contextlib.asynccontextmanager
async def serving(client: Client, topic: str, **options: Any) -> AsyncIterator[None]:
    """``client.serve(topic, add)`` running (its api_info answered: it is subscribed) until the block ends."""
    task = asyncio.create_task(client.serve(topic, add, **options))
    try:
        await eventually(lambda: api_info_of(topic), TIMEOUT_S, "the served module's api_info")
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_request_calls_a_demessaging_module(server: ServerProcess, modules: Modules) -> None:
    """A request reaches a real demessaging module and returns its result."""
    topic = make_topic()
    await asyncio.to_thread(modules.start_connected, topic, pulsar_args(server))
    async with Client(server.http) as client:
        assert await client.request(topic, {"func_name": "add", "a": 2, "b": 3}, timeout=TIMEOUT_S) == 5
        assert await client.request(topic, {"func_name": "hello_world"}, timeout=TIMEOUT_S) == "Hello World!"


async def test_a_module_error_raises_request_error(server: ServerProcess, modules: Modules) -> None:
    """A request the module cannot validate is answered with an error, raised as RequestError."""
    topic = make_topic()
    await asyncio.to_thread(modules.start_connected, topic, ws_args(server))
    async with Client(server.http) as client:
        with pytest.raises(RequestError, match="error validating request"):
            await client.request(topic, {"func_name": "add", "a": "not a number"}, timeout=TIMEOUT_S)


async def test_a_request_nobody_answers_times_out(server: ServerProcess) -> None:
    """With no module on the topic, request raises RequestTimeout after its timeout."""
    topic = make_topic()
    async with Client(server.http) as client:
        with pytest.raises(RequestTimeout):
            await client.request(topic, {"func_name": "add", "a": 1}, timeout=1)


async def test_a_demessaging_client_calls_a_serve_backend(server: ServerProcess) -> None:
    """The unmodified demessaging client's send-request is answered by a Client.serve handler."""
    topic = make_topic()
    async with Client(server.http) as client:
        async with serving(client, topic, api_info=API_INFO):
            done = await asyncio.to_thread(send_request, topic, pulsar_args(server),
                                           {"func_name": "add", "a": 2, "b": 3})
        assert done.returncode == 0, done.stdout + done.stderr
        assert result_of(done.stdout) == 5


async def test_a_serve_handler_error_reaches_the_caller(server: ServerProcess) -> None:
    """A handler that raises is answered as a DASF error, which request raises as RequestError."""
    topic = make_topic()
    async with Client(server.http) as client:
        async with serving(client, topic):
            with pytest.raises(RequestError, match="error executing request: no function 'nope'"):
                await client.request(topic, {"func_name": "nope"}, timeout=TIMEOUT_S)
            assert await client.request(topic, {"func_name": "add", "a": 40, "b": 2}, timeout=TIMEOUT_S) == 42


async def test_a_serve_backend_answers_pings(server: ServerProcess) -> None:
    """A served topic answers the broker's ping, so its status turns online."""
    topic = make_topic()
    async with Client(server.http) as client:
        async with serving(client, topic):
            assert (await asyncio.to_thread(call, server, f"/topics/{topic}/ping", "POST"))[0] == 202

            async with asyncio.timeout(TIMEOUT_S):
                async for change in client.watch_status([topic]):
                    if isinstance(change, StatusFrame) and change.status == "online":
                        break
            assert (await client.status(topic)).status == "online"

