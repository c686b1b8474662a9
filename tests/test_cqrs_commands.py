"""django-cqrs's management commands on the test apps: cqrs_sync, bulk dump/load, the streaming diffs
(and the deleted-rows diffs), and the admin sync action on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from app.cqrs import apply as cqrs_apply
from app.cqrs.events import CONTENT_TYPE
from app.cqrs.payload import TransportPayload
from app.cqrs.sync import SyncReport, sync_rows
from app.outbox.models import OutboxEvent
from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.browser import Browser
from tests.outbox import clear_outbox
from tests.protocol import make_user, set_password, unique
from tests.servers import ServerProcess
from tests.services import require_rabbitmq

ROOT = Path(__file__).resolve().parent.parent
AMQP = "amqp://guest:guest@127.0.0.1:5672/"  # configured, never connected to: nothing is relayed here


@pytest.fixture(autouse=True)
def _clean_outbox(_db_access: None) -> Iterator[None]:
    clear_outbox()
    yield


def authors(count: int) -> list[master.Author]:
    return [master.Author.objects.create(name=unique("author")) for _ in range(count)]


def ids_filter(rows: list[Any]) -> str:
    return json.dumps({"id__in": [row.pk for row in rows]})


def run(name: str, *args: str, stdin: str | None = None, stdout: Any = None, stderr: Any = None) -> tuple[str, str]:
    """Run a command in-process (stdin from ``stdin``); its stdout and stderr."""
    out, err = stdout or io.StringIO(), stderr or io.StringIO()
    swap = contextlib.nullcontext() if stdin is None else _stdin(stdin)
    with swap:
        call_command(name, *args, stdout=out, stderr=err)
    return (out.getvalue() if isinstance(out, io.StringIO) else "",
            err.getvalue() if isinstance(err, io.StringIO) else "")


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def sync_events() -> list[tuple[OutboxEvent, dict[str, Any]]]:
    rows = OutboxEvent.objects.filter(datacontenttype=CONTENT_TYPE, type__endswith=".sync").order_by("id")
    return [(row, orjson.loads(row.data)) for row in rows]


def synced_pks() -> list[Any]:
    return sorted(payload["instance_pk"] for _, payload in sync_events())


def apply_outbox() -> None:
    """Apply the emitted payloads to the replica models directly, as a consumer would (no broker)."""
    for _, payload in sync_events():
        cqrs_apply.apply(TransportPayload.model_validate(payload))


def terminal() -> tuple[io.TextIOWrapper, int]:
    """A writer on a pseudo-terminal and the fd its output is read from."""
    import pty

    reader, writer = pty.openpty()
    return io.TextIOWrapper(os.fdopen(writer, "wb", buffering=0), encoding="utf-8", write_through=True), reader


def read_terminal(fd: int) -> str:
    import select

    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


# --- cqrs_sync ---------------------------------------------------------------------------------------


def test_sync_by_filter_emits_a_sync_per_row() -> None:
    """cqrs_sync -cid -f emits a SYNC outbox event for each matching row only, and says so."""
    rows, other = authors(3), authors(1)[0]
    out, _ = run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows))
    assert out == "Done!\n3 instance(s) synced.\n3 instance(s) processed.\n"
    events = sync_events()
    assert sorted(p["instance_pk"] for _, p in events) == sorted(r.pk for r in rows) and other.pk not in synced_pks()
    for row, payload in events:
        assert row.type == "cqrs.test_author.sync" and row.destination == ""
        assert payload["signal_type"] == "SYNC" and payload["instance_data"]["cqrs_revision"] == 0


def test_sync_long_options_and_a_field_filter() -> None:
    """The long option names work, and --filter takes any field lookup."""
    marker = unique("same")
    rows = [master.Author.objects.create(name=marker) for _ in range(2)]
    out, _ = run("cqrs_sync", "--cqrs-id", "test_author", "--filter", json.dumps({"name": marker}), "--batch", "1")
    assert "2 instance(s) synced." in out and synced_pks() == sorted(r.pk for r in rows)


def test_sync_without_filter_syncs_nothing() -> None:
    """As django-cqrs: no --filter matches no rows (-f '{}' is every row)."""
    authors(1)
    out, _ = run("cqrs_sync", "-cid", "test_author")
    assert out == "No objects found for filter!\n" and sync_events() == []


def test_sync_queue_routes_to_the_replica_queue() -> None:
    """--queue sends the SYNCs to cqrs.<queue>.<cqrs_id> alone on RabbitMQ."""
    rows = authors(2)
    with override_settings(OUTBOX_TARGET="rabbitmq", AMQP_URL=AMQP):
        run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows), "-q", "billing")
    assert [row.destination for row, _ in sync_events()] == ["cqrs.billing.test_author"] * 2


def test_sync_failures_are_reported_per_row() -> None:
    """A row whose SYNC cannot be emitted is reported by pk; the others are still counted."""
    rows = authors(2)
    with override_settings(OUTBOX_TARGET="rabbitmq", AMQP_URL=None):
        out, _ = run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows))
    assert out.splitlines() == [
        *[f"Sync record failed for pk={row.pk}: TargetNotConfigured: outbox target 'rabbitmq' is not configured here"
          for row in rows],
        "Done!", "0 instance(s) synced.", "2 instance(s) processed."]
    assert sync_events() == []


def test_sync_rows_goes_in_batches() -> None:
    """sync_rows handles batch_size rows at a time, in primary key order, until all are synced."""
    rows = authors(5)
    seen: list[int] = []

    def batch_done(report: SyncReport) -> None:
        seen.append(report.processed)

    report = sync_rows(master.Author.objects.filter(pk__in=[r.pk for r in rows]), batch_size=2, on_batch=batch_done)
    assert (seen, report.synced, report.failures) == ([2, 4, 5], 5, [])
    assert [p["instance_pk"] for _, p in sync_events()] == [r.pk for r in rows]


def test_sync_of_a_serializer_model() -> None:
    """A CQRS_SERIALIZER model is synced with its serializer's data (which upper-cases the label)."""
    shelf = master.Shelf.objects.create(label=unique("shelf"))
    run("cqrs_sync", "-cid", "test_shelf", "-f", ids_filter([shelf]))
    [(_, payload)] = sync_events()
    assert payload["cqrs_id"] == "test_shelf" and payload["instance_data"]["label"] == shelf.label.upper()


@pytest.mark.parametrize(("args", "message"), [
    (("-cid", "nope", "-f", "{}"), "Wrong CQRS ID: nope!"),
    (("-cid", "test_author", "-f", "{not json"), "Bad filter kwargs!"),
    (("-cid", "test_author", "-f", "[1, 2]"), "Bad filter kwargs!"),
    (("-cid", "test_author", "-f", '{"colour": 1}'), "Bad filter kwargs! Cannot resolve keyword 'colour'"),
    (("-cid", "test_author", "-f", '{"id": "abc"}'), "Bad filter kwargs! Field 'id' expected a number"),
    (("-cid", "test_author", "-f", "{}", "-b", "0"), "Batch size must be positive, not 0!"),
    (("-f", "{}",), "the following arguments are required: --cqrs-id/-cid"),
])
def test_sync_bad_options_are_refused(args: tuple[str, ...], message: str) -> None:
    """Bad options give a CommandError saying what is wrong, and emit nothing."""
    with pytest.raises(CommandError, match=message.replace("[", r"\[").replace("(", r"\(")):
        run("cqrs_sync", *args)
    assert sync_events() == []


def test_sync_progress_on_a_terminal_only() -> None:
    """-p draws the progress line on a terminal; in a pipe the output is the same as without -p."""
    rows = authors(3)
    writer, reader = terminal()
    try:
        run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows), "-b", "2", "-p", stdout=writer)
        shown = read_terminal(reader)
    finally:
        writer.close()
        os.close(reader)
    assert "Processing 3 records with batch size 2" in shown and "3 of 3 processed - 100% with rate" in shown
    assert "Done!" in shown
    piped, _ = run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows), "-b", "2", "-p")
    assert piped == "Done!\n3 instance(s) synced.\n3 instance(s) processed.\n"


# --- cqrs_bulk_dump / cqrs_bulk_load -------------------------------------------------------------------


def test_dump_is_cqrs_id_then_a_json_object_per_row(tmp_path: Path) -> None:
    """The dump file: the CQRS_ID, then each row's instance_data as one JSON line, no final newline."""
    rows = authors(2)
    target = tmp_path / "authors.dump"
    _, err = run("cqrs_bulk_dump", "-c", "test_author", "-o", str(target))
    text = target.read_text()
    lines = text.split("\n")
    assert lines[0] == "test_author" and not text.endswith("\n")
    dumped = {row["id"]: row for row in map(json.loads, lines[1:])}
    for row in rows:
        row.refresh_from_db()
        assert dumped[row.pk] == row.to_cqrs_dict()
    total = master.Author.objects.count()
    assert err == f"Done!\n{total} instance(s) saved.\n{total} instance(s) processed.\n"


def test_dump_to_stdout_is_the_data_alone() -> None:
    """-o - writes the dump to stdout; the summary goes to stderr."""
    authors(1)
    out, err = run("cqrs_bulk_dump", "-c", "test_author", "-o", "-")
    assert out.split("\n")[0] == "test_author" and len(out.split("\n")) == master.Author.objects.count() + 1
    assert err.startswith("Done!")


def test_dump_default_file_and_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without -o the dump is <cqrs_id>.dump; an existing file is kept unless -f is given."""
    monkeypatch.chdir(tmp_path)
    run("cqrs_bulk_dump", "-c", "test_book")
    assert (tmp_path / "test_book.dump").read_text().startswith("test_book")
    with pytest.raises(CommandError, match="File test_book.dump exists!"):
        run("cqrs_bulk_dump", "-c", "test_book")
    (tmp_path / "test_book.dump").write_text("old")
    run("cqrs_bulk_dump", "--cqrs-id", "test_book", "--force", "--batch", "3")
    assert (tmp_path / "test_book.dump").read_text().startswith("test_book")


def test_dump_then_load_reproduces_the_rows_on_the_replica(tmp_path: Path) -> None:
    """bulk dump from the master and bulk load into the replica app give the same rows and revisions."""
    rows = authors(3)
    rows[0].name = "renamed"
    rows[0].save()
    replica.Author.objects.filter(pk__in=[r.pk for r in rows]).delete()
    target = tmp_path / "a.dump"
    run("cqrs_bulk_dump", "-c", "test_author", "-o", str(target), "-b", "2")
    _, err = run("cqrs_bulk_load", "-i", str(target), "-b", "2")
    assert err == f"Done!\n{master.Author.objects.count()} instance(s) loaded.\n"
    for row in rows:
        row.refresh_from_db()
        copy = replica.Author.objects.get(pk=row.pk)
        assert (copy.name, copy.cqrs_revision, copy.cqrs_updated) == (row.name, row.cqrs_revision, row.cqrs_updated)


def test_load_from_stdin_through_the_mapping() -> None:
    """-i - reads the dump from stdin; the replica's CQRS_MAPPING applies (title -> name)."""
    book = master.Book.objects.create(title=unique("title"), author=authors(1)[0])
    replica.Book.objects.filter(pk=book.pk).delete()
    dumped, _ = run("cqrs_bulk_dump", "-c", "test_book", "-o", "-")
    run("cqrs_bulk_load", "-i", "-", stdin=dumped)
    assert replica.Book.objects.get(pk=book.pk).name == book.title


def test_load_reports_bad_lines_and_loads_the_rest(tmp_path: Path) -> None:
    """Lines that are not JSON or cannot be saved are reported by number; good lines load."""
    pk = 10**9 + os.getpid()
    replica.Author.objects.filter(pk=pk).delete()
    good = {"id": pk, "name": "good", "cqrs_revision": 4, "cqrs_updated": "2025-01-02T03:04:05+00:00"}
    target = tmp_path / "bad.dump"
    target.write_text("\n".join(["test_author", "{oops", json.dumps({"id": pk + 1}), json.dumps(good)]))
    _, err = run("cqrs_bulk_load", "--input", str(target))
    assert err == "Dump file can't be parsed: line 2!\nInstance can't be saved: line 3!\nDone!\n1 instance(s) loaded.\n"
    assert replica.Author.objects.get(pk=pk).cqrs_revision == 4


def test_load_clear_deletes_existing_rows_first(tmp_path: Path) -> None:
    """--clear true empties the replica table before loading."""
    stale = replica.Author.objects.create(id=10**9 + 7, name="stale", cqrs_revision=1,
                                          cqrs_updated="2025-01-02T03:04:05+00:00")
    target = tmp_path / "a.dump"
    run("cqrs_bulk_dump", "-c", "test_author", "-o", str(target))
    run("cqrs_bulk_load", "-i", str(target), "-c", "false")
    assert replica.Author.objects.filter(pk=stale.pk).exists()
    run("cqrs_bulk_load", "-i", str(target), "--clear", "true")
    assert not replica.Author.objects.filter(pk=stale.pk).exists()
    assert replica.Author.objects.count() == master.Author.objects.count()


@pytest.mark.parametrize(("content", "args", "message"), [
    (None, (), "File {path} doesn't exist!"),
    ("", (), "File {path} is empty!"),
    ("nope\n{}", (), "Wrong CQRS ID: nope!"),
    ("test_author", ("-c", "maybe"), "argument --clear/-c: invalid boolean value: 'maybe'"),
    ("test_author", ("-b", "-1"), "Batch size must be positive, not -1!"),
])
def test_load_bad_input_is_refused(tmp_path: Path, content: str | None, args: tuple[str, ...], message: str) -> None:
    """A missing, empty or foreign dump, or a bad option, is a CommandError."""
    path = tmp_path / "in.dump"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError) as caught:
        run("cqrs_bulk_load", "-i", str(path), *args)
    assert message.format(path=path) in str(caught.value)


def test_dump_bad_options_are_refused() -> None:
    """An unknown CQRS_ID (a replica's is not a master's) is refused."""
    with pytest.raises(CommandError, match="Wrong CQRS ID: test_person!"):
        run("cqrs_bulk_dump", "-c", "test_person", "-o", "-")


def test_dump_progress_on_a_terminal_leaves_the_data_clean() -> None:
    """-p draws progress on stderr when it is a terminal; stdout still holds the dump alone."""
    authors(1)
    writer, reader = terminal()
    try:
        out, _ = run("cqrs_bulk_dump", "-c", "test_author", "-o", "-", "-p", stderr=writer)
        shown = read_terminal(reader)
    finally:
        writer.close()
        os.close(reader)
    assert "processed - 100% with rate" in shown and "Done!" in shown
    assert all(line == "test_author" or json.loads(line) for line in out.split("\n"))
    quiet, err = run("cqrs_bulk_dump", "-c", "test_author", "-o", "-", "-p")
    assert "processed -" not in err and quiet.split("\n")[0] == "test_author"


# --- diffs ------------------------------------------------------------------------------------------


def diverged() -> tuple[list[master.Author], str]:
    """Master rows: one in step on the replica, one missing there, one at another revision."""
    same, missing, behind = authors(3)
    behind.name = "newer"
    behind.save()
    for row, revision in ((same, 0), (behind, 0)):
        row.refresh_from_db()
        data = {**row.to_cqrs_dict(), "cqrs_revision": revision, "name": "older" if row is behind else row.name}
        cqrs_apply.apply(TransportPayload.model_validate({
            "signal_type": "SYNC", "cqrs_id": "test_author", "instance_pk": row.pk, "instance_data": data}))
    replica.Author.objects.filter(pk=missing.pk).delete()
    clear_outbox()
    return [same, missing, behind], ids_filter([same, missing, behind])


def test_diff_master_prints_header_and_revisions() -> None:
    """cqrs_diff_master: '<cqrs_id>,<now>' then [[pk, revision], ...] per batch."""
    rows, where = diverged()
    out, _ = run("cqrs_diff_master", "-cid", "test_author", "-f", where, "-b", "2")
    header, *packages = out.splitlines()
    assert header.startswith("test_author,20")
    assert [json.loads(p) for p in packages] == [[[rows[0].pk, 0], [rows[1].pk, 0]], [[rows[2].pk, 1]]]


def test_diff_finds_and_sync_repairs_divergence() -> None:
    """diff_master | diff_replica names the missing and outdated rows; diff_sync's SYNCs repair them."""
    rows, where = diverged()
    master_out, _ = run("cqrs_diff_master", "-cid", "test_author", "-f", where)
    replica_out, err = run("cqrs_diff_replica", stdin=master_out)
    header, *lines = replica_out.splitlines()
    assert header == master_out.splitlines()[0] + ",None"
    assert sorted(pk for line in lines for pk in json.loads(line)) == sorted([rows[1].pk, rows[2].pk])
    assert err.startswith("PK to resync: ")
    sync_out, _ = run("cqrs_diff_sync", stdin=replica_out)
    assert "2 instance(s) synced." in sync_out and synced_pks() == sorted([rows[1].pk, rows[2].pk])
    apply_outbox()
    again, _ = run("cqrs_diff_replica", stdin=run("cqrs_diff_master", "-cid", "test_author", "-f", where)[0])
    assert len(again.splitlines()) == 1
    assert replica.Author.objects.get(pk=rows[2].pk).name == "newer"


def test_diff_sync_routes_to_the_replicas_queue() -> None:
    """diff_replica names its CQRS_QUEUE in the header; diff_sync sends the SYNCs to that queue alone."""
    _, where = diverged()
    master_out, _ = run("cqrs_diff_master", "-cid", "test_author", "-f", where)
    with override_settings(CQRS_QUEUE="reports"):
        replica_out, _ = run("cqrs_diff_replica", stdin=master_out)
    assert replica_out.splitlines()[0].endswith(",reports")
    with override_settings(OUTBOX_TARGET="rabbitmq", AMQP_URL=AMQP):
        run("cqrs_diff_sync", "-b", "1", stdin=replica_out)
    assert [row.destination for row, _ in sync_events()] == ["cqrs.reports.test_author"] * 2


def test_deleted_diff_removes_rows_the_master_lost() -> None:
    """deleted_diff_replica | deleted_diff_master | deleted_sync_replica deletes the replica's extra row."""
    kept, gone = authors(2)
    for row in (kept, gone):
        cqrs_apply.apply(TransportPayload.model_validate({
            "signal_type": "SYNC", "cqrs_id": "test_author", "instance_pk": row.pk,
            "instance_data": row.to_cqrs_dict()}))
    where, gone_pk = ids_filter([kept, gone]), gone.pk
    gone.delete()  # its DELETE is never applied: the replica keeps the row
    replica_out, _ = run("cqrs_deleted_diff_replica", "-cid", "test_author", "-f", where)
    master_out, err = run("cqrs_deleted_diff_master", stdin=replica_out)
    assert master_out.splitlines()[1:] == [json.dumps([gone_pk])] and err == f"PK to delete: [{gone_pk}]\n"
    run("cqrs_deleted_sync_replica", stdin=master_out)
    assert list(replica.Author.objects.filter(pk__in=[kept.pk, gone_pk]).values_list("pk", flat=True)) == [kept.pk]


@pytest.mark.parametrize(("command", "stdin", "message"), [
    ("cqrs_diff_replica", "nope,2025-01-01\n[]\n", "Wrong CQRS ID: nope!"),
    ("cqrs_diff_replica", "test_event,2025-01-01\n", "CQRS ID test_event has no rows here"),
    ("cqrs_diff_replica", "test_author,2025-01-01\n{oops\n", "Bad diff line: '{oops'!"),
    ("cqrs_diff_sync", "test_person,now,None\n[1]\n", "Wrong CQRS ID: test_person!"),
    ("cqrs_diff_sync", "test_author,now,None\n{}\n", "Bad diff line: '{}'!"),
    ("cqrs_deleted_diff_master", "nope,now\n", "Wrong CQRS ID: nope!"),
    ("cqrs_deleted_sync_replica", "nope,now\n", "Wrong CQRS ID: nope!"),
])
def test_diff_bad_streams_are_refused(command: str, stdin: str, message: str) -> None:
    """A stream for an unknown model, or a line that is not the protocol's, is a CommandError."""
    with pytest.raises(CommandError) as caught:
        run(command, stdin=stdin)
    assert message in str(caught.value)


def test_diff_master_bad_options_are_refused() -> None:
    """diff_master refuses an unknown CQRS_ID and a bad filter; an empty match is said on stderr."""
    with pytest.raises(CommandError, match="Wrong CQRS ID: nope!"):
        run("cqrs_diff_master", "-cid", "nope")
    with pytest.raises(CommandError, match="Bad filter kwargs!"):
        run("cqrs_diff_master", "-cid", "test_author", "-f", "3")
    out, err = run("cqrs_diff_master", "-cid", "test_author", "-f", '{"id": -1}')
    assert (out, err) == ("", "No objects found for filter!\n")


def test_diff_pipeline_of_processes_repairs_divergence() -> None:
    """The shell pipeline diff_master | diff_replica | diff_sync emits the SYNCs for the diverged rows."""
    rows, where = diverged()
    manage = f"{sys.executable} {ROOT / 'manage.py'}"
    pipeline = (f"{manage} cqrs_diff_master -cid test_author -f '{where}' | {manage} cqrs_diff_replica"
                f" | {manage} cqrs_diff_sync")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Done!\n2 instance(s) synced.\n2 instance(s) processed.\n"
    assert synced_pks() == sorted([rows[1].pk, rows[2].pk])


# --- admin action --------------------------------------------------------------------------------------


def test_admin_action_syncs_the_selected_rows(server: ServerProcess) -> None:
    """The admin's "Synchronize selected authors via CQRS" action emits a SYNC per selected row."""
    rows, other = authors(2), authors(1)[0]
    user = make_user(is_staff=True, is_superuser=True)
    browser = Browser(server.http)
    assert browser.admin_login(user.username, set_password(user)).status == 302
    page = browser.request("/admin/cqrs_master/author/")
    assert page.status == 200 and b"Synchronize selected authors via CQRS" in page.body
    form = [("action", "sync_items"), ("index", "0"), ("select_across", "0"),
            *[("_selected_action", str(row.pk)) for row in rows],
            ("csrfmiddlewaretoken", browser.cookie("csrftoken") or "")]
    answer = browser.request("/admin/cqrs_master/author/", "POST", urllib.parse.urlencode(form).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded",
                              "Referer": browser.base + "/admin/cqrs_master/author/"})
    assert answer.status == 302
    assert synced_pks() == sorted(r.pk for r in rows) and other.pk not in synced_pks()
    assert b"2 successfully synced. 0 failed: []" in browser.request("/admin/cqrs_master/author/").body


# --- cqrs_dead_letters (RabbitMQ) ------------------------------------------------------------------------


DEAD = {"signal_type": "SAVE", "cqrs_id": "test_author", "instance_pk": 1, "previous_data": None,
        "instance_data": {"id": 1, "name": "dead", "cqrs_revision": 3, "cqrs_updated": "2025-01-02T03:04:05+00:00"},
        "correlation_id": None, "retries": 5, "expires": "2025-01-03T03:04:05+00:00", "meta": None}


@dataclass
class DeadLetters:
    channel: Any
    queue: str

    async def count(self, name: str) -> int:
        declared = await self.channel.declare_queue(name, durable=True, passive=True)
        return int(declared.declaration_result.message_count or 0)

    async def take(self, name: str) -> list[Any]:
        queue = await self.channel.declare_queue(name, durable=True, passive=True)
        got = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
        return got


@pytest.fixture
async def dead_letters() -> AsyncIterator[DeadLetters]:
    """A replica queue layout on RabbitMQ whose dead letter queue holds a payload and a non-payload."""
    import aio_pika

    url = require_rabbitmq()
    exchange, queue = unique("test.cqrs"), unique("replica")
    connection = await aio_pika.connect(url, timeout=10)
    channel = await connection.channel()
    await channel.declare_exchange(exchange, "topic", durable=True)
    await channel.declare_queue(queue, durable=True)
    await channel.declare_queue(f"dead_letter_{queue}", durable=True)
    for body in (json.dumps(DEAD).encode(), b"not json"):
        await channel.default_exchange.publish(aio_pika.Message(body), f"dead_letter_{queue}")
    try:
        with override_settings(AMQP_URL=url, CQRS_EXCHANGE=exchange, CQRS_QUEUE=queue):
            yield DeadLetters(channel, queue)
    finally:
        for name in (queue, f"dead_letter_{queue}"):
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)
        await connection.close()


async def dead_letters_command(action: str) -> str:
    out, _ = await asyncio.wait_for(asyncio.to_thread(run, "cqrs_dead_letters", action), 30)
    return out


async def test_dead_letters_dump_prints_and_keeps_them(dead_letters: DeadLetters) -> None:
    """dump prints each dead letter's body and leaves it in dead_letter_<queue>."""
    out = await dead_letters_command("dump")
    assert out.splitlines() == [json.dumps(DEAD), "not json"]
    assert await dead_letters.count(f"dead_letter_{dead_letters.queue}") == 2


async def test_dead_letters_retry_requeues_payloads(dead_letters: DeadLetters) -> None:
    """retry republishes a payload to cqrs.<queue>.<cqrs_id> with retries 0 and a new expiry."""
    out = await dead_letters_command("retry")
    lines = out.splitlines()
    assert lines[:2] == ["Total dead letters: 2", "Retrying: 1/2"] and lines[3] == "Retrying: 2/2"
    [message] = await dead_letters.take(dead_letters.queue)
    body = json.loads(message.body)
    assert message.routing_key == f"cqrs.{dead_letters.queue}.test_author" and json.loads(lines[2]) == body
    assert body["retries"] == 0 and body["expires"] > DEAD["expires"]
    assert {**body, "retries": 5, "expires": DEAD["expires"]} == DEAD
    assert [m.body for m in await dead_letters.take(f"dead_letter_{dead_letters.queue}")] == [b"not json"]


async def test_dead_letters_purge_empties_the_queue(dead_letters: DeadLetters) -> None:
    """purge removes every dead letter."""
    assert await dead_letters_command("purge") == "Total dead letters: 2\nPurged\n"
    assert await dead_letters.count(f"dead_letter_{dead_letters.queue}") == 0


def test_dead_letters_need_rabbitmq() -> None:
    """Without AMQP_URL and CQRS_QUEUE the command refuses; without an action argparse does."""
    with override_settings(AMQP_URL=None, CQRS_QUEUE=None), pytest.raises(CommandError, match="need AMQP_URL"):
        run("cqrs_dead_letters", "purge")
    with pytest.raises(CommandError, match="required: command"):
        run("cqrs_dead_letters")
