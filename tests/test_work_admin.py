"""Workers and work requests in the admin (in-process Django test client on the session database):
lists with their state, filters, and the actions abort, retry and disable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from app.work.models import PRIORITY_LIMIT, Result, Status, Worker, WorkRequest
from app.work.workers import mark_connected, set_enabled
from tests.protocol import make_user
from tests.work import completed, pending, reload, running, worker

WORKERS = reverse("admin:work_worker_changelist")
REQUESTS = reverse("admin:work_workrequest_changelist")


def admin_client(user: Any = None) -> Client:
    client = Client()
    client.force_login(user or make_user(is_superuser=True, is_staff=True))
    return client


def act(url: str, action: str, rows: list[Any], client: Client | None = None) -> Any:
    return (client or admin_client()).post(
        url, {"action": action, "_selected_action": [row.pk for row in rows], "index": 0}, follow=True
    )


def test_worker_list_shows_connection_and_current_request() -> None:
    """The worker list says whether a worker is connected and links the request it runs."""
    on = worker()
    mark_connected(on.pk, timezone.now())
    request = running(on=on)
    page = admin_client().get(WORKERS, {"q": on.name}).content.decode()
    link = reverse("admin:work_workrequest_change", args=[request.pk])
    assert '<td class="field-connection">connected</td>' in page
    assert f'<td class="field-current_requests"><a href="{link}">#{request.pk} noop</a></td>' in page


def test_silent_worker_listed_as_lost() -> None:
    """A connected worker silent for WORKER_LOST_AFTER_S shows as lost."""
    on = worker()
    mark_connected(on.pk, timezone.now() - timedelta(seconds=3600))
    page = admin_client().get(WORKERS, {"q": on.name}).content.decode()
    assert '<td class="field-connection">lost</td>' in page


def test_worker_list_filters_by_connection() -> None:
    """The connection filter keeps connected workers only."""
    connected, idle = worker(), worker()
    mark_connected(connected.pk, timezone.now())
    found = admin_client().get(WORKERS, {"connection": "connected"}).context["cl"].result_list
    assert connected in found and idle not in found


def test_disable_action_disables_the_workers_tokens() -> None:
    """"Disable" turns the selected workers' tokens off, and only theirs."""
    chosen, other = worker(), worker()
    response = act(WORKERS, "disable_workers", [chosen])
    assert b"1 worker(s) disabled." in response.content
    assert not Worker.objects.get(pk=chosen.pk).token.enabled
    assert Worker.objects.get(pk=other.pk).token.enabled


def test_enable_action_enables_a_disabled_worker() -> None:
    """"Enable" turns a disabled worker's token back on."""
    chosen = worker()
    set_enabled(chosen, False)
    act(WORKERS, "enable_workers", [chosen])
    assert Worker.objects.get(pk=chosen.pk).token.enabled


def test_worker_form_saves_only_admin_fields() -> None:
    """Saving a worker's form writes concurrency and static metadata, not the worker's own report."""
    on = worker()
    Worker.objects.filter(pk=on.pk).update(dynamic_metadata={"arch": "amd64"})
    url = reverse("admin:work_worker_change", args=[on.pk])
    response = admin_client().post(url, {"concurrency": "4", "static_metadata": '{"pool": "fast"}'})
    assert response.status_code == 302
    on.refresh_from_db()
    assert (on.concurrency, on.static_metadata, on.dynamic_metadata) == (4, {"pool": "fast"}, {"arch": "amd64"})


def test_requests_filter_by_status() -> None:
    """The request list filters by status."""
    waiting, done = pending(), completed()
    found = admin_client().get(REQUESTS, {"status__exact": "pending"}).context["cl"].result_list
    assert waiting in found and done not in found


def test_abort_action_aborts_pending_and_running() -> None:
    """"Abort" aborts the selected pending and running requests and says how many it could not."""
    waiting, busy, done = pending(), running(), completed()
    response = act(REQUESTS, "abort_requests", [waiting, busy, done])
    assert b"2 request(s) aborted; 1 were neither pending nor running." in response.content
    assert (reload(waiting).status, reload(busy).status, reload(done).status) == (
        Status.ABORTED, Status.ABORTED, Status.COMPLETED)


def test_retry_action_supersedes_failed_requests() -> None:
    """"Retry" creates a new pending request for each failed one and names what it could not retry."""
    failed, fine = completed(Result.FAILURE), completed()
    response = act(REQUESTS, "retry_requests", [failed, fine])
    new = WorkRequest.objects.get(supersedes=failed.pk)
    assert new.status == Status.PENDING
    assert f"#{failed.pk} as #{new.pk}".encode() in response.content
    assert f"#{fine.pk}: not failed or aborted, or retried already".encode() in response.content


def test_request_form_saves_only_the_priority_adjustment() -> None:
    """An admin changes a request's priority adjustment, and nothing else the form posted."""
    request = pending(priority_base=1)
    url = reverse("admin:work_workrequest_change", args=[request.pk])
    response = admin_client().post(url, {"priority_adjustment": "7", "status": "completed"})
    assert response.status_code == 302
    request = reload(request)
    assert (request.priority_adjustment, request.priority, request.status) == (7, 8, Status.PENDING)


def test_running_request_cannot_be_deleted() -> None:
    """Only finished requests may be deleted (a pending or running one would be dropped silently)."""
    busy = running()
    response = admin_client().post(reverse("admin:work_workrequest_delete", args=[busy.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert WorkRequest.objects.filter(pk=busy.pk).exists()


def test_actions_need_the_change_permission() -> None:
    """Staff who may only view requests are offered neither abort nor retry."""
    viewer = make_user(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="work", codename="view_workrequest"))
    page = admin_client(viewer).get(REQUESTS)
    assert page.status_code == 200
    assert b"abort_requests" not in page.content and b"retry_requests" not in page.content


def worker_staff(*codenames: str) -> Any:
    """Staff with these permissions ("app_label.codename")."""
    staff = make_user(is_staff=True)
    for name in codenames:
        app_label, codename = name.split(".")
        staff.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return staff


def test_enable_action_needs_the_token_change_permission() -> None:
    """Staff who may change workers but not tokens cannot re-enable a disabled worker's token."""
    revoked = worker()
    set_enabled(revoked, False)
    act(WORKERS, "enable_workers", [revoked], admin_client(worker_staff("work.view_worker", "work.change_worker")))
    assert not Worker.objects.get(pk=revoked.pk).token.enabled


def test_enable_action_with_the_token_change_permission() -> None:
    """Staff who may change workers and tokens re-enable a disabled worker."""
    revoked = worker()
    set_enabled(revoked, False)
    staff = worker_staff("work.view_worker", "work.change_worker", "switchyard_auth.change_token")
    act(WORKERS, "enable_workers", [revoked], admin_client(staff))
    assert Worker.objects.get(pk=revoked.pk).token.enabled


def test_disable_action_needs_the_token_change_permission() -> None:
    """Staff who may change workers but not tokens cannot disable a worker's token."""
    chosen = worker()
    act(WORKERS, "disable_workers", [chosen], admin_client(worker_staff("work.view_worker", "work.change_worker")))
    assert Worker.objects.get(pk=chosen.pk).token.enabled


def test_worker_form_refuses_static_metadata_that_is_not_an_object() -> None:
    """Static metadata must be a JSON object: a list is refused and the worker keeps its metadata."""
    on = worker(pool="fast")
    url = reverse("admin:work_worker_change", args=[on.pk])
    response = admin_client().post(url, {"concurrency": "1", "static_metadata": '["gpu"]'})
    assert response.status_code == 200
    assert "static metadata must be a JSON object" in response.content.decode()
    on.refresh_from_db()
    assert on.static_metadata == {"pool": "fast"}


def test_request_form_refuses_an_unbounded_priority_adjustment() -> None:
    """An adjustment beyond ±PRIORITY_LIMIT is refused by the form and not stored."""
    request = pending()
    url = reverse("admin:work_workrequest_change", args=[request.pk])
    response = admin_client().post(url, {"priority_adjustment": str(PRIORITY_LIMIT + 1)})
    assert response.status_code == 200
    assert reload(request).priority_adjustment == 0
