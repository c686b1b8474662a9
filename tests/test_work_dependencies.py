"""Dependencies and retries: a failed or aborted parent ends its pending dependents (transitively);
a retry supersedes a failed request and runs its subtree again."""

from __future__ import annotations

import pytest

from app.work.models import Result, Status, WorkRequest
from app.work.tasks import InvalidTaskData
from app.work.transitions import abort, assign, complete, retry
from tests.work import aborted, completed, pending, reload, running, worker


def test_failed_parent_fails_its_pending_dependent() -> None:
    """A parent completed with failure completes its pending dependent as failure, naming the parent."""
    parent = running()
    child = pending(dependencies=[parent.pk])
    assert complete(parent.pk, Result.FAILURE)
    child = reload(child)
    assert (child.status, child.result, child.cascaded_from_id) == (Status.COMPLETED, Result.FAILURE, parent.pk)


def test_parent_error_fails_its_dependent() -> None:
    """An error counts as a failure for the dependents."""
    parent = running()
    child = pending(dependencies=[parent.pk])
    complete(parent.pk, Result.ERROR)
    assert reload(child).result == Result.FAILURE


def test_failure_cascades_transitively() -> None:
    """A grandchild fails with its parent, which failed with the root."""
    root = running()
    child = pending(dependencies=[root.pk])
    grandchild = pending(dependencies=[child.pk])
    complete(root.pk, Result.FAILURE)
    grandchild = reload(grandchild)
    assert (grandchild.status, grandchild.cascaded_from_id) == (Status.COMPLETED, child.pk)


def test_failure_reaches_dependents_beyond_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dependents are read in chunks of ids; a failure ends those of every chunk."""
    monkeypatch.setattr("app.work.transitions.DEPENDENTS_CHUNK", 2)
    parent = running()
    children = [pending(dependencies=[parent.pk]) for _ in range(5)]
    complete(parent.pk, Result.FAILURE)
    assert {reload(child).status for child in children} == {Status.COMPLETED}


def test_successful_parent_leaves_its_dependent_pending() -> None:
    """Success ends nothing: the dependent becomes runnable."""
    parent = running()
    child = pending(dependencies=[parent.pk])
    complete(parent.pk, Result.SUCCESS)
    assert reload(child).status == Status.PENDING


def test_aborted_parent_aborts_its_dependent() -> None:
    """Aborting a parent aborts its pending dependents, naming the parent."""
    parent = pending()
    child = pending(dependencies=[parent.pk])
    abort(parent.pk)
    child = reload(child)
    assert (child.status, child.cascaded_from_id) == (Status.ABORTED, parent.pk)


def test_new_request_on_a_failed_dependency_fails_at_once() -> None:
    """A request submitted with a dependency that already failed completes as failure at once."""
    parent = completed(Result.FAILURE)
    child = pending(dependencies=[parent.pk])
    assert (child.status, child.result, child.cascaded_from_id) == (Status.COMPLETED, Result.FAILURE, parent.pk)


def test_new_request_on_an_aborted_dependency_is_aborted() -> None:
    """A request submitted with an aborted dependency is aborted at once."""
    parent = aborted()
    assert pending(dependencies=[parent.pk]).status == Status.ABORTED


def test_retry_supersedes_a_failed_request() -> None:
    """retry: a new pending request with the same task, data and priority, superseding the old one."""
    old = completed(Result.FAILURE, task_data={"result": "failure"}, priority_base=4)
    new = retry(old.pk)
    assert new is not None and new.pk != old.pk
    assert (new.status, new.task_name, new.task_data, new.priority_base) == (
        Status.PENDING, "noop", {"result": "failure"}, 4)
    assert (new.supersedes_id, new.attempts, new.result) == (old.pk, 0, Result.NONE)


def test_retry_leaves_the_old_request_as_it_ended() -> None:
    """The superseded request keeps its status and result."""
    old = completed(Result.ERROR)
    retry(old.pk)
    assert (reload(old).status, reload(old).result) == (Status.COMPLETED, Result.ERROR)


def test_retry_an_aborted_request() -> None:
    """Aborted requests may be retried."""
    assert retry(aborted().pk) is not None


@pytest.mark.parametrize("make", [pending, running, lambda: completed(Result.SUCCESS)])
def test_retry_of_a_request_that_did_not_fail_refused(make: object) -> None:
    """Pending, running and successful requests are not retried."""
    assert retry(make().pk) is None  # type: ignore[operator]


def test_retry_twice_refused() -> None:
    """A request is superseded once."""
    old = completed(Result.FAILURE)
    assert retry(old.pk) is not None
    assert retry(old.pk) is None
    assert WorkRequest.objects.filter(supersedes=old.pk).count() == 1


def test_retry_copies_dependencies() -> None:
    """The new request depends on what the old one depended on."""
    parent = completed()
    old = running(dependencies=[parent.pk])
    complete(old.pk, Result.FAILURE)
    new = retry(old.pk)
    assert new is not None and list(new.dependencies.values_list("pk", flat=True)) == [parent.pk]


def test_retry_moves_dependents_to_the_new_request() -> None:
    """Requests that depended on the old request now depend on the new one."""
    old = running()
    child = pending(dependencies=[old.pk])
    complete(old.pk, Result.FAILURE)
    new = retry(old.pk)
    assert new is not None
    assert list(reload(child).dependencies.values_list("pk", flat=True)) == [new.pk]


def test_retry_runs_the_failed_subtree_again() -> None:
    """Dependents that failed only because of the retried request are retried too, and wait for it."""
    old = running()
    child = pending(dependencies=[old.pk])
    grandchild = pending(dependencies=[child.pk])
    complete(old.pk, Result.FAILURE)
    new = retry(old.pk)
    assert new is not None
    new_child = WorkRequest.objects.get(supersedes=child.pk)
    new_grandchild = WorkRequest.objects.get(supersedes=grandchild.pk)
    assert list(new_child.dependencies.values_list("pk", flat=True)) == [new.pk]
    assert list(new_grandchild.dependencies.values_list("pk", flat=True)) == [new_child.pk]
    assert {new_child.status, new_grandchild.status} == {Status.PENDING}


def test_retried_subtree_runs_once_the_new_parent_succeeds() -> None:
    """After the retried parent succeeds, its retried dependent is assigned."""
    old = running()
    child = pending(dependencies=[old.pk])
    complete(old.pk, Result.FAILURE)
    new = retry(old.pk)
    assert new is not None
    new_child = WorkRequest.objects.get(supersedes=child.pk)
    on = worker(concurrency=2)
    assert not assign(new_child.pk, on.pk)
    assert assign(new.pk, on.pk) and complete(new.pk, Result.SUCCESS)
    assert assign(new_child.pk, on.pk)


def test_retry_leaves_dependents_that_ended_on_their_own() -> None:
    """A dependent aborted by hand before its parent failed is not retried with the parent."""
    parent = running()
    child = pending(dependencies=[parent.pk])
    abort(child.pk)
    complete(parent.pk, Result.FAILURE)
    assert retry(parent.pk) is not None
    assert not WorkRequest.objects.filter(supersedes=child.pk).exists()


def test_retry_refused_when_the_task_data_is_no_longer_valid() -> None:
    """A request whose task data its task now refuses is not retried (nothing is created)."""
    old = completed(Result.FAILURE)
    WorkRequest.objects.filter(pk=old.pk).update(task_data={"unexpected": 1})
    with pytest.raises(InvalidTaskData):
        retry(old.pk)
    assert not WorkRequest.objects.filter(supersedes=old.pk).exists()
