"""Work rows: a worker process SIGKILLed while it holds a request, with requests submitted all along;
the held request must run again on another worker, and every submitted request must end completed
with a result, once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from functools import partial

from faults.row import Counts, Row
from faults.scenario import Profile, Scenario
from tests.api_client import call
from tests.cluster import new_token
from tests.databases import query
from tests.protocol import unique
from tests.servers import ServerProcess, manage_many, migrated_database_url, server_env, start_server
from tests.services import require_postgres
from tests.worker_processes import LOST_AFTER_S, WorkerProcess, counts, stop_all, until

WORKERS = 3
# Long enough that a worker holds a request most of the time (the kill lands mid-request), short
# enough that three workers outrun the submitter.
TASK_S = 0.15
SUBMIT_EVERY_S = 0.05
SETTLE_TIMEOUT_S = 60.0


class Submitter:
    """Posts sleep requests over the HTTP API, one every SUBMIT_EVERY_S, as a client would: the ids of
    the 201s are what was submitted, anything else a refusal."""

    def __init__(self, server: ServerProcess, key: str) -> None:
        self.server, self.key = server, key
        self.ids: list[int] = []
        self.refused = 0
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        body = {"task_name": "sleep", "task_data": {"duration_s": TASK_S}}
        post = partial(call, self.server, "/work-requests", "POST", self.key, body)
        while not self.stopping.is_set():
            try:
                status, created = await asyncio.to_thread(post)
            except OSError:  # no answer in time: not submitted as far as this client knows
                status, created = 0, None
            if status == 201:
                self.ids.append(created["id"])
            else:
                self.refused += 1
            # Pacing, not waiting for an event: the submission rate of the row.
            await asyncio.sleep(SUBMIT_EVERY_S)


def final_states(database_url: str) -> dict[int, tuple[str, str, int, int | None]]:
    """Each request's status, result, attempts and worker as the database has them."""
    rows = query(database_url, "SELECT id, status, result, attempts, worker_id FROM work_workrequest")
    return {int(str(pk)): (str(status), str(result), int(str(attempts)), None if worker is None else int(str(worker)))
            for pk, status, result, attempts, worker in rows}


def completed_elsewhere(database_url: str, request_id: int, victim_id: int) -> bool:
    state = final_states(database_url).get(request_id)
    return state is not None and state[0] == "completed" and bool(state[1]) and state[3] != victim_id


async def worker_killed(profile: Profile, backend: str) -> Row:
    if backend == "postgres":
        require_postgres()
    database_url = migrated_database_url(profile.workdir, "work", backend=backend)
    names = [unique("w") for _ in range(WORKERS)]
    # The check is on (as in production) but a SIGKILL closes the socket: the server hears of it at once.
    # The server starts while the accounts are made (each a Django start-up, seconds on a loaded machine).
    starting = asyncio.to_thread(start_server, database_url, WORKER_CHECK_INTERVAL_S="0.2",
                                 WORKER_LOST_AFTER_S=str(LOST_AFTER_S))
    making = asyncio.to_thread(manage_many, server_env(database_url), new_token(unique("admin"), "--superuser"),
                               *(("createworker", name) for name in names))
    server, (admin, *keys) = await asyncio.gather(starting, making)
    total = profile.size(60, 400)
    submitter: asyncio.Task[None] | None = None
    try:
        workers = [WorkerProcess(server, key) for key in keys]
        for worker in workers:
            await worker.connected()
        client = Submitter(server, admin)
        submitter = asyncio.create_task(client.run())
        await until(lambda: len(client.ids) >= total // 3, "the first third submitted", SETTLE_TIMEOUT_S)

        # Whichever worker takes a request next is killed: with a fast submitter the scheduler may
        # keep one worker idle, and waiting for a chosen one could wait for ever. A kill that lands as
        # the worker completes holds nothing and proves nothing: the next taker is killed then.
        notes = [f"{WORKERS} workers, sleep {TASK_S} s each"]
        held: list[int] = []
        alive = list(range(WORKERS))
        while not held and len(alive) > 1:
            seen = {n: set(workers[n].ids("started")) for n in alive}

            def newly_taking(seen: dict[int, set[int]] = seen) -> list[int]:
                return [n for n in alive if set(workers[n].ids("started")) - seen[n]]

            await until(lambda: bool(newly_taking()), "a worker to take a request", SETTLE_TIMEOUT_S)
            chosen = newly_taking()[0]
            alive.remove(chosen)
            victim = workers[chosen]
            victim.kill()
            killed_at = time.monotonic()
            victim.pump.join(5)  # everything it printed before dying
            ((found,),) = query(database_url, "SELECT id FROM work_worker WHERE name = %s", (names[chosen],))
            victim_id = int(str(found))
            held = sorted(set(victim.ids("started")) - set(victim.ids("completed")))
            notes.append(f"killed worker {victim_id} holding {held or 'nothing (it completed as it died)'}")
        if not held:
            raise AssertionError("no kill found a worker holding a request: the row proves nothing")
        await until(lambda: all(completed_elsewhere(database_url, pk, victim_id) for pk in held),
                    "the held request to complete on another worker", SETTLE_TIMEOUT_S)
        recovery_s = time.monotonic() - killed_at

        await until(lambda: len(client.ids) >= total, "every request submitted", SETTLE_TIMEOUT_S)
        client.stopping.set()
        await submitter
        submitted = list(client.ids)
        await until(lambda: all(final_states(database_url).get(pk, ("",))[0] == "completed" for pk in submitted),
                    "every submitted request to complete", SETTLE_TIMEOUT_S)
    finally:
        if submitter is not None and not submitter.done():
            submitter.cancel()
        stop_all()
        server.stop()

    states = final_states(database_url)
    done = [pk for pk in submitted if states[pk][0] == "completed" and states[pk][1]]
    # A request is run twice when two runs reported completing it (the killed run never could).
    reported = counts(workers, "completed")
    arrivals = [str(pk) for pk in done] + [str(pk) for pk, n in reported.items() if n > 1 for _ in range(n - 1)]
    attempts = Counter(states[pk][2] for pk in submitted)
    notes.append(f"attempts per request: {dict(sorted(attempts.items()))}")
    for pk in held:
        notes.append(f"held request {pk}: {states[pk][0]}/{states[pk][1]} after {states[pk][2]} attempts")
    return Row("worker killed mid-request", backend, work=Counts.of(map(str, submitted), arrivals),
               recovery_s=recovery_s, refused=client.refused, notes=notes)


SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario("worker killed mid-request", backend, partial(worker_killed, backend=backend))
    for backend in ("sqlite", "postgres")
)
