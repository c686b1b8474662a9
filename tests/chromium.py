"""Headless Chromium for browser tests (Debian's /usr/bin/chromium, driven by Playwright; `make browser`)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE_TIMEOUT_MS = 10_000
# Not UTC, and with a half-hour offset and no daylight saving: local times are told apart from UTC ones.
TIMEZONE = "Asia/Kolkata"


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
            pytest.fail(f"browser tests need a browser: {reason}")
        pytest.skip(reason)


@contextlib.asynccontextmanager
async def open_page() -> AsyncIterator[Any]:
    """A fresh anonymous page in its own browser, in TIMEZONE; page errors fail the test."""
    require_browser()
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(timezone_id=TIMEZONE)
            tab = await context.new_page()
            tab.set_default_timeout(PAGE_TIMEOUT_MS)
            tab.on("pageerror", lambda error: errors.append(str(error)))
            yield tab
        finally:
            await browser.close()
    assert not errors, errors
