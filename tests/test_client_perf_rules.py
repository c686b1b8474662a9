"""The perf harness's decisions without a socket: histogram, rate limiter, tallies, exit codes, output."""

from __future__ import annotations

import math
import random

import pytest

from switchyard_client.cli import exits, main
from switchyard_client.errors import ConnectionRefused, SendError, SendTimeout
from switchyard_client.perf.commands import problem, topics_of
from switchyard_client.perf.consume import latency_us
from switchyard_client.perf.histogram import HOUR_US, Histogram
from switchyard_client.perf.outcome import exit_code, kind_of
from switchyard_client.perf.rate import Countdown, RateLimiter
from switchyard_client.perf.report import Side, live_line, public_url, result_json
from switchyard_client.perf.tally import Interval, Tally

pytestmark = pytest.mark.database_agnostic

PERCENTILES = (1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99)


def exact(values: list[int], p: float) -> int:
    """The nearest-rank percentile, computed from the sorted values."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(p * len(ordered) / 100, 9))) - 1]


def filled(values: list[int]) -> Histogram:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    return histogram


@pytest.mark.parametrize("distribution", ["uniform", "exponential", "lognormal", "bimodal"])
def test_percentiles_are_within_the_stated_error_of_the_exact_ones(distribution: str) -> None:
    """Every percentile of 50,000 known latencies is the exact one or above it by at most 1/128 of it."""
    rand = random.Random(17)
    draw = {
        "uniform": lambda: rand.randint(0, 5_000_000),
        "exponential": lambda: int(rand.expovariate(1 / 2_000)),
        "lognormal": lambda: int(rand.lognormvariate(8, 2)),
        "bimodal": lambda: rand.choice((int(rand.gauss(800, 50)), int(rand.gauss(90_000, 5_000)))),
    }[distribution]
    values = [min(max(draw(), 0), HOUR_US) for _ in range(50_000)]
    histogram = filled(values)
    assert histogram.relative_error == 1 / 128
    for p in PERCENTILES:
        truth = exact(values, p)
        assert truth <= histogram.percentile(p) <= truth * (1 + histogram.relative_error), p


def test_small_values_are_exact() -> None:
    """Values below the sub-bucket count (256 at 2 digits) are kept exactly."""
    values = list(range(256)) * 3
    histogram = filled(values)
    assert [histogram.percentile(p) for p in PERCENTILES] == [exact(values, p) for p in PERCENTILES]


def test_min_max_mean_and_count_are_exact() -> None:
    """min, max, mean and count come from the values, not from buckets."""
    histogram = filled([1_234_567, 3, 1_000])
    assert (histogram.min, histogram.max, histogram.count) == (3, 1_234_567, 3)
    assert histogram.mean == pytest.approx((1_234_567 + 3 + 1_000) / 3)
    assert (histogram.percentile(0), histogram.percentile(100)) == (3, 1_234_567)


def test_memory_does_not_grow_with_values() -> None:
    """One microsecond to one hour at 2 digits fits in a fixed few thousand counters."""
    histogram = Histogram()
    size = histogram.counters
    for value in range(0, HOUR_US, 7_919):
        histogram.record(value)
    assert histogram.counters == size <= 3_400


def test_values_out_of_range_are_clamped_and_counted() -> None:
    """A value above the highest (or below 0) is recorded at the edge and counted as saturated."""
    histogram = Histogram(highest=1_000_000)
    histogram.record(5_000_000)
    histogram.record(-3)
    assert (histogram.saturated, histogram.max, histogram.min) == (2, 1_000_000, 0)


def test_an_empty_histogram_has_no_percentiles() -> None:
    """Nothing recorded: percentiles, min, max and mean are None; the table has only its header."""
    histogram = Histogram()
    assert (histogram.percentile(50), histogram.min, histogram.max, histogram.mean) == (None, None, None, None)
    assert len(histogram.table().splitlines()) == 1


def test_a_percentile_outside_0_to_100_is_refused() -> None:
    """percentile(p) takes 0..100."""
    with pytest.raises(ValueError):
        Histogram().percentile(101)


def test_merging_equals_recording_into_one() -> None:
    """Two merged histograms answer as one that recorded both sets of values."""
    rand = random.Random(3)
    first = [int(rand.expovariate(1 / 500)) for _ in range(5_000)]
    second = [int(rand.expovariate(1 / 50_000)) for _ in range(5_000)]
    merged = filled(first)
    merged.merge(filled(second))
    together = filled(first + second)
    assert [merged.percentile(p) for p in PERCENTILES] == [together.percentile(p) for p in PERCENTILES]
    assert (merged.count, merged.min, merged.max, merged.mean) == (together.count, together.min, together.max,
                                                                   together.mean)


def test_histograms_of_another_precision_do_not_merge() -> None:
    """Merging needs the same range and significant digits."""
    with pytest.raises(ValueError):
        Histogram(significant_digits=2).merge(Histogram(significant_digits=3))


def test_json_round_trip_keeps_the_distribution() -> None:
    """A histogram read back from its JSON gives the same percentiles and exact figures."""
    rand = random.Random(5)
    histogram = filled([int(rand.lognormvariate(7, 1.5)) for _ in range(10_000)])
    again = Histogram.from_json(histogram.to_json())
    assert [again.percentile(p) for p in PERCENTILES] == [histogram.percentile(p) for p in PERCENTILES]
    assert again.to_json() == histogram.to_json()


def test_the_table_lists_hdr_percentiles_in_milliseconds() -> None:
    """The table has rows for 50, 75, 90, 95, 99, 99.9, 99.99 and 100, values in ms, counts at or below."""
    histogram = filled(list(range(1_000, 101_000, 100)))
    rows = histogram.table().splitlines()
    assert [row.split()[0] for row in rows[1:9]] == ["50.000", "75.000", "90.000", "95.000", "99.000", "99.900",
                                                     "99.990", "100.000"]
    assert rows[8].split()[1:3] == ["100.900", "1,000"]
    assert "mean" in rows[9]


def test_slots_follow_the_absolute_schedule_without_drift() -> None:
    """The n-th slot is due at start + n / rate, also after a million of them."""
    limiter = RateLimiter(rate=3.0, start=100.0, max_lag_s=1e9)
    dues = [limiter.reserve(now=100.0) for _ in range(1_000_000)]
    assert dues[:4] == pytest.approx([100.0, 100 + 1 / 3, 100 + 2 / 3, 101.0])
    assert dues[-1] == pytest.approx(100.0 + 999_999 / 3, abs=1e-9)


def test_a_sender_that_wakes_late_catches_up() -> None:
    """A sender whose every sleep overshoots by 3 ms still sends rate x seconds messages."""
    limiter = RateLimiter(rate=1_000.0, start=0.0)
    now, sent = 0.0, 0
    while now < 10.0:
        due = limiter.reserve(now)
        if due > now:
            now = due + 0.003  # the sleep overslept
        sent += 1
    assert abs(sent - 10_000) <= 5
    assert limiter.restarts == 0


def test_falling_far_behind_restarts_the_schedule_instead_of_bursting() -> None:
    """After a stall longer than max_lag_s the next slots are paced from now, not sent at once."""
    limiter = RateLimiter(rate=100.0, start=0.0, max_lag_s=1.0)
    limiter.reserve(0.0)
    dues = [limiter.reserve(5.0) for _ in range(3)]
    assert dues == pytest.approx([5.0, 5.01, 5.02])
    assert limiter.restarts == 1


def test_rate_zero_is_as_fast_as_possible() -> None:
    """With rate 0 every slot is due at once."""
    limiter = RateLimiter(rate=0.0, start=0.0)
    assert [limiter.reserve(7.0) for _ in range(3)] == [7.0, 7.0, 7.0]


def test_a_negative_rate_is_refused() -> None:
    """A rate below 0 is an error, not a silent max rate."""
    with pytest.raises(ValueError):
        RateLimiter(rate=-1.0, start=0.0)


def test_countdown_stops_after_its_total() -> None:
    """A countdown of 3 lets 3 through; one of 0 has no limit."""
    three = Countdown(3)
    assert [three.take() for _ in range(5)] == [True, True, True, False, False]
    assert three.exhausted
    unlimited = Countdown(0)
    assert all(unlimited.take() for _ in range(1_000)) and not unlimited.exhausted


def test_a_tick_closes_an_interval_and_keeps_its_latencies() -> None:
    """An interval has its own rate and percentiles; its latencies join the total."""
    tally = Tally(start=10.0)
    for n in range(100):
        tally.done(1_024, 1_000 + n, now=10.5)
    tally.error("timeout")
    interval = tally.tick(now=11.0)
    assert (interval.messages, interval.rate, interval.errors, interval.max_us) == (100, 100.0, 1, 1_099)
    assert interval.mib_rate == pytest.approx(100 * 1_024 / 1024**2)
    assert tally.tick(now=12.0).messages == 0
    assert (tally.latency.count, len(tally.series)) == (100, 2)


def test_rates_are_measured_to_the_last_message() -> None:
    """A run's rate is its messages over the time from its start to its last completed message."""
    tally = Tally(start=0.0)
    for n in range(1, 11):
        tally.done(100, None, now=n * 0.5)
    assert (tally.elapsed(now=60.0), tally.rate(now=60.0), tally.untimed) == (5.0, 2.0, 10)


def test_a_consumer_rate_can_be_measured_from_its_first_message() -> None:
    """from_first: waiting for the first message does not lower the rate."""
    tally = Tally(start=0.0, from_first=True)
    for n in range(11):
        tally.done(100, None, now=30.0 + n)
    assert tally.rate(now=60.0) == pytest.approx(1.1)


def test_close_adds_the_last_partial_interval() -> None:
    """What happened after the last tick is in the series and the total."""
    tally = Tally(start=0.0)
    tally.tick(1.0)
    tally.done(10, 500, now=1.1)
    tally.close(now=1.2)
    assert ([i.messages for i in tally.series], tally.latency.count) == ([0, 1], 1)


@pytest.mark.parametrize(("kinds", "delivered", "interrupted", "code"), [
    ([], 10, False, exits.OK),
    ([], 0, False, exits.TIMEOUT),
    (["timeout"], 10, False, exits.TIMEOUT),
    (["send-error:8"], 10, False, exits.REJECTED),
    (["refused (404)", "send-error:8"], 10, False, exits.REFUSED),
    (["server-error"], 10, False, exits.ERROR),
    (["send-error:8"], 10, True, exits.INTERRUPTED),
])
def test_exit_codes(kinds: list[str], delivered: int, interrupted: bool, code: int) -> None:
    """Refused sockets, refused messages, timeouts and nothing delivered each have their code."""
    assert exit_code(kinds, delivered, interrupted=interrupted) == code


def test_errors_are_counted_by_kind() -> None:
    """An error ack counts under the broker's result, a timeout as timeout, a refusal with its status."""
    assert kind_of(SendError("send-error:8", "no delay here")) == "send-error:8"
    assert kind_of(SendTimeout("no ack")) == "timeout"
    assert kind_of(ConnectionRefused("ws://x", 404, "no such topic")) == "refused (404)"


def test_the_live_line_reads_as_documented() -> None:
    """rate, throughput and latencies in one line; errors only when there were some."""
    interval = Interval(at_s=1.0, seconds=1.0, messages=12_345, bytes=12_345 * 1_024, errors=0, p50_us=1_200,
                        p99_us=4_500, max_us=9_800)
    side = Side("produced", "send -> ack", Tally(0.0))
    assert live_line([(side, interval)]) == "produced 12,345 msg/s  12.1 MiB/s  latency ms p50 1.20 p99 4.50 max 9.80"
    failing = Interval(at_s=1.0, seconds=1.0, messages=0, bytes=0, errors=3, p50_us=None, p99_us=None, max_us=None)
    assert live_line([(side, failing)]) == "produced 0 msg/s  0.0 MiB/s  latency ms -  errors 3"


def test_the_result_holds_percentiles_buckets_and_series() -> None:
    """The JSON result of a side has totals, rates, errors, percentiles, buckets and the series."""
    tally = Tally(start=0.0)
    for n in range(100):
        tally.done(10, 1_000 * (n + 1), now=0.5)
    tally.error("timeout")
    tally.close(now=1.0)
    result = result_json("produce", {"rate": 100}, [Side("produced", "send -> ack", tally)], 1.0,
                         started_at="t", exit_code=4, interrupted=False)
    produced = result["produced"]
    assert (produced["messages"], produced["msg_per_s"], produced["errors"]) == (100, 200.0, {"timeout": 1})
    assert produced["latency"]["percentiles_ms"]["p50"] == pytest.approx(50.0, rel=1 / 128)
    assert produced["latency"]["percentiles_ms"]["max"] == 100.0
    assert sum(bucket[2] for bucket in produced["latency"]["histogram_us"]["buckets"]) == 100
    assert [point["messages"] for point in produced["series"]] == [100]


def test_the_result_file_names_no_credentials() -> None:
    """A URL's user, password and query are left out of the result."""
    assert public_url("wss://me:secret@broker.example:8443/sy?token=abc") == "wss://broker.example:8443/sy"


def test_topics_expand_from_one_name() -> None:
    """--topics N makes TOPIC-0 .. TOPIC-<N-1>; with several names it is refused."""
    assert topics_of(["load"], 3) == ["load-0", "load-1", "load-2"]
    assert topics_of(["a", "b"], 1) == ["a", "b"]
    with pytest.raises(ValueError):
        topics_of(["a", "b"], 2)


def test_sent_timestamps_give_latencies() -> None:
    """perf_sent_ns as text or integer gives microseconds; anything else gives none."""
    assert latency_us("1000000", 3_000_000) == 2_000
    assert latency_us(1_000_000, 3_000_000) == 2_000
    assert latency_us("soon", 3_000_000) is None
    assert latency_us(None, 3_000_000) is None


@pytest.mark.parametrize("argv", [
    ["perf", "produce", "t", "-r", "-5"],
    ["perf", "produce", "t", "-s", "lots"],
    ["perf", "produce", "t", "-s", str(64 * 1024 * 1024)],
    ["perf", "produce", "t", "-p", "0"],
    ["perf", "produce", "t", "-d", "nan"],
    ["perf", "produce", "t", "--json", "/no/such/directory/result.json"],
    ["perf", "consume", "t", "-t", "fifo"],
])
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value exits 2 with a message naming it, before anything connects."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == exits.USAGE
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["perf", "produce", "t", "-d", "0"], "give -n"),
    (["perf", "consume", "t", "-c", "2"], "exclusive subscription takes one consumer"),
    (["perf", "produce", "a", "b", "--topics", "2"], "--topics N takes one TOPIC"),
])
def test_conflicting_arguments_are_usage_errors(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Arguments that do not go together exit 2 with the reason, before anything connects."""
    assert main(["--url", "ws://127.0.0.1:9", *argv]) == exits.USAGE
    assert says in capsys.readouterr().err


def test_problem_accepts_a_count_without_a_duration() -> None:
    """-d 0 with -n runs until the count."""
    from argparse import Namespace

    assert problem(Namespace(duration=0.0, count=100)) is None
