"""The status page at ``/`` in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
one badge per visible topic, updated live over /ws/status/ while the real backend module comes and goes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.dasf_client import Modules, ws_args
from tests.protocol import make_topic
from tests.servers import ServerProcess, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RELAYS = {"PING_INTERVAL_S": "1", "PONG_GRACE_S": "0.5", "AVAILABILITY_WINDOW_S": "3", "STATUS_REFRESH_S": "0.2"}
# Online: a ping round after the module connected; offline: the next ping plus the grace. With slack.
ONLINE_TIMEOUT_MS = 15_000
OFFLINE_TIMEOUT_MS = 10_000
PAGE_TIMEOUT_MS = 10_000


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium); `playwright install` is not used"
    return None


def require_browser() -> None:
    """Skip when the browser is unavailable, except on CI (CI=true), where that is a failure."""
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"status page tests need a browser: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def page_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server on the session database with the ping relay and short availability intervals."""
    proc = start_server(os.environ["DATABASE_URL"], **RELAYS)
    yield proc
    proc.stop()


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """Headless Chromium with a fresh anonymous page (one browser per test); page errors fail the test."""
    require_browser()
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = await browser.new_page()
            tab.set_default_timeout(PAGE_TIMEOUT_MS)
            tab.on("pageerror", lambda error: errors.append(str(error)))
            yield tab
        finally:
            await browser.close()
    assert not errors, errors


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
    sigkill(proc)
    await expect(badge(page, slug)).to_have_attribute("data-status", "offline", timeout=OFFLINE_TIMEOUT_MS)
    await expect(badge(page, slug)).to_have_class("badge offline")

