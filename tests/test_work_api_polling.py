"""The worker endpoints over HTTP (in-process client, session database): a worker authenticated by
its own token takes work (204 when none), reports on its own running requests only, and reports its
metadata; its token is useless on the rest of the API, and anything but a worker's token is refused."""

from __future__ import annotations

from datetime import timedelta

from django.test import Client, override_settings
from django.utils import timezone

from app.work.models import Result, Status, Worker, WorkRequest
from app.work.sessions import close_session, open_session
from app.work.transitions import Returned, abort, assign, return_to_pending
from app.work.workers import set_enabled
from tests.protocol import make_user, superuser_key
from tests.work import clear_work, reload, running
from tests.work_api import call, create, submitter, worker_key

NEXT = "/worker/work-requests/next"


def report(key: str, pk: int, what: str, body: object = None) -> tuple[int, object]:
    return call(f"/worker/work-requests/{pk}/{what}", "POST", key, body)


def test_next_is_204_then_200_after_a_create() -> None:
    """With an empty queue get-next answers 204; after a create it answers that request, now running on it."""
    clear_work()
    on, key = worker_key()
    assert call(NEXT, "POST", key) == (204, None)
    pk = create(submitter()[1])[1]["id"]
    status, body = call(NEXT, "POST", key)
    assert status == 200 and (body["id"], body["status"], body["attempts"]) == (pk, "running", 1)
    assert WorkRequest.objects.get(pk=pk).worker_id == on.pk


def test_next_gives_only_what_the_worker_can_run() -> None:
    """A request requiring a capability the worker lacks is not given to it."""
    clear_work()
    _, key = worker_key(arch="amd64")
    create(submitter()[1], task_data={"requires": {"arch": "arm64"}})
    assert call(NEXT, "POST", key) == (204, None)


def test_a_call_marks_the_worker_present() -> None:
    """Any call of the worker makes it connected and seen (the lost-worker rules then apply to it)."""
    on, key = worker_key()
    assert on.connected_at is None
    status, body = call("/worker", key=key)
    on.refresh_from_db()
    assert on.connected_at is not None and on.last_seen_at is not None
    assert (status, body["connection"], body["connected_via"]) == (200, "connected", "http")


def test_completed_by_its_worker() -> None:
    """The worker running a request completes it with its result and output."""
    on, key = worker_key()
    given = running(on=on)
    status, body = report(key, given.pk, "completed", {"result": "failure", "output_data": {"log": "boom"}})
    assert status == 200 and (body["status"], body["result"]) == ("completed", "failure")
    given = reload(given)
    assert (given.result, given.output_data) == (Result.FAILURE, {"log": "boom"})


def test_completion_by_the_wrong_worker_is_refused() -> None:
    """Another worker's request answers 404 and stays running."""
    on, _ = worker_key()
    _, other_key = worker_key()
    given = running(on=on)
    status, body = report(other_key, given.pk, "completed", {"result": "success"})
    assert (status, body["detail"]) == (404, f"work request {given.pk} is not assigned to this worker")
    assert reload(given).status == Status.RUNNING


def test_completion_of_an_aborted_request_is_409() -> None:
    """A request aborted while its worker ran it answers 409: the worker learns to stop."""
    on, key = worker_key()
    given = running(on=on)
    assert abort(given.pk)
    status, body = report(key, given.pk, "completed", {"result": "success"})
    assert (status, body["detail"]) == (409, f"work request {given.pk} is aborted: stop working on it")
    assert reload(given).status == Status.ABORTED


def test_second_completion_is_409() -> None:
    """A request is completed once; reporting again is a 409 saying how it ended."""
    on, key = worker_key()
    given = running(on=on)
    assert report(key, given.pk, "completed", {"result": "success"})[0] == 200
    assert report(key, given.pk, "completed", {"result": "error"}) == (
        409, {"detail": f"work request {given.pk} is completed (success): stop working on it"})


@override_settings(WORK_REQUEST_DATA_MAX_BYTES=64)
def test_output_over_the_limit_is_422() -> None:
    """Output data larger than WORK_REQUEST_DATA_MAX_BYTES is refused and the request stays running."""
    on, key = worker_key()
    given = running(on=on)
    status, body = report(key, given.pk, "completed", {"result": "success", "output_data": {"log": "x" * 100}})
    assert status == 422 and "WORK_REQUEST_DATA_MAX_BYTES" in body["detail"]
    assert reload(given).status == Status.RUNNING


def test_started_answers_for_its_own_running_request_only() -> None:
    """started is 200 for the worker's running request and 404 for another worker's."""
    on, key = worker_key()
    given = running(on=on)
    assert report(key, given.pk, "started")[0] == 200
    assert report(worker_key()[1], given.pk, "started")[0] == 404


def test_progress_after_an_abort_is_409() -> None:
    """Progress on a request aborted meanwhile answers 409."""
    on, key = worker_key()
    given = running(on=on)
    assert report(key, given.pk, "progress", {"fraction": 0.5, "message": "half"})[0] == 200
    assert abort(given.pk)
    assert report(key, given.pk, "progress", {"fraction": 0.6})[0] == 409


def test_progress_fraction_is_validated() -> None:
    """A fraction outside 0-1 is a 422."""
    on, key = worker_key()
    assert report(key, running(on=on).pk, "progress", {"fraction": 2})[0] == 422


def test_metadata_replaces_the_dynamic_metadata() -> None:
    """Reported metadata replaces the worker's own; an admin's static keys still win in metadata."""
    on, key = worker_key(arch="amd64")
    call("/worker/metadata", "PUT", key, {"arch": "arm64", "tools": ["docker"]})
    status, body = call("/worker/metadata", "PUT", key, {"arch": "arm64", "cpus": 8})
    assert status == 200 and body["dynamic_metadata"] == {"arch": "arm64", "cpus": 8}
    assert body["metadata"] == {"arch": "amd64", "cpus": 8}
    assert Worker.objects.get(pk=on.pk).dynamic_metadata == {"arch": "arm64", "cpus": 8}


def test_metadata_with_nul_is_422() -> None:
    """Metadata holding a NUL character is refused and nothing is stored."""
    on, key = worker_key()
    status, body = call("/worker/metadata", "PUT", key, {"name\x00": 1})
    assert (status, body["detail"]) == (422, "metadata: strings may not contain the NUL (0x00) character")
    assert Worker.objects.get(pk=on.pk).dynamic_metadata == {}


def test_metadata_with_nan_is_422() -> None:
    """A number JSON does not have (NaN, which Python's reader takes) is refused on every backend."""
    on, key = worker_key()
    status, body = call("/worker/metadata", "PUT", key, {"load": float("nan")})
    assert (status, body["detail"]) == (422, "metadata: numbers must be finite (JSON has no NaN or Infinity)")
    assert Worker.objects.get(pk=on.pk).dynamic_metadata == {}


def test_worker_sees_itself_with_what_it_runs() -> None:
    """GET /worker answers the calling worker and its running requests."""
    on, key = worker_key()
    given = running(on=on)
    status, body = call("/worker", key=key)
    assert status == 200 and (body["name"], [r["id"] for r in body["running"]]) == (on.name, [given.pk])


def test_only_a_worker_token_is_taken() -> None:
    """A user's token, a session and no credentials at all are 401 on the worker endpoints."""
    client = Client()
    client.force_login(make_user(is_superuser=True, is_staff=True))
    for answer in (call(NEXT, "POST", superuser_key()), call(NEXT, "POST", client=client), call(NEXT, "POST")):
        assert answer == (401, {"detail": "a worker's token is required (Authorization: Token <the worker's key>)"})


def test_disabled_worker_is_told_so() -> None:
    """A disabled worker's calls are 401 with TOKEN_DISABLED, and it is not marked present."""
    on, key = worker_key()
    set_enabled(on, False)
    assert call(NEXT, "POST", key) == (401, {"detail": "TOKEN_DISABLED: this worker's token is disabled"})
    assert Worker.objects.get(pk=on.pk).last_seen_at is None


def test_bearer_scheme_is_taken_too() -> None:
    """Authorization: Bearer <key> works as Token <key> does."""
    _, key = worker_key()
    assert call("/worker", headers={"Authorization": f"Bearer {key}"})[0] == 200


def test_worker_token_is_useless_on_the_rest_of_the_api() -> None:
    """A worker's key authenticates nobody on the user API: 401 on work requests, workers and topics."""
    _, key = worker_key()
    assert call("/work-requests", key=key)[0] == 401
    assert call("/work-requests", "POST", key, {"task_name": "noop"})[0] == 401
    assert call("/workers", key=key)[0] == 401
    assert call("/topics", key=key)[0] == 401


@override_settings(WORKER_METADATA_MAX_BYTES=100)
def test_metadata_over_its_own_limit_is_422() -> None:
    """Metadata over WORKER_METADATA_MAX_BYTES (though under the task data limit) is a 422, not a 500."""
    on, key = worker_key()
    status, body = call("/worker/metadata", "PUT", key, {"blob": "x" * 200})
    assert status == 422 and "WORKER_METADATA_MAX_BYTES" in body["detail"]
    assert Worker.objects.get(pk=on.pk).dynamic_metadata == {}


def test_calls_while_its_socket_is_connected_are_409() -> None:
    """A worker holding a socket session takes no work over HTTP meanwhile: 409, nothing given."""
    clear_work()
    on, key = worker_key()
    opened = open_session(on.pk)
    assert opened is not None
    pk = create(submitter()[1])[1]["id"]
    status, body = call(NEXT, "POST", key)
    assert status == 409 and "socket" in body["detail"]
    assert reload(WorkRequest.objects.get(pk=pk)).status == Status.PENDING
    assert close_session(on.pk, opened.connected_at) == {}
    assert call(NEXT, "POST", key)[0] == 200


def test_completion_of_an_earlier_run_is_409() -> None:
    """A completion naming an earlier run (attempt) of a request given to the worker again records nothing."""
    on, key = worker_key()
    given = running(on=on)
    assert return_to_pending(given.pk) is Returned.PENDING
    assert assign(given.pk, on.pk)
    status, _ = report(key, given.pk, "completed", {"result": "success", "attempt": 1})
    assert status == 409
    assert reload(given).status == Status.RUNNING
    assert report(key, given.pk, "completed", {"result": "success", "attempt": 2})[0] == 200


def test_next_answers_again_a_request_never_reported_started() -> None:
    """A request whose next answer was lost is answered again (redelivered) until the worker reports it started."""
    clear_work()
    _, key = worker_key()
    pk = create(submitter()[1])[1]["id"]
    assert call(NEXT, "POST", key)[1]["id"] == pk  # this answer never reached the worker
    assert call(NEXT, "POST", key) == (204, None)  # given just now: the worker may be about to report it
    WorkRequest.objects.filter(pk=pk).update(started_at=timezone.now() - timedelta(seconds=60))
    status, again = call(NEXT, "POST", key)
    assert (status, again["id"], again["redelivered"], again["attempts"]) == (200, pk, True, 1)
    assert report(key, pk, "started")[0] == 200
    assert call(NEXT, "POST", key) == (204, None)


def test_get_itself_while_its_socket_is_connected() -> None:
    """Reading itself is answered while a socket session holds the worker, showing connected_via socket."""
    on, key = worker_key()
    opened = open_session(on.pk)
    assert opened is not None
    status, body = call("/worker", key=key)
    assert (status, body["connected_via"]) == (200, "socket")
    assert close_session(on.pk, opened.connected_at) == {}


def test_next_with_slots_to_fill_gives_nothing_twice() -> None:
    """A worker that asks again before reporting, with a free slot, is not given the same request again."""
    clear_work()
    _, key = worker_key(concurrency=2)
    pk = create(submitter()[1])[1]["id"]
    assert call(NEXT, "POST", key)[1]["id"] == pk
    WorkRequest.objects.filter(pk=pk).update(started_at=timezone.now() - timedelta(seconds=60))
    assert call(NEXT, "POST", key) == (204, None)


def test_report_of_an_earlier_run_acknowledges_nothing() -> None:
    """started naming an earlier run (attempt) of a request given to the worker again is a 409."""
    on, key = worker_key()
    given = running(on=on)
    assert return_to_pending(given.pk) is Returned.PENDING
    assert assign(given.pk, on.pk)
    assert call(f"/worker/work-requests/{given.pk}/started?attempt=1", "POST", key)[0] == 409
    assert reload(given).acknowledged_at is None
    assert call(f"/worker/work-requests/{given.pk}/started?attempt=2", "POST", key)[0] == 200
    assert reload(given).acknowledged_at is not None


def test_numbers_beyond_64_bits_are_422() -> None:
    """Output with a number PostgreSQL would give back as an integer too large to write is refused."""
    on, key = worker_key()
    given = running(on=on)
    status, body = report(key, given.pk, "completed", {"result": "success", "output_data": {"n": 1e20}})
    assert status == 422 and "2**63" in body["detail"]


def test_next_answers_again_a_request_the_worker_stopped_reporting_on() -> None:
    """A full worker that reported nothing on a started request for WORKER_LOST_AFTER_S is answered it again."""
    clear_work()
    _, key = worker_key()
    pk = create(submitter()[1])[1]["id"]
    assert call(NEXT, "POST", key)[1]["id"] == pk
    assert report(key, pk, "started")[0] == 200
    assert call(NEXT, "POST", key) == (204, None)  # reported just now: it is at it
    WorkRequest.objects.filter(pk=pk).update(acknowledged_at=timezone.now() - timedelta(minutes=10))
    status, again = call(NEXT, "POST", key)
    assert (status, again["id"], again["redelivered"]) == (200, pk, True)


def test_disabling_a_polling_worker_returns_its_request_at_once() -> None:
    """A polling worker disabled mid-request has its request back in pending at once (no socket to close)."""
    on, key = worker_key()
    assert call("/worker", key=key)[0] == 200
    given = running(on=on)
    set_enabled(Worker.objects.select_related("token").get(pk=on.pk), False)
    assert (reload(given).status, Worker.objects.get(pk=on.pk).connected_at) == (Status.PENDING, None)
