"""One scenario's outcome as one table row, and the table (pure: no processes, no sockets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass
class Counts:
    """What one kind of durable thing did in a scenario: how many were accepted (acknowledged to
    their sender), how many arrived at the other end (distinct), how many arrived more than once,
    and how many accepted ones never arrived."""

    accepted: int
    arrived: int
    duplicated: int
    lost: int

    @classmethod
    def of(cls, accepted: Iterable[str], arrivals: Iterable[str]) -> Counts:
        """Counts from the ids the sender had acknowledged and the ids in arrival order (with repeats).
        An arrival that was never acknowledged (a send whose ok the fault swallowed) is not a loss
        and not a duplicate: at-least-once allows it."""
        accepted_ids = set(accepted)
        seen = Counter(arrivals)
        return cls(
            accepted=len(accepted_ids),
            arrived=len(seen),
            duplicated=sum(n - 1 for n in seen.values()),
            lost=len(accepted_ids - seen.keys()),
        )

    def cell(self) -> str:
        return f"{self.accepted} / {self.arrived} / {self.duplicated} / {self.lost}"


@dataclass
class Row:
    """One scenario's result. ``messages``: acked / delivered / duplicated / lost under a storing
    policy; ``events``: outbox events emitted / published / duplicated / lost; ``work``: work requests
    submitted / completed / run twice / lost. A kind the scenario does not exercise is None.
    ``recovery_s``: from the fault's end (or the kill) to the first success after it."""

    scenario: str
    backend: str
    messages: Counts | None = None
    events: Counts | None = None
    work: Counts | None = None
    recovery_s: float | None = None
    # Refusals the fault caused (error acks, failed requests): expected, reported, not losses.
    refused: int = 0
    # ERROR lines the server logged that the scenario did not declare (each is a failure).
    unexpected_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def lost(self) -> int:
        return sum(c.lost for c in (self.messages, self.events, self.work) if c is not None)

    @property
    def passed(self) -> bool:
        """Zero loss, nothing unexpected logged, and the scenario exercised something."""
        if self.skipped is not None:
            return True
        exercised = any(c is not None and c.accepted > 0 for c in (self.messages, self.events, self.work))
        return exercised and self.lost == 0 and not self.unexpected_errors


HEADER = ("scenario", "backend", "messages acked/delivered/dup/lost", "events emitted/published/dup/lost",
          "work submitted/completed/dup/lost", "refused", "recovery s", "log", "verdict")


def cells(row: Row) -> tuple[str, ...]:
    if row.skipped is not None:
        return (row.scenario, row.backend, "-", "-", "-", "-", "-", "-", f"skipped: {row.skipped}")
    return (
        row.scenario,
        row.backend,
        row.messages.cell() if row.messages else "-",
        row.events.cell() if row.events else "-",
        row.work.cell() if row.work else "-",
        str(row.refused),
        "-" if row.recovery_s is None else f"{row.recovery_s:.2f}",
        "clean" if not row.unexpected_errors else f"{len(row.unexpected_errors)} ERROR",
        "ok" if row.passed else "FAIL",
    )


def table(rows: Sequence[Row]) -> str:
    """A Markdown table of ``rows``, one line each, then each row's notes."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    for row in rows:
        lines += [f"- {row.scenario} ({row.backend}): {note}" for note in row.notes]
        lines += [f"- {row.scenario} ({row.backend}): unexpected {line}" for line in row.unexpected_errors]
    return "\n".join(lines)
