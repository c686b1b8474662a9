"""django-cqrs's ``cqrs_bulk_dump`` and ``cqrs_bulk_load`` commands on the test apps."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError

from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.cqrs_commands import (
    authors,
    read_terminal,
    run,
    terminal,
)
from tests.outbox import clear_outbox
from tests.protocol import unique


@pytest.fixture(autouse=True)
def _clean_outbox(_db_access: None) -> Iterator[None]:
    clear_outbox()
    yield


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
