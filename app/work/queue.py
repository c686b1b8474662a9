"""The queue a worker is served from: the bounded query that feeds app/work/scheduling.py, and
``next_request_for``, which picks and assigns (what the worker socket and HTTP get-next call).

Candidates come in pages of PAGE_ROWS in the scheduler's order (effective priority, age, id; the
partial index ``work_pending_queue``), dependencies already checked in SQL, each with only the
``requires`` of its task data and its signature. Once a page gave the worker nothing, the next one
leaves out every signature seen in it (``requirements_signature``: the worker would refuse those
too), so a worker behind ten thousand requests it cannot run, all of one or a few kinds, reaches the
one it can in a few pages rather than never. One get-next reads at most WORK_SCHEDULER_SCAN_ROWS
rows into Python; the database walks the skipped rows in index order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from app.work.models import Session, Status, Worker, WorkRequest, effective_priority
from app.work.scheduling import REQUIREMENTS_KEY, Candidate, WorkerState, pick, requirements_of, signature_of
from app.work.transitions import claim, unsatisfied_dependencies

PAGE_ROWS = 100


def runnable() -> QuerySet[WorkRequest]:
    """Pending requests whose dependencies all succeeded, in the scheduler's order."""
    return (
        WorkRequest.objects.filter(status=Status.PENDING).filter(~unsatisfied_dependencies())
        .alias(effective=effective_priority()).order_by("-effective", "created_at", "id")
    )


def candidates(
    after: Candidate | None = None, limit: int = PAGE_ROWS, skipping: Collection[str] = ()
) -> list[Candidate]:
    """The next ``limit`` runnable requests after ``after`` (keyset: stable while the queue changes),
    leaving out the signatures ``skipping``."""
    rows = runnable()
    if skipping:
        rows = rows.exclude(requirements_signature__in=sorted(skipping))
    if after is not None:
        rows = rows.filter(
            Q(effective__lt=after.priority)
            | Q(effective=after.priority, created_at__gt=after.created_at)
            | Q(effective=after.priority, created_at=after.created_at, id__gt=after.id)
        )
    fields = rows.values_list(
        "id", "priority_base", "priority_adjustment", "created_at", f"task_data__{REQUIREMENTS_KEY}",
        "requirements_signature",
    )
    return [
        Candidate(pk, base + adjustment, created_at, requirements_of({REQUIREMENTS_KEY: requires}), signature=sig)
        for pk, base, adjustment, created_at, requires, sig in fields[:limit]
    ]


def worker_state(worker: Worker) -> WorkerState:
    running = WorkRequest.objects.filter(worker=worker, status=Status.RUNNING).count()
    return WorkerState(worker.metadata(), worker.concurrency, running)


@dataclass(frozen=True, slots=True)
class Search:
    """What one search for a worker found, and the signature of the metadata it matched against
    (``scheduling.signature_of``; None when the worker could not take anything: gone, disabled, no free
    slot): another worker of that signature would find nothing either, at that moment."""

    request: WorkRequest | None
    signature: str | None


def next_request_for(
    worker_id: int, now: datetime | None = None, *, session: Session | None = None
) -> WorkRequest | None:
    """Pick the request ``worker_id`` should run next and assign it (pending -> running) to its
    ``session``; None when nothing runnable matches it, it has no free slot, its token is disabled
    or the session no longer holds it. A request another worker takes first is skipped for the next."""
    return search(worker_id, now, session=session).request


def search(worker_id: int, now: datetime | None = None, *, session: Session | None = None) -> Search:
    """``next_request_for``, with the signature of the metadata it searched with."""
    worker = Worker.objects.select_related("token").filter(pk=worker_id).first()
    if worker is None or not worker.token.enabled:
        return Search(None, None)
    state = worker_state(worker)
    if state.free_slots < 1:
        return Search(None, None)
    signature = signature_of(state.metadata)
    now = now or timezone.now()
    scanned, after, refused = 0, None, set[str]()
    while scanned < settings.WORK_SCHEDULER_SCAN_ROWS:
        page = candidates(after, min(PAGE_ROWS, settings.WORK_SCHEDULER_SCAN_ROWS - scanned), refused)
        if not page:
            return Search(None, signature)
        scanned, after = scanned + len(page), page[-1]
        while (chosen := pick(page, state)) is not None:
            if (given := claim(chosen.id, worker_id, now, session=session)) is not None:
                return Search(given, signature)
            if WorkRequest.objects.filter(pk=chosen.id, status=Status.PENDING).exists():
                # Still pending: the worker could not take it (no free slot, disabled, session over).
                return Search(None, None)
            page = [candidate for candidate in page if candidate.id != chosen.id]
        # What is left of the page matched nothing. A row whose task data was rewritten around the
        # model (a shell's update()) may carry a stale signature: only consistent ones are skipped.
        refused.update(c.signature for c in page if c.signature == signature_of(c.requires))
    return Search(None, signature)
