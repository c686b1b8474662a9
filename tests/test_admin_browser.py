"""The admin in headless Chromium on a real server started as `make serve` starts it (static files collected):
styled, and reached from the status page's log-in link and left by its log-out button."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.chromium import open_page
from tests.protocol import make_user, set_password
from tests.servers import ServerProcess

pytestmark = pytest.mark.browser

# What Chromium computes for elements no stylesheet touched.
UNSTYLED_BACKGROUND = "rgba(0, 0, 0, 0)"


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with open_page() as tab:
        yield tab


def staff_user() -> tuple[str, str]:
    user = make_user(is_staff=True)
    password = set_password(user)
    return user.username, password


async def test_login_page_loads_its_stylesheet_and_layout(page: Any, server: ServerProcess) -> None:
    """The admin login page gets base.css (200) and nothing it asks for fails; its header and form are laid out."""
    answers: dict[str, int] = {}
    page.on("response", lambda r: answers.__setitem__(r.url, r.status))
    async with page.expect_response(f"{server.http}/static/admin/css/base.css") as stylesheet:
        await page.goto(f"{server.http}/admin/login/")
    assert (await stylesheet.value).status == 200
    await page.wait_for_load_state("load")
    assert all(status < 400 for status in answers.values()), answers
    header = await page.locator("#header").evaluate("e => getComputedStyle(e).backgroundColor")
    assert header != UNSTYLED_BACKGROUND, header
    box = await page.locator("#container").bounding_box()
    viewport = page.viewport_size
    assert box is not None and box["width"] < viewport["width"] / 2, (box, viewport)  # the narrow login box


async def test_log_in_from_status_page_and_out_again(page: Any, server: ServerProcess) -> None:
    """The status page's log-in link leads through the admin login back to it, naming the user; log out returns."""
    from playwright.async_api import expect

    username, password = staff_user()
    await page.goto(f"{server.http}/")
    await page.locator("#login").click()
    await page.locator("#id_username").fill(username)
    await page.locator("#id_password").fill(password)
    await page.locator("input[type=submit]").click()
    await expect(page).to_have_url(f"{server.http}/")
    await expect(page.locator("#username")).to_have_text(username)
    await expect(page.locator("#login")).to_have_count(0)
    await page.locator("#logout").click()
    await expect(page).to_have_url(f"{server.http}/")
    await expect(page.locator("#login")).to_be_visible()
