"""The status page at ``/`` in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
one badge per visible topic, updated live over /ws/status/ while the real backend module comes and goes."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.chromium import PAGE_TIMEOUT_MS, open_page
from tests.dasf_client import Modules, ws_args
from tests.protocol import make_topic, unique
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.browser

RELAYS = {"PING_INTERVAL_S": "1", "PONG_GRACE_S": "0.5", "AVAILABILITY_WINDOW_S": "3", "STATUS_REFRESH_S": "0.2"}
# Online: a ping round after the module connected; offline: the next ping plus the grace. With slack.
ONLINE_TIMEOUT_MS = 15_000
OFFLINE_TIMEOUT_MS = 10_000
# A stopped server is retried with back-off (1, 2, 4, 8 s ... with jitter): room for a few rounds.
RECOVER_TIMEOUT_MS = 40_000


@pytest.fixture(scope="module")
def page_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server on the session database with the ping relay and short availability intervals."""
    proc = start_server(os.environ["DATABASE_URL"], **RELAYS)
    yield proc
    proc.stop()


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """Headless Chromium with a fresh anonymous page (one browser per test); page errors fail the test."""
    async with open_page() as tab:
        yield tab


def badge(page: Any, slug: str) -> Any:
    return page.locator(f'tr[data-topic="{slug}"] .badge')


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


async def test_live_updates_indicator_opens(page: Any, page_server: ServerProcess) -> None:
    """The "live updates" indicator (#connection) reaches data-state "open"."""
    from playwright.async_api import expect

    await page.goto(f"{page_server.http}/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=PAGE_TIMEOUT_MS)
    await expect(page.locator("#connection")).to_have_text("live updates: on")


async def test_page_lists_only_visible_topics(page: Any, page_server: ServerProcess) -> None:
    """An anonymous visitor sees a public topic's row but not a private topic without anonymous rights."""
    from playwright.async_api import expect

    public = make_topic()
    private = make_topic(public=False, anonymous=False)
    await page.goto(f"{page_server.http}/")
    await expect(page.locator(f'tr[data-topic="{public}"]')).to_have_count(1)
    await expect(badge(page, public)).to_have_attribute("data-status", "unknown")
    await expect(page.locator(f'tr[data-topic="{private}"]')).to_have_count(0)
    assert private not in await page.content()


async def test_badge_follows_module(page: Any, page_server: ServerProcess, modules: Modules) -> None:
    """A topic's badge turns online once the backend module answers, and offline after it is SIGKILLed."""
    from playwright.async_api import expect

    slug = make_topic()
    await page.goto(f"{page_server.http}/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open", timeout=PAGE_TIMEOUT_MS)
    await expect(badge(page, slug)).to_have_attribute("data-status", "unknown")
    proc = modules.start(slug, ws_args(page_server))
    try:
        await expect(badge(page, slug)).to_have_attribute("data-status", "online", timeout=ONLINE_TIMEOUT_MS)
    except AssertionError as error:
        raise AssertionError(f"{error}\nmodule output:\n{modules.output()}") from None
    await expect(badge(page, slug)).to_have_text("online")
    await expect(page.locator(f'tr[data-topic="{slug}"] .api')).to_have_text("hello_world, add")
    sigkill(proc)
    await expect(badge(page, slug)).to_have_attribute("data-status", "offline", timeout=OFFLINE_TIMEOUT_MS)
    await expect(badge(page, slug)).to_have_class("badge offline")



def set_topic(slug: str, **fields: Any) -> None:
    """Change a topic's row behind the server's back (its refresh loop reads it again)."""
    from app.broker.models import Topic

    assert Topic.objects.filter(slug=slug).update(**fields) == 1


def api_info(*functions: str, classes: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """An api_info the way demessaging announces it (schemas and all)."""
    schema = {"type": "object"}
    return {
        "functions": [{"name": f, "rpc_schema": schema, "return_schema": schema} for f in functions],
        "classes": [{"name": c, "rpc_schema": schema,
                     "methods": [{"name": m, "rpc_schema": schema, "return_schema": schema} for m in methods]}
                    for c, methods in (classes or {}).items()],
        "rpc_schema": schema,
    }


def row(page: Any, slug: str) -> Any:
    return page.locator(f'tr[data-topic="{slug}"]')


LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
AGE = re.compile(r"^\d+ (s|min|h|d) ago$")
DISCONNECTED = re.compile(r"^disconnected since \d\d:\d\d:\d\d, (retrying in \d+ s|reconnecting…)$")
RAW_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d|\+00:00|\d\d:\d\d:\d\d\.\d|UTC")


async def test_times_local_same_format_at_first_render_and_after_live_update(
        page: Any, page_server: ServerProcess) -> None:
    """Times show in the browser's zone as YYYY-MM-DD HH:MM:SS with an age, first and after a live update."""
    from playwright.async_api import expect

    slug = make_topic(dasf=False)  # never pinged: the times are the test's
    set_topic(slug, last_ping=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    await page.goto(f"{page_server.http}/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    ping = row(page, slug).locator(".last-ping")
    await expect(ping.locator("time")).to_have_text("2026-01-02 08:34:05")  # Asia/Kolkata, UTC+5:30
    await expect(ping.locator(".ago")).to_have_text(AGE)
    await expect(row(page, slug).locator(".last-pong")).to_have_text("–")
    set_topic(slug, last_pong=datetime(2026, 1, 3, 10, 0, 0, 500000, tzinfo=UTC))
    pong = row(page, slug).locator(".last-pong")
    await expect(pong.locator("time")).to_have_text("2026-01-03 15:30:00")
    await expect(pong.locator(".ago")).to_have_text(AGE)
    await expect(ping.locator("time")).to_have_text(LOCAL_TIME)
    text = await page.locator("body").inner_text()
    assert not RAW_ISO.search(text.replace("live updates", "")), text
    await expect(page.locator("footer")).to_have_text(re.compile(r"^Times are local \(Asia/(Kolkata|Calcutta)\)\.$"))


async def test_age_keeps_ticking(page: Any, page_server: ServerProcess) -> None:
    """The age beside a recent time grows while the page stays open."""
    from playwright.async_api import expect

    slug = make_topic(dasf=False)
    set_topic(slug, last_pong=datetime.now(UTC))
    await page.goto(f"{page_server.http}/")
    ago = row(page, slug).locator(".last-pong .ago")
    await expect(ago).to_have_text(re.compile(r"^[0-2] s ago$"))
    await expect(ago).to_have_text(re.compile(r"^([3-9]|\d\d) s ago$"))


async def test_api_info_names_shown_and_updated_live(page: Any, page_server: ServerProcess) -> None:
    """A topic's announced functions and classes (with methods) are listed, and follow a new api_info live."""
    from playwright.async_api import expect

    slug = make_topic(dasf=False)
    set_topic(slug, api_info=api_info("hello_world", "add", classes={"Greeter": ["greet", "wave"]}))
    await page.goto(f"{page_server.http}/")
    api = row(page, slug).locator(".api")
    await expect(api).to_have_text("hello_world, add, Greeter (greet, wave)")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    set_topic(slug, api_info=api_info(*(f"f{i}" for i in range(100))))
    await expect(api.locator(".omitted")).to_have_text("and 40 more")
    await expect(api.locator("code.function")).to_have_count(60)


async def test_login_link_and_favicon(page: Any, page_server: ServerProcess) -> None:
    """An anonymous visitor gets a log-in link back to the page; the icon and /favicon.ico are served."""
    from playwright.async_api import expect

    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    await page.goto(f"{page_server.http}/")
    await expect(page.locator("#login")).to_have_attribute("href", "/admin/login/?next=/")
    icon = await page.locator('link[rel="icon"]').get_attribute("href")
    for url in (icon, "/favicon.ico"):
        answer = await page.request.get(f"{page_server.http}{url}")
        assert answer.status == 200 and answer.headers["content-type"].startswith("image/svg+xml"), url
    assert not failed, failed


async def test_topics_created_and_deleted_while_open(page: Any, page_server: ServerProcess) -> None:
    """A topic created while the page is open gets a row in order; a deleted topic's row goes."""
    from playwright.async_api import expect

    from app.broker.models import Topic

    first = make_topic(dasf=False)
    await page.goto(f"{page_server.http}/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    later = make_topic(unique("zz-later"), dasf=False)
    await expect(badge(page, later)).to_have_attribute("data-status", "unknown")
    slugs = await page.locator("tr[data-topic]").evaluate_all("rows => rows.map(r => r.dataset.topic)")
    assert slugs == sorted(slugs)
    Topic.objects.filter(slug=first).delete()
    await expect(row(page, first)).to_have_count(0)
    await expect(row(page, later)).to_have_count(1)


@pytest.fixture
def restartable_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server of its own on the session database, which the test stops and starts on the same port."""
    proc = start_server(os.environ["DATABASE_URL"], STATUS_REFRESH_S="0.2")
    yield proc
    proc.stop()


async def test_server_restart_shown_then_every_row_refreshed(page: Any, restartable_server: ServerProcess) -> None:
    """While the server is down the page says since when and when it retries; back, it is live with the
    current topics: one created meanwhile shown, one deleted meanwhile gone, a changed one updated."""
    from playwright.async_api import expect

    from app.broker.models import Topic

    kept, deleted = make_topic(dasf=False), make_topic(dasf=False)
    server = restartable_server
    await page.goto(f"{server.http}/")
    state = page.locator("#connection")
    await expect(state).to_have_attribute("data-state", "open")
    await expect(row(page, deleted)).to_have_count(1)
    server.stop()
    await expect(state).to_have_attribute("data-state", "closed")
    await expect(state).to_have_text(DISCONNECTED)
    await expect(page.locator("body")).to_have_class("stale")
    created = make_topic(dasf=False)
    Topic.objects.filter(slug=deleted).delete()
    set_topic(kept, api_info=api_info("changed_while_down"))
    server.restart()
    await expect(state).to_have_text("live updates: on", timeout=RECOVER_TIMEOUT_MS)
    await expect(state).to_have_attribute("data-state", "open")
    await expect(page.locator("body")).not_to_have_class("stale")
    await expect(badge(page, created)).to_have_attribute("data-status", "unknown")
    await expect(row(page, deleted)).to_have_count(0)
    await expect(row(page, kept).locator(".api")).to_have_text("changed_while_down")


XSS = '<img src=x onerror="window.__x=1">'


async def test_api_names_shown_literally_never_as_markup(page: Any, page_server: ServerProcess) -> None:
    """A function named like an HTML tag is shown as text, at first render and after a live update:
    no element is made of it and its handler never runs."""
    from playwright.async_api import expect

    first, later = make_topic(dasf=False), make_topic(dasf=False)
    set_topic(first, api_info=api_info(XSS))
    await page.goto(f"{page_server.http}/")
    await expect(row(page, first).locator(".api")).to_have_text(XSS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    set_topic(later, api_info=api_info("ok", XSS, classes={XSS: [XSS]}))
    await expect(row(page, later).locator(".api")).to_have_text(f"ok, {XSS}, {XSS} ({XSS})")
    await expect(row(page, first).locator(".api")).to_have_text(XSS)  # redrawn from the socket's first frame
    await expect(page.locator("#topics img")).to_have_count(0)
    assert await page.evaluate("typeof window.__x") == "undefined"


async def test_api_kept_when_a_frame_leaves_it_out(page: Any, page_server: ServerProcess) -> None:
    """A live update of a topic's times (its unchanged API left out of the frame) keeps the API shown."""
    from playwright.async_api import expect

    slug = make_topic(dasf=False)
    set_topic(slug, api_info=api_info("hello_world", "add"))
    await page.goto(f"{page_server.http}/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    api = row(page, slug).locator(".api")
    await expect(api).to_have_text("hello_world, add")
    set_topic(slug, last_pong=datetime(2026, 1, 3, 10, 0, 0, tzinfo=UTC))
    await expect(row(page, slug).locator(".last-pong time")).to_have_count(1)
    await expect(api).to_have_text("hello_world, add")
