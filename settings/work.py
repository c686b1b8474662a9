"""Workers and work requests settings (app/work); read after ``settings.base``."""

from __future__ import annotations

from settings.env import env_float, env_int

# A connected worker silent this long (no heartbeat, frame or poll) is lost: what it runs goes back
# to pending for another worker. Several heartbeats long, so a busy network does not cost a run;
# short enough that a dead machine's work starts again within a minute.
WORKER_LOST_AFTER_S = env_float("WORKER_LOST_AFTER_S", 60.0)
# How often each server closes its worker sockets silent for WORKER_LOST_AFTER_S, ends the sessions
# of workers whose server is gone (silent in the database), and offers waiting work to its idle
# workers: what a command or a shell made runnable, or a notice the backplane dropped, waits at
# most this long. 0 turns the check off (tests of push alone).
WORKER_CHECK_INTERVAL_S = env_float("WORKER_CHECK_INTERVAL_S", 5.0)
# Starts a request gets: one whose worker is lost this many times is completed as error instead of
# going back to pending, so a request that kills its workers (memory, a crash) cannot take down the
# fleet one worker after another.
WORK_REQUEST_MAX_ATTEMPTS = env_int("WORK_REQUEST_MAX_ATTEMPTS", 3)
# Pending requests one principal may have at once (counted in the database when one is created or
# retried): a runaway client fills its own queue, not the database.
WORK_REQUESTS_PER_PRINCIPAL = env_int("WORK_REQUESTS_PER_PRINCIPAL", 10_000)
# Largest task data, and largest output data a worker reports, encoded as JSON: both are stored per
# request, and task data is sent to the worker in one frame.
WORK_REQUEST_DATA_MAX_BYTES = env_int("WORK_REQUEST_DATA_MAX_BYTES", 256 * 1024)
# Largest worker metadata (what a worker reports, what an admin sets), encoded as JSON: it is read
# at every get-next of that worker, and a worker's token must not be able to fill the database.
WORKER_METADATA_MAX_BYTES = env_int("WORKER_METADATA_MAX_BYTES", 64 * 1024)
# Most dependencies one request may name: every assignment checks them all in its UPDATE.
WORK_REQUEST_DEPENDENCIES_MAX = env_int("WORK_REQUEST_DEPENDENCIES_MAX", 100)
# How deep into the queue (runnable requests by priority, then age) one worker's get-next looks
# for a request it can run: a bounded read per get-next, however long the queue.
WORK_SCHEDULER_SCAN_ROWS = env_int("WORK_SCHEDULER_SCAN_ROWS", 1000)
# How often a server with ``/ws/work-requests/`` watchers reads the outbox for work request changes
# when nothing woke it: commits in this process and, on PostgreSQL, in any process (NOTIFY) wake it
# at once, so this bounds the delay of a change made elsewhere on SQLite, or of a lost notification.
WORK_FEED_POLL_INTERVAL_S = env_float("WORK_FEED_POLL_INTERVAL_S", 0.25)
# Most requests one POST /api/v1/work-requests/bulk may create: all are created in one transaction
# (each validated, counted against the quota and announced), which holds SQLite's write lock throughout.
WORK_REQUESTS_BULK_MAX = env_int("WORK_REQUESTS_BULK_MAX", 100)

if WORKER_LOST_AFTER_S <= 0:
    raise ValueError("WORKER_LOST_AFTER_S must be positive")
if WORK_FEED_POLL_INTERVAL_S <= 0:
    raise ValueError("WORK_FEED_POLL_INTERVAL_S must be positive")
if WORKER_CHECK_INTERVAL_S < 0:
    raise ValueError("WORKER_CHECK_INTERVAL_S must be 0 (off) or positive")
for _name, _value in (
    ("WORK_REQUEST_MAX_ATTEMPTS", WORK_REQUEST_MAX_ATTEMPTS),
    ("WORK_REQUESTS_PER_PRINCIPAL", WORK_REQUESTS_PER_PRINCIPAL),
    ("WORK_REQUEST_DATA_MAX_BYTES", WORK_REQUEST_DATA_MAX_BYTES),
    ("WORKER_METADATA_MAX_BYTES", WORKER_METADATA_MAX_BYTES),
    ("WORK_SCHEDULER_SCAN_ROWS", WORK_SCHEDULER_SCAN_ROWS),
    ("WORK_REQUESTS_BULK_MAX", WORK_REQUESTS_BULK_MAX),
):
    if _value < 1:
        raise ValueError(f"{_name} must be at least 1")
if WORK_REQUEST_DEPENDENCIES_MAX < 0:
    raise ValueError("WORK_REQUEST_DEPENDENCIES_MAX must be at least 0")
