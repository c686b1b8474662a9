"""The contract pages in headless Chromium (tests/chromium.py) with every request to another host blocked:
they render from this server alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.api.asyncapi import CHANNELS
from tests.chromium import open_page
from tests.servers import ServerProcess

pytestmark = pytest.mark.browser


@pytest.fixture
async def offline_page(server: ServerProcess) -> AsyncIterator[tuple[Any, list[str]]]:
    """A page whose requests to any host but the server's are aborted, and the list of those requests."""
    blocked: list[str] = []
    here = urlsplit(server.http).netloc

    async def only_here(route: Any) -> None:
        if urlsplit(route.request.url).netloc == here:
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    async with open_page() as tab:
        await tab.route("**/*", only_here)
        yield tab, blocked


async def test_docs_page_renders_operations(offline_page: tuple[Any, list[str]], server: ServerProcess) -> None:
    """``/api/v1/docs`` shows the API's operations, the topic status among them, asking no other host."""
    from playwright.async_api import expect

    page, blocked = offline_page
    await page.goto(f"{server.http}/api/v1/docs")
    status = page.locator(".opblock-summary-path", has_text="/api/v1/topics/{slug}/status")
    await expect(status).to_have_count(1)
    assert await page.locator(".opblock").count() > 1
    assert blocked == []


async def test_asyncapi_page_renders_channels(offline_page: tuple[Any, list[str]], server: ServerProcess) -> None:
    """``/api/v1/asyncapi`` shows one section per websocket channel, asking no other host."""
    from playwright.async_api import expect

    page, blocked = offline_page
    await page.goto(f"{server.http}/api/v1/asyncapi")
    await expect(page.locator("section.channel")).to_have_count(len(CHANNELS))
    assert blocked == []
