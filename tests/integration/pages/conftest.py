"""The pages' tests: the seeded demo county on a real exchange, and Debian's Chromium driven by
Playwright (launched from ``/usr/bin/chromium``: Playwright's own browser download cannot work
here). ``make test`` installs the browser package when it is missing (tests need it; see the
Makefile). Every page a test visits is checked by axe-core for WCAG 2.2 AA, and screenshotted
into the test's directory."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Error, Page, async_playwright

from exchange.auth.tokens import TokenIssuer
from exchange.demo.seed import seed_demo
from exchange.settings import Settings
from tests.integration.conftest import Running, running

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = (
    Path(os.environ.get("HIE_TEST_ARTIFACTS") or Path(__file__).parents[3] / "test-artifacts")
    / "pages"
)
AXE = Path(__file__).with_name("vendor") / "axe.min.js"
# WCAG 2.2 AA, as axe-core tags its rules.
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture
async def county(settings: Settings) -> AsyncIterator[Running]:
    """The exchange with the demo county seeded: institutions, residents, consents, referrals."""
    async with running(settings) as ex:
        await seed_demo(ex.rt)
        yield ex


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), (
        f"install {CHROMIUM} (Debian: chromium)"
    )
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    # axe-core is injected as a script: the pages' own CSP allows only their own scripts.
    ctx = await browser.new_context(bypass_csp=True, locale="zh-CN", timezone_id="Asia/Shanghai")
    try:
        yield ctx
    finally:
        await ctx.close()


def token(running: Running, person: str, institution: str, role: str) -> str:
    settings = running.rt.settings
    value, _ = TokenIssuer(settings.secrets.token_key, settings.profile).issue(
        person=person, institution=institution, role=role, now=datetime.now(UTC)
    )
    return value


async def sign_in(page: Page, running: Running, tok: str) -> None:
    """Sign in as a person does: the sign-in page, the token pasted, the button pressed."""
    await page.goto(f"{running.url}/app/login")
    await page.get_by_label("令牌", exact=False).fill(tok)
    await page.get_by_role("button", name="登录", exact=True).click()


async def arrive(page: Page, where: re.Pattern[str], seconds: float = 15) -> None:
    """Wait until the page has navigated to an address matching ``where`` and loaded it
    (after a form's POST and its redirect, Playwright's wait_for_url can miss the arrival)."""
    for _ in range(int(seconds * 20)):
        if where.search(page.url):
            try:
                if await page.evaluate("document.readyState") == "complete":
                    return
            except Error:  # the document changed under the evaluation: look again
                pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"the page did not arrive at {where.pattern}: it is at {page.url}")


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical WCAG 2.2 AA violations on the page as it stands."""
    await page.add_script_tag(path=str(AXE))
    found = await page.evaluate(
        "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}}))"
        ".violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))",
        WCAG_AA,
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


async def checked(page: Page, shots: Path, name: str) -> None:
    """The page passes axe-core, and its screenshot is kept: in the test's directory, and as
    the run's artifact in ``test-artifacts/pages/`` of the checkout (or ``HIE_TEST_ARTIFACTS``),
    where a CI job collects them."""
    assert await axe_violations(page) == [], name
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"{name}.png"
    await page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / shot.name)
