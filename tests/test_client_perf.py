"""``switchyard-client perf`` as a user runs it: real processes against a real server, short runs."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from switchyard_client.cli import exits
from tests.protocol import make_topic, unique
from tests.servers import ServerProcess

pytestmark = pytest.mark.wire_interop

# A run's own bound is its duration; this one is for a process that would not end.
PROCESS_TIMEOUT_S = 30
CLI = "import sys; from switchyard_client.cli import main; sys.exit(main())"


@pytest.fixture
def topic() -> str:
    """A public topic with Pulsar semantics that stores nothing."""
    return make_topic(dasf=False, policy="disabled")


@pytest.fixture
def cached_topic() -> str:
    """A public topic with Pulsar semantics under the cache policy."""
    return make_topic(dasf=False, policy="cache")


class Run:
    """One ``switchyard-client perf ...`` process."""

    def __init__(self, server: ServerProcess, *args: str) -> None:
        self.argv = [sys.executable, "-c", CLI, "--url", server.http, "perf", *args]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Run:
        self.proc = await asyncio.create_subprocess_exec(*self.argv, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.PIPE)
        return self

    async def line_on_stderr(self, starting: str) -> str:
        """Read stderr until a line that starts with ``starting``."""
        assert self.proc is not None and self.proc.stderr is not None
        async with asyncio.timeout(PROCESS_TIMEOUT_S):
            while line := (await self.proc.stderr.readline()).decode():
                if line.startswith(starting):
                    return line
        raise AssertionError(f"stderr ended without a line starting {starting!r}")

    async def finish(self) -> tuple[int, str, str]:
        """Its exit code, stdout and stderr once it ended (killed past the timeout)."""
        assert self.proc is not None
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), PROCESS_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


async def perf(server: ServerProcess, *args: str) -> tuple[int, str, str]:
    return await (await Run(server, *args).start()).finish()


def result(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


async def test_produce_reports_rates_and_percentiles(server: ServerProcess, topic: str, tmp_path: Path) -> None:
    """A short produce run exits 0; its result has a rate near the target and send -> ack percentiles."""
    path = tmp_path / "produce.json"
    code, out, err = await perf(server, "produce", topic, "-r", "200", "-s", "100", "-d", "1.5", "--json", str(path))
    assert code == exits.OK, err
    produced = result(path)["produced"]
    assert produced["messages"] == produced["attempted"] > 0 and produced["errors"] == {}
    assert 100 < produced["msg_per_s"] < 300 and produced["mib_per_s"] > 0
    percentiles = produced["latency"]["percentiles_ms"]
    assert 0 < percentiles["p50"] <= percentiles["p99"] <= percentiles["max"]
    assert produced["latency"]["histogram_us"]["count"] == produced["messages"]
    assert "latency send -> ack" in out and "99.990" in out
    assert err.count("produced ") >= 1


async def test_produce_spreads_over_topics_and_stops_at_the_count(server: ServerProcess, tmp_path: Path) -> None:
    """--topics 2 -p 2 sends through four producers on TOPIC-0 and TOPIC-1 and stops at -n."""
    base = unique("load")
    for index in range(2):
        make_topic(f"{base}-{index}", dasf=False, policy="disabled")
    path = tmp_path / "produce.json"
    code, _, err = await perf(server, "produce", base, "--topics", "2", "-p", "2", "-r", "0", "-n", "400",
                              "-d", "20", "--json", str(path))
    assert code == exits.OK, err
    run = result(path)
    assert run["config"]["topics"] == [f"{base}-0", f"{base}-1"]
    assert run["produced"]["messages"] == 400


async def test_rtt_reports_send_to_receive_latency(server: ServerProcess, cached_topic: str, tmp_path: Path) -> None:
    """A short rtt run receives what it sent, exits 0, and reports both sides' rates and percentiles."""
    path = tmp_path / "rtt.json"
    code, out, err = await perf(server, "rtt", cached_topic, "-r", "200", "-d", "1.5", "--json", str(path))
    assert code == exits.OK, err
    run = result(path)
    assert run["sent"]["msg_per_s"] > 0 and run["received"]["msg_per_s"] > 0
    assert run["received"]["messages"] == run["sent"]["messages"] and run["missing"] == 0
    assert run["received"]["untimed"] == 0
    assert run["received"]["latency"]["percentiles_ms"]["p99"] > 0
    assert "latency send -> receive" in out


async def test_rtt_leaves_no_subscription(server: ServerProcess, cached_topic: str) -> None:
    """rtt removes its subscription: a cache topic is not left holding messages for it."""
    from asgiref.sync import sync_to_async

    from app.pulsar.models import Subscription

    code, _, err = await perf(server, "rtt", cached_topic, "-r", "100", "-d", "0.5")
    assert code == exits.OK, err
    assert await sync_to_async(Subscription.objects.filter(topic__slug=cached_topic).count)() == 0


async def test_consume_measures_latency_from_perf_producers(server: ServerProcess, cached_topic: str,
                                                           tmp_path: Path) -> None:
    """perf consume, started first, gets what perf produce sends and reports send -> receive latency."""
    path = tmp_path / "consume.json"
    consume = await Run(server, "consume", cached_topic, "-s", unique("sub"), "-n", "100", "-d", "20",
                        "--json", str(path)).start()
    await consume.line_on_stderr("perf consume:")
    produced, _, err = await perf(server, "produce", cached_topic, "-r", "200", "-d", "1")
    assert produced == exits.OK, err
    code, out, err = await consume.finish()
    assert code == exits.OK, err
    consumed = result(path)["consumed"]
    assert consumed["messages"] == 100 and consumed["untimed"] == 0
    assert 0 < consumed["latency"]["percentiles_ms"]["p50"] < 10_000
    assert "latency send -> receive (consumed)" in out


async def test_consume_can_remove_its_subscription(server: ServerProcess, cached_topic: str) -> None:
    """--unsubscribe deletes the subscription at the end (a run that got nothing exits 4)."""
    from asgiref.sync import sync_to_async

    from app.pulsar.models import Subscription

    code, _, err = await perf(server, "consume", cached_topic, "-s", "gone", "-d", "0.5", "--unsubscribe")
    assert code == exits.TIMEOUT, err
    assert await sync_to_async(Subscription.objects.filter(topic__slug=cached_topic).count)() == 0


async def test_a_missing_topic_exits_with_refused(server: ServerProcess, tmp_path: Path) -> None:
    """A topic that does not exist is refused (404): exit 3, the reason on stderr and in the result."""
    path = tmp_path / "refused.json"
    code, out, err = await perf(server, "produce", unique("missing"), "-d", "5", "--json", str(path))
    assert code == exits.REFUSED
    assert "refused (404)" in err and out == ""
    run = result(path)
    assert run["exit_code"] == exits.REFUSED and "404" in run["error"]


async def test_ctrl_c_prints_the_summary_so_far(server: ServerProcess, topic: str, tmp_path: Path) -> None:
    """SIGINT during a run ends it early: the summary and result so far, exit 130."""
    path = tmp_path / "interrupted.json"
    run = await Run(server, "produce", topic, "-r", "100", "-d", "25", "--json", str(path)).start()
    await run.line_on_stderr("produced ")
    assert run.proc is not None
    run.proc.send_signal(signal.SIGINT)
    code, out, _ = await run.finish()
    assert code == exits.INTERRUPTED
    assert "(interrupted)" in out and "latency send -> ack" in out
    interrupted = result(path)
    assert interrupted["interrupted"] and interrupted["produced"]["messages"] > 0
