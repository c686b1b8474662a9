"""The work benchmark's tables (benchmarks/work_report.py) from hand-made results: the benchmark itself
is run by `make bench-work`, never by the tests."""

from __future__ import annotations

import pytest

from benchmarks.work_report import LATENCY, THROUGHPUT, broken, table

pytestmark = pytest.mark.database_agnostic


def dispatch(rate: float, **extra: object) -> dict[str, object]:
    return {"requests": 10, "assigned_per_s": rate, "completed_per_s": rate, "submitted_per_s": rate,
            "server_cpu": 0.5, "loadgen_cpu": 0.1, **extra}


def test_switchyard_figures_carry_their_ratio_to_the_raw_queue_with_as_many_workers() -> None:
    """Each Switchyard figure is shown with value / raw of the same number of workers; raw's alone."""
    results = {
        "raw": {"1": {"push": dispatch(100.0)}, "10": {"push": dispatch(400.0)}},
        "switchyard": {"1": {"push": dispatch(50.0)}, "10": {"push": dispatch(100.0)}},
    }
    lines = table("t", THROUGHPUT, results, [1, 10], cpu_phase="push").splitlines()
    switchyard_1, switchyard_10 = (line for line in lines if "switchyard" in line)
    raw_1 = next(line for line in lines if "raw queue" in line)
    assert "50 (0.50x)" in switchyard_1 and "100 (0.25x)" in switchyard_10
    assert "100" in raw_1 and "x)" not in raw_1


def test_latency_percentiles_show_with_two_decimals() -> None:
    """Latency cells show milliseconds with two decimals; a missing figure is a dash."""
    row = {"latency": {"start_ms": {"p50": 1.5, "p99": 3.0}, "post_rtt_ms": {"p50": 0.5}, "cycle_ms": {}}}
    results = {"raw": {"1": row}, "switchyard": {"1": {"latency": {"start_ms": {"p50": 3.0, "p99": 3.0}}}}}
    switchyard = next(line for line in table("t", LATENCY, results, [1]).splitlines() if "switchyard" in line)
    assert "3.00 (2.00x)" in switchyard and "3.00 (1.00x)" in switchyard and " - " in switchyard


def test_a_stall_breaks_the_run_but_a_phase_out_of_time_does_not() -> None:
    """A stalled phase, a refused submission or an error frame fail the run; a slow phase is only noted."""
    assert broken({"push": dispatch(1.0, stalled=True)})
    assert broken({"backlog": dispatch(1.0, submit_failures=[403])})
    assert broken({"error_frames": 2})
    slow = {"latency": {"requests": 100, "measured": 40, "complete": False}}
    assert not broken(slow)
    assert "latency: 40 of 100 by the deadline" in table("t", LATENCY, {"switchyard": {"1": slow}}, [1])
