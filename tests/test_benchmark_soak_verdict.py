"""The soak's verdict (benchmarks/soak/verdict.py) and its tally of the server's log, from hand-made input:
the soak itself is run by `make soak`, never by the tests."""

from __future__ import annotations

import pytest

from benchmarks.soak.verdict import after_warmup, judge, slope_per_min

pytestmark = pytest.mark.database_agnostic

NOTHING_LOST = {"streams": 0, "outbox": 0}


def rss(per_min: float, minutes: int = 10, start: float = 120.0) -> list[tuple[float, float]]:
    """RSS samples every 5 s growing by ``per_min`` MiB a minute."""
    return [(t, start + per_min * t / 60) for t in range(0, minutes * 60 + 1, 5)]


def test_slope_is_the_least_squares_growth_per_minute() -> None:
    """A straight line's slope comes back in units per minute, whatever its offset."""
    assert slope_per_min(rss(2.5)) == pytest.approx(2.5)
    assert slope_per_min([(0.0, 7.0)]) is None


def test_warm_up_samples_are_left_out() -> None:
    """Only samples after the first third of the run are judged."""
    assert [t for t, _ in after_warmup(rss(0.0), 600.0)][0] == 200


def test_growth_during_warm_up_alone_is_flat() -> None:
    """RSS that climbs during warm-up and then stays put passes."""
    samples = [(t, 100.0 + min(t, 150) / 5) for t in range(0, 601, 5)]
    verdict = judge(samples, 600.0, NOTHING_LOST, 0)
    assert verdict.memory_flat and verdict.passed and verdict.line().startswith("PASS")


def test_steady_growth_after_warm_up_fails() -> None:
    """RSS still growing 2 MiB a minute after warm-up is not flat against the 1 MiB/min default."""
    verdict = judge(rss(2.0), 600.0, NOTHING_LOST, 0)
    assert not verdict.memory_flat and not verdict.passed and "NOT flat" in verdict.line()


def test_a_loss_or_an_error_fails_with_flat_memory() -> None:
    """One lost message, or one error, fails a run whose memory was flat."""
    assert not judge(rss(0.0), 600.0, {**NOTHING_LOST, "outbox": 1}, 0).passed
    assert not judge(rss(0.0), 600.0, NOTHING_LOST, 1).passed


def test_a_run_too_short_to_judge_memory_fails() -> None:
    """Under two samples after warm-up there is no slope: not flat, not passed."""
    verdict = judge([(0.0, 100.0), (10.0, 100.0)], 30.0, NOTHING_LOST, 0)
    assert verdict.rss_slope_mib_per_min is None and not verdict.passed


def test_server_error_lines_are_counted_by_level() -> None:
    """The server's JSON ERROR lines count as errors, WARNING lines apart, other output not at all."""
    from benchmarks.soak.run import ServerLog

    log = ServerLog()
    for line in ('{"level": "ERROR", "message": "boom"}\n', '{"level": "WARNING", "message": "hm"}\n',
                 "SWITCHYARD_READY port=1\n", '{"level": "INFO", "message": "fine"}\n'):
        log.append(line)
    assert (log.errors, log.warnings) == (1, 1) and log.first_error is not None and "boom" in log.first_error
    assert len(log) == 4
