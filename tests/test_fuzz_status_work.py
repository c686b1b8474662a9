"""Fuzzing the status viewer (/ws/status), the work request feed (/ws/work-requests/) and the worker
socket (/ws/workers/) with generated frames. The two feeds read nothing: every frame gets an ``error:``
frame, between the status and work request frames they send. The worker socket answers a bad frame
with an ``error`` frame and takes good ones silently. The server stays up, a bystander pair keeps
delivering, the server logs no ERROR and its memory stays bounded (tests/fuzz_sockets.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.frame_strategies import INTEGERS, JSON, TEXT, VALUES, any_object, shaped
from tests.fuzz_sockets import (
    TEST_TIMEOUT_S,
    Endpoint,
    Fuzzed,
    assert_memory_bounded,
    fuzz_frames,
    fuzzed_server,
    judge_error,
    judge_worker,
)

# Hypothesis warns of the reprs of large frames when it reports a failure: large frames are meant.
pytestmark = [pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
              pytest.mark.timeout(TEST_TIMEOUT_S)]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    yield from fuzzed_server(tmp_path_factory, "fuzz-status-work")


def test_status_viewer(state: Fuzzed) -> None:
    """Generated frames on /ws/status (all topics, or some) each get an error frame."""
    endpoints = [Endpoint(path, judge_error) for path in
                 ("status", f"status/?topics={state.topics['dasf']},{state.topics['pulsar']},missing")]
    fuzz_frames(state, endpoints, any_object())


def test_work_requests(state: Fuzzed) -> None:
    """Generated frames on /ws/work-requests/ each get an error frame."""
    endpoint = Endpoint("work-requests/?completed_since=2000-01-01T00:00:00Z", judge_error)
    fuzz_frames(state, endpoint, any_object())


def progress_probe(number: int) -> dict[str, Any]:
    """A progress report of a request not running here (ids are positive: the probe's is negative)."""
    return {"type": "progress", "work_request_id": -1 - number}


def refuses_progress(reply: dict[str, Any], number: int) -> bool:
    return reply.get("type") == "error" and reply.get("work_request_id") == -1 - number


REQUEST_IDS = st.one_of(INTEGERS, VALUES)
WORKER_FRAMES = st.one_of(
    shaped({"type": st.just("metadata"), "metadata": st.dictionaries(TEXT, JSON, max_size=4)}),
    shaped({"type": st.just("heartbeat")}),
    shaped({"type": st.just("started"), "work_request_id": REQUEST_IDS}),
    shaped({"type": st.just("progress"), "work_request_id": REQUEST_IDS},
           {"fraction": st.floats(allow_nan=False), "message": TEXT}),
    shaped({"type": st.just("completed"), "work_request_id": REQUEST_IDS,
            "result": st.sampled_from(["success", "failure", "error"])}, {"output_data": JSON, "attempt": INTEGERS}),
    shaped({"type": st.one_of(TEXT, VALUES)}),
)


def test_worker(state: Fuzzed) -> None:
    """Generated frames on a worker's socket each get an error frame or are taken silently."""
    endpoint = Endpoint("workers/", judge_worker, progress_probe, refuses_progress, key="worker")
    fuzz_frames(state, endpoint, WORKER_FRAMES)


def test_memory_bounded(state: Fuzzed) -> None:
    """The server's resident memory after the module's fuzzing stays within the bound of before it."""
    assert_memory_bounded(state)
