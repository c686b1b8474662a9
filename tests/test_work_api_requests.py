"""Work requests over HTTP (in-process client, session database): create one or a bulk all or none,
list with filters and pages, get, abort, retry; who may do each; quotas and validation."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import get_args
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from app.api.work_requests import ResultName, StatusName
from app.work.models import Result, Status, WorkRequest
from app.work.transitions import assign, complete
from tests.protocol import make_user
from tests.work import ECHO, running, worker
from tests.work_api import call, caller, create, submitter


def own_request(key: str, **fields: object) -> int:
    status, body = create(key, **fields)
    assert status == 201, body
    return int(body["id"])


def complete_as(pk: int, result: Result, output: object = None) -> int:
    """Run request ``pk`` on a new worker and complete it with ``result`` and ``output``."""
    on = worker()
    assert assign(pk, on.pk) and complete(pk, result, output, worker_id=on.pk)
    return pk


def test_status_and_result_names_are_the_models() -> None:
    """The API's status and result names are exactly the model's choices (a result of none is null)."""
    assert set(get_args(StatusName)) == set(Status.values)
    assert set(get_args(ResultName)) == set(Result.values) - {""}


def test_create_answers_the_pending_request() -> None:
    """A created request is pending, in the caller's name, and stored as answered."""
    user, key = submitter()
    status, body = create(key, ECHO, task_data={"text": "hi"})
    assert status == 201
    assert (body["status"], body["created_by"], body["task_data"]) == ("pending", user.username, {"text": "hi"})
    assert WorkRequest.objects.get(pk=body["id"]).created_by == user


def test_create_needs_add_permission() -> None:
    """Without work.add_workrequest creating is 403; anonymous callers get 401."""
    assert create(caller()[1])[0] == 403
    assert call("/work-requests", "POST", None, {"task_name": "noop"})[0] == 401


def test_unknown_task_is_422() -> None:
    """A task nobody registered is refused with its name."""
    status, body = create(submitter()[1], "no.such.task")
    assert (status, body["detail"]) == (422, "task_name: unknown task 'no.such.task'")


def test_invalid_task_data_names_the_schema_path() -> None:
    """Task data the task's JSON schema refuses is a 422 naming the failing path."""
    status, body = create(submitter()[1], ECHO, task_data={"text": "x", "items": [1, "two"]})
    assert (status, body["detail"]) == (422, "task_data.items[1]: 'two' is not of type 'integer'")


def test_nul_in_task_data_is_422_on_every_backend() -> None:
    """A NUL character in task data is refused before anything is stored (jsonb could not hold it)."""
    user, key = submitter()
    status, body = create(key, ECHO, task_data={"text": "a\x00b"})
    assert (status, body["detail"]) == (422, "task_data: strings may not contain the NUL (0x00) character")
    assert not WorkRequest.objects.filter(created_by=user).exists()


def test_requirement_beyond_64_bits_is_422() -> None:
    """A number no search could sign once PostgreSQL gives it back (1e20 as an integer) is refused in requires."""
    user, key = submitter()
    status, body = create(key, "noop", task_data={"requires": {"mem": 1e20}})
    assert status == 422 and "2**63" in body["detail"]
    assert not WorkRequest.objects.filter(created_by=user).exists()


def test_positive_priority_needs_the_priorities_permission() -> None:
    """Jumping the queue (priority_base above 0) needs manage_workrequest_priorities; lowering one's own does not."""
    status, body = create(submitter()[1], priority_base=5)
    assert status == 403 and "manage_workrequest_priorities" in body["detail"]
    assert create(submitter()[1], priority_base=-5)[0] == 201
    assert create(caller("add_workrequest", "manage_workrequest_priorities")[1], priority_base=5)[0] == 201


@override_settings(WORK_REQUESTS_PER_PRINCIPAL=2)
def test_quota_refuses_past_the_limit() -> None:
    """A creator with WORK_REQUESTS_PER_PRINCIPAL pending requests is refused (403) another."""
    user, key = submitter()
    own_request(key)
    own_request(key)
    status, body = create(key)
    assert status == 403 and "work request limit reached" in body["detail"]
    assert WorkRequest.objects.filter(created_by=user).count() == 2


def test_hidden_dependency_is_refused_like_a_missing_one() -> None:
    """Another user's request cannot be a dependency: 422 worded as for an id that does not exist."""
    other = own_request(submitter()[1])
    key = submitter()[1]
    assert create(key, dependencies=[other]) == (422, {"detail": f"no work request #{other}"})
    assert create(key, dependencies=[2**62]) == (422, {"detail": f"no work request #{2**62}"})


def test_dependencies_are_kept() -> None:
    """A request created with dependencies lists them."""
    key = submitter()[1]
    first, second = own_request(key), own_request(key)
    status, body = create(key, dependencies=[second, first])
    assert status == 201 and body["dependencies"] == [first, second]


def test_bulk_creates_every_request_in_order() -> None:
    """A bulk create answers every request, in the order given."""
    _, key = submitter()
    status, body = call("/work-requests/bulk", "POST", key,
                        [{"task_name": ECHO, "task_data": {"text": str(n)}} for n in range(3)])
    assert status == 201 and [item["task_data"]["text"] for item in body] == ["0", "1", "2"]
    assert [item["id"] for item in body] == sorted(item["id"] for item in body)


def test_bulk_is_all_or_nothing() -> None:
    """One refused item refuses the bulk, naming its index, and none of the others is created."""
    user, key = submitter()
    items = [{"task_name": ECHO, "task_data": {"text": "ok"}}, {"task_name": ECHO, "task_data": {"text": 7}}]
    status, body = call("/work-requests/bulk", "POST", key, items)
    assert (status, body["detail"]) == (422, "[1] task_data.text: 7 is not of type 'string'")
    assert not WorkRequest.objects.filter(created_by=user).exists()


@override_settings(WORK_REQUESTS_BULK_MAX=2)
def test_bulk_is_bounded_by_its_setting() -> None:
    """More items than WORK_REQUESTS_BULK_MAX is a 422 and creates nothing."""
    user, key = submitter()
    status, body = call("/work-requests/bulk", "POST", key, [{"task_name": "noop"}] * 3)
    assert status == 422 and "WORK_REQUESTS_BULK_MAX" in body["detail"]
    assert not WorkRequest.objects.filter(created_by=user).exists()


@override_settings(WORK_REQUESTS_PER_PRINCIPAL=2)
def test_bulk_counts_its_own_items_against_the_quota() -> None:
    """A bulk that would take its creator past the quota is refused whole (403)."""
    user, key = submitter()
    status, body = call("/work-requests/bulk", "POST", key, [{"task_name": "noop"}] * 3)
    assert status == 403 and body["detail"].startswith("[2] work request limit reached")
    assert not WorkRequest.objects.filter(created_by=user).exists()


def test_list_holds_only_your_own_requests() -> None:
    """Without work.view_workrequest a caller lists the requests it created, and no one else's."""
    mine, key = submitter()
    own_request(key)
    own_request(submitter()[1])
    status, page = call("/work-requests?limit=200", key=key)
    assert status == 200 and {item["created_by"] for item in page["items"]} == {mine.username}


def test_view_permission_lists_everyones_requests() -> None:
    """work.view_workrequest sees other users' requests."""
    other = own_request(submitter()[1])
    viewer = caller("view_workrequest")[1]
    status, body = call(f"/work-requests/{other}", key=viewer)
    assert status == 200 and body["id"] == other


def test_list_filters_by_status_and_result() -> None:
    """status and result keep only requests in that state."""
    user, key = submitter()
    failed = complete_as(own_request(key), Result.FAILURE)
    own_request(key)
    status, page = call(f"/work-requests?created_by={user.username}&status=completed&result=failure", key=key)
    assert status == 200 and [item["id"] for item in page["items"]] == [failed]


def test_list_filters_by_task_and_worker() -> None:
    """task_name and worker (its name) keep only matching requests."""
    user, key = submitter()
    on = worker()
    given = running(on=on, task_name=ECHO, task_data={"text": "x"}, created_by=user)
    own_request(key, task_name=ECHO, task_data={"text": "y"})
    status, page = call(f"/work-requests?task_name={ECHO}&worker={quote(on.name)}", key=key)
    assert status == 200 and [item["id"] for item in page["items"]] == [given.pk]


def test_list_filters_by_creation_window() -> None:
    """created_since is inclusive, created_until exclusive."""
    user, key = submitter()
    pk = own_request(key)
    made = WorkRequest.objects.get(pk=pk).created_at
    since = quote(made.isoformat())
    later = quote((made + timedelta(seconds=1)).isoformat())
    assert [i["id"] for i in call(f"/work-requests?created_since={since}", key=key)[1]["items"]] == [pk]
    assert call(f"/work-requests?created_until={since}", key=key)[1]["items"] == []
    assert [i["id"] for i in call(f"/work-requests?created_until={later}", key=key)[1]["items"]] == [pk]


def test_list_walks_pages_with_the_cursor() -> None:
    """Following next with limit=2 sees each request exactly once, oldest first."""
    _, key = submitter()
    made = [own_request(key) for _ in range(5)]
    seen: list[int] = []
    url: str | None = "/work-requests?limit=2"
    while url is not None:
        status, page = call(url, key=key)
        assert status == 200
        seen += [item["id"] for item in page["items"]]
        url = page["next"]
    assert seen == made


def test_anonymous_list_is_401() -> None:
    """Listing needs a caller: anonymous is told to authenticate."""
    assert call("/work-requests")[0] == 401


def test_get_shows_data_dependencies_attempts_and_output() -> None:
    """One request answers its task data, dependencies, attempts and the worker's output."""
    user, key = submitter()
    parent = complete_as(own_request(key), Result.SUCCESS)
    pk = complete_as(own_request(key, task_name=ECHO, task_data={"text": "x"}, dependencies=[parent]),
                     Result.SUCCESS, {"log": "ok"})
    status, body = call(f"/work-requests/{pk}", key=key)
    assert status == 200
    assert (body["task_data"], body["dependencies"], body["attempts"], body["output_data"], body["result"]) == (
        {"text": "x"}, [parent], 1, {"log": "ok"}, "success")


def test_hidden_request_is_404_like_a_missing_one() -> None:
    """Another user's request answers exactly as an id that does not exist."""
    other = own_request(submitter()[1])
    key = submitter()[1]
    assert call(f"/work-requests/{other}", key=key) == (404, {"detail": f"work request {other} does not exist"})
    assert call(f"/work-requests/{other}/abort", "POST", key)[0] == 404
    assert call("/work-requests/999999999", key=key) == (404, {"detail": "work request 999999999 does not exist"})


def test_creator_aborts_a_pending_request() -> None:
    """The creator may abort its own pending request."""
    _, key = submitter()
    pk = own_request(key)
    status, body = call(f"/work-requests/{pk}/abort", "POST", key)
    assert status == 200 and body["status"] == "aborted" and WorkRequest.objects.get(pk=pk).status == Status.ABORTED


def test_abort_of_a_running_request_keeps_its_worker() -> None:
    """A running request is aborted; it still names the worker that is to be told."""
    user, key = submitter()
    on = worker()
    given = running(on=on, created_by=user)
    status, body = call(f"/work-requests/{given.pk}/abort", "POST", key)
    assert status == 200 and (body["status"], body["worker"]) == ("aborted", on.name)


def test_abort_needs_creator_or_change_permission() -> None:
    """Seeing a request (work.view_workrequest) does not allow aborting it; work.change_workrequest does."""
    pk = own_request(submitter()[1])
    assert call(f"/work-requests/{pk}/abort", "POST", caller("view_workrequest")[1])[0] == 403
    assert call(f"/work-requests/{pk}/abort", "POST", caller("view_workrequest", "change_workrequest")[1])[0] == 200


def test_abort_of_a_finished_request_is_409() -> None:
    """A completed request cannot be aborted: 409 with its state."""
    _, key = submitter()
    pk = complete_as(own_request(key), Result.SUCCESS)
    assert call(f"/work-requests/{pk}/abort", "POST", key) == (
        409, {"detail": f"work request {pk} is completed (success); only pending or running requests can be aborted"})


def test_retry_of_a_failed_request_creates_its_successor() -> None:
    """Retrying a failed request answers 201 with a new pending request that supersedes it."""
    _, key = submitter()
    pk = complete_as(own_request(key), Result.FAILURE)
    status, body = call(f"/work-requests/{pk}/retry", "POST", key)
    assert status == 201 and (body["status"], body["supersedes"]) == ("pending", pk)
    assert call(f"/work-requests/{pk}", key=key)[1]["superseded_by"] == body["id"]


def test_second_retry_is_409() -> None:
    """A request is retried once; the second retry names its successor."""
    _, key = submitter()
    pk = complete_as(own_request(key), Result.ERROR)
    successor = call(f"/work-requests/{pk}/retry", "POST", key)[1]["id"]
    assert call(f"/work-requests/{pk}/retry", "POST", key) == (
        409, {"detail": f"work request {pk} was retried already (as #{successor})"})


def test_retry_of_a_pending_request_is_409() -> None:
    """Only failed or aborted requests are retried."""
    _, key = submitter()
    pk = own_request(key)
    status, body = call(f"/work-requests/{pk}/retry", "POST", key)
    assert (status, body["detail"]) == (409, f"work request {pk} is pending; only failed or aborted requests can "
                                             "be retried")


def test_retry_needs_the_right_to_create() -> None:
    """A creator who may no longer create requests cannot retry one (a retry creates a request)."""
    user, key = submitter()
    pk = complete_as(own_request(key), Result.FAILURE)
    user.user_permissions.remove(Permission.objects.get(content_type__app_label="work", codename="add_workrequest"))
    assert call(f"/work-requests/{pk}/retry", "POST", key)[0] == 403


def test_session_write_needs_csrf() -> None:
    """A session-authenticated create without the CSRF token is refused and creates nothing."""
    user = make_user(is_superuser=True, is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    status, body = call("/work-requests", "POST", body={"task_name": "noop"}, client=client)
    assert status == 403 and body["detail"].startswith("CSRF check failed")
    assert not WorkRequest.objects.filter(created_by=user).exists()


# The bulk's own views still return (status, body) tuples, which ninja deprecates (a warning, an error here).
@pytest.mark.filterwarnings("ignore:Returning tuple:DeprecationWarning")
def test_bulk_api_builds_a_dependency_chain() -> None:
    """In one POST /_bulk/, a request can depend on one created just before it (a reference)."""
    _, key = submitter()
    status, results = call("/_bulk/", "POST", key, [
        {"method": "post", "path": "work-requests", "data": {"task_name": "noop"}, "let": "parent"},
        {"method": "post", "path": "work-requests", "data": {"task_name": "noop",
                                                             "dependencies": ["<<parent[data][id]>>"]}},
    ])
    assert status == 200, results
    assert results[1]["data"]["dependencies"] == [results[0]["data"]["id"]]


def test_list_time_filter_without_offset_is_utc() -> None:
    """A created_since without an offset is read as UTC."""
    _, key = submitter()
    pk = own_request(key)
    naive = WorkRequest.objects.get(pk=pk).created_at.astimezone(UTC).replace(tzinfo=None)
    page = call(f"/work-requests?created_since={quote(naive.isoformat())}", key=key)[1]
    assert [item["id"] for item in page["items"]] == [pk]
