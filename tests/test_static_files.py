"""Static files under a real server (app/server/static_files.py): collected by the session as `make serve`
does, served by WhiteNoise at the ASGI layer with a content type, a cache header and conditional requests."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.server.static_files import CHUNK_BYTES, send_response
from tests.browser import Browser
from tests.protocol import eventually
from tests.servers import ServerProcess, start_server

# Static files are served without a query (a missing one is Django's 404, from no view).
pytestmark = pytest.mark.database_agnostic

BASE_CSS = "/static/admin/css/base.css"


def admin_source(name: str) -> bytes:
    """The file as Django ships it (what collectstatic copies)."""
    import django.contrib.admin

    return (Path(django.contrib.admin.__file__).parent / "static" / name.removeprefix("/static/")).read_bytes()


def test_admin_stylesheet_is_css_with_cache_header(server: ServerProcess) -> None:
    """GET base.css is 200, text/css, cacheable, nosniff, and the file Django ships."""
    answer = Browser(server.http).request(BASE_CSS)
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("text/css"), answer.headers
    assert "max-age=" in answer.headers["cache-control"], answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.body == admin_source(BASE_CSS)


def test_security_headers_as_django_sends_them(server: ServerProcess) -> None:
    """A static file carries the headers SecurityMiddleware puts on Django's pages, with the same values."""
    browser = Browser(server.http)
    static, page = browser.request(BASE_CSS).headers, browser.request("/admin/login/").headers
    for name in ("x-content-type-options", "referrer-policy", "cross-origin-opener-policy"):
        assert static.get(name) and static.get(name) == page.get(name), (name, static, page)


class FileResponse:
    """What WhiteNoise's get_response returns, for a file of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.status, self.headers = 200, [("Content-Length", str(size))]
        self.file = io.BytesIO(b"x" * size)


async def test_reading_stops_when_the_client_is_gone() -> None:
    """Once the client has disconnected, no more of the file is read; it is closed."""
    response, sent, left = FileResponse(100 * CHUNK_BYTES), [], asyncio.Event()
    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        if (message := next(messages, None)) is not None:
            return message
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 3:
            left.set()  # the client leaves after the second chunk
        await asyncio.sleep(0)

    await asyncio.wait_for(send_response(response, [], receive, send), 10)
    assert len(sent) < 10 and response.file.closed, len(sent)


def test_gzip_variant_sent_when_accepted(server: ServerProcess) -> None:
    """A client accepting gzip gets the collected .gz copy, which unpacks to the file."""
    answer = Browser(server.http).request(BASE_CSS, headers={"Accept-Encoding": "gzip"})
    assert answer.status == 200 and answer.headers.get("content-encoding") == "gzip", answer.headers
    assert gzip.decompress(answer.body) == admin_source(BASE_CSS)


def test_unchanged_file_is_304(server: ServerProcess) -> None:
    """A request with the ETag it got is answered 304 with no body."""
    browser = Browser(server.http)
    etag = browser.request(BASE_CSS).headers["etag"]
    answer = browser.request(BASE_CSS, headers={"If-None-Match": etag})
    assert (answer.status, answer.body) == (304, b"")


def test_large_file_streams_whole(server: ServerProcess) -> None:
    """A file larger than one read chunk arrives whole, with its Content-Length."""
    name = "/static/admin/js/vendor/jquery/jquery.js"
    answer = Browser(server.http).request(name)
    assert answer.status == 200
    assert int(answer.headers["content-length"]) == len(answer.body) == len(admin_source(name)) > 64 * 1024
    assert answer.body == admin_source(name)


@pytest.mark.parametrize("ranges", ["bytes=2-11", "bytes=0-0", "bytes=-0", "bytes=--1", "bytes=5-1", "bytes=0-1,4-5"])
def test_range_is_ignored(server: ServerProcess, ranges: str) -> None:
    """Range headers are ignored (WhiteNoise gets single-byte ranges wrong): the whole file, 200."""
    answer = Browser(server.http).request(BASE_CSS, headers={"Range": ranges, "If-Range": '"x"'})
    assert answer.status == 200, answer
    assert answer.body == admin_source(BASE_CSS)


def test_post_to_static_file_is_405(server: ServerProcess) -> None:
    """Only GET and HEAD are served."""
    answer = Browser(server.http).request(BASE_CSS, "POST", b"x")
    assert answer.status == 405 and answer.headers["allow"] == "GET, HEAD"


def test_missing_static_file_is_django_404(server: ServerProcess) -> None:
    """A path under /static/ that names no file falls through to Django's 404, and so does a traversal."""
    browser = Browser(server.http)
    assert browser.request("/static/admin/css/nothing.css").status == 404
    assert browser.request("/static/../settings/base.py").status == 404
    assert browser.request("/static/admin/css/..%2F..%2F..%2Fsettings%2Fbase.py").status == 404


@pytest.fixture
def uncollected_server(tmp_path: Path, _migrated: None) -> Iterator[ServerProcess]:
    """A server whose STATIC_ROOT is an empty directory (collectstatic never ran)."""
    proc = start_server(os.environ["DATABASE_URL"], SWITCHYARD_STATIC_ROOT=str(tmp_path / "empty"),
                        SWITCHYARD_LOG_LEVEL="WARNING")
    yield proc
    proc.stop()


async def test_uncollected_files_served_from_apps_with_warning(uncollected_server: ServerProcess) -> None:
    """Without collectstatic the admin still gets its styles (from the apps), and the log says what to run."""
    answer = Browser(uncollected_server.http).request(BASE_CSS)
    assert answer.status == 200 and answer.body == admin_source(BASE_CSS)
    await eventually(lambda: any("run `manage.py collectstatic`" in line for line in uncollected_server.output),
                     message="the warning about uncollected static files")
    # Said once, as a log record: no Python warning from WhiteNoise as well.
    assert not [line for line in uncollected_server.output if "No directory at" in line]
