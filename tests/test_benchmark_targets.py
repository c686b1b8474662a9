"""The speed targets table (benchmarks/targets.py): each target read from a run's results and judged."""

from __future__ import annotations

import pytest

from benchmarks.targets import TARGETS, Target, outbox_table, table, verdict

pytestmark = pytest.mark.database_agnostic

RAW = {"W1": {"ack_rate": 20_000.0}, "W3": {"rtt_ms": {"p50": 0.5}}}


def test_a_rate_target_is_a_ratio_to_raw_at_least() -> None:
    """A rate counts as its ratio to the raw relay, met when at least the target."""
    target = Target("t", "W1", "c", ("ack_rate",), ratio_at_least=0.5)
    assert verdict(target, {"c": {"W1": {"ack_rate": 10_000.0}}}, RAW).met is True
    found = verdict(target, {"c": {"W1": {"ack_rate": 9_000.0}}}, RAW)
    assert (found.shown, found.met) == ("0.45x", False)


def test_a_latency_target_is_a_ratio_at_most() -> None:
    """A latency counts as its ratio to the raw relay, met when at most the target."""
    target = Target("t", "W3", "c", ("rtt_ms", "p50"), ratio_at_most=2)
    assert verdict(target, {"c": {"W3": {"rtt_ms": {"p50": 1.0}}}}, RAW).met is True
    assert verdict(target, {"c": {"W3": {"rtt_ms": {"p50": 1.2}}}}, RAW).met is False


def test_an_absolute_target_compares_the_figure() -> None:
    """Targets without a ratio compare the figure itself."""
    sockets = Target("t", "W4", "c", ("connections",), at_least=10_000)
    memory = Target("t", "W4", "c", ("rss_per_conn_kib",), at_most=16)
    run = {"c": {"W4": {"connections": 5_000, "requested": 10_000, "rss_per_conn_kib": 15.2}}}
    assert (verdict(sockets, run, RAW).shown, verdict(sockets, run, RAW).met) == ("5,000", False)
    assert (verdict(memory, run, RAW).shown, verdict(memory, run, RAW).met) == ("15.2", True)


def test_a_target_not_run_is_neither_met_nor_missed() -> None:
    """A configuration or workload the run skipped shows as not run."""
    target = Target("t", "W1", "missing", ("ack_rate",), ratio_at_least=0.5)
    assert verdict(target, {}, RAW).met is None


def test_the_table_lists_every_target() -> None:
    """The printed table has a row for each target, named, with its verdict."""
    printed = table({}, RAW)
    assert all(target.name in printed for target in TARGETS)
    assert printed.count("not run") == len(TARGETS)


def test_a_socket_target_needs_enough_sockets_asked_for() -> None:
    """A W4 target of a run that asked for too few sockets (a quick run) is neither met nor missed."""
    target = Target("t", "W4", "c", ("connections",), at_least=10_000, min_requested=10_000)
    found = verdict(target, {"c": {"W4": {"connections": 1_000, "requested": 1_000}}}, RAW)
    assert found.met is None and "too few" in (found.shown or "")


def test_the_outbox_table_takes_the_best_single_task_batch_size() -> None:
    """The relay's throughput target uses its best one-task batch size against raw aio-pika, and the
    latency targets the in-process relay's commit-to-publish percentiles."""
    run = {
        "raw_throughput": {"events_per_s": 10_000.0},
        "relay_throughput": {"batch 1": {"events_per_s": 1_000.0}, "batch 500": {"events_per_s": 7_500.0},
                             "batch 500, 2 tasks": {"events_per_s": 9_000.0}},
        "in_process_latency_ms": {"p50": 2.5, "p99": 25.0},
    }
    rows = {line.split("  ")[0]: line for line in outbox_table(run).splitlines()}
    assert "0.75x" in rows["outbox relay to RabbitMQ with confirms, in order per key (batch 500)"]
    assert rows["commit-to-publish p50 ms (relay in process)"].endswith("yes")
    assert rows["commit-to-publish p99 ms (relay in process)"].endswith("NO")
