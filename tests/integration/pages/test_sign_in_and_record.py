"""A county physician signs in and reads a resident's record across institutions; an HIS
launches straight onto a record; the session cookie is what it must be; a form without its CSRF
token and an unconsented patient are refused with a page that says what to do. In Chromium, on
the seeded demo county."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Request

from exchange.demo.data import demo_residents
from tests.integration.conftest import Running
from tests.integration.pages.conftest import arrive, checked, sign_in, token

RESIDENTS = demo_residents()
RECORD_URL = re.compile(r"/app/patients/[0-9a-f-]{36}$")
HOME_URL = re.compile(r"/app/(\?.*)?$")


async def find(page, resident_id: str) -> None:  # type: ignore[no-untyped-def]
    await page.get_by_label("号码").fill(resident_id)
    await page.get_by_role("button", name="查找").click()


async def test_a_physician_signs_in_and_reads_a_record_from_two_institutions(
    county: Running, context: BrowserContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    addresses: list[str] = []
    page = await context.new_page()
    page.on("request", lambda r: addresses.append(r.url))

    # The county hospital's physician signs in with the token the hospital gave them.
    await sign_in(page, county, token(county, "doctor-wang", "county-hospital", "physician"))
    await arrive(page, HOME_URL)
    await checked(page, tmp_path, "home")
    # The session is an HttpOnly, SameSite=Strict cookie holding the token until it expires.
    [session] = [c for c in await context.cookies() if c["name"] == "hie_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0

    # They find a resident by resident ID and see one record from two institutions.
    await find(page, RESIDENTS[0].resident_id)
    await arrive(page, RECORD_URL)
    rows = page.locator("table tbody tr")
    assert await rows.count() > 0
    shown = await page.locator("main").inner_text()
    assert "青溪县人民医院" in shown and "东城镇卫生院" in shown
    await checked(page, tmp_path, "record")

    # The last resident gave no consent. The township centre treats them, so its physician
    # finds them, but may not read: the page says what can be done, not what is held.
    await sign_in(page, county, token(county, "doctor-li", "dongcheng-thc", "physician"))
    await arrive(page, HOME_URL)
    await find(page, RESIDENTS[-1].resident_id)
    await arrive(page, RECORD_URL)
    assert await page.get_by_role("heading", name="无权调阅").is_visible()
    assert await page.get_by_role("link", name="紧急情况下：申请紧急授权").is_visible()
    await checked(page, tmp_path, "refused")

    # No resident ID, and no token, ever appeared in an address, nor in the exchange's log.
    tok = session["value"]
    assert not [a for a in addresses if any(r.resident_id in a for r in RESIDENTS) or tok in a]
    # The server keeps no access log (its addresses carry no ID anyway), and nothing it did
    # log names a resident or a token.
    assert not [r for r in caplog.records if r.name.startswith("uvicorn.access")]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert tok not in logged and not any(r.resident_id in logged for r in RESIDENTS)


async def test_a_form_without_its_csrf_token_is_refused(
    county: Running, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, county, token(county, "doctor-wang", "county-hospital", "physician"))
    await arrive(page, HOME_URL)
    # The session's cookie goes along, the form's CSRF token does not.
    answer = await page.request.post(
        f"{county.url}/app/search",
        form={"system": "urn:oid:2.16.156.10011.1.3", "value": RESIDENTS[0].resident_id},
        max_redirects=0,
    )
    assert answer.status == 403
    assert "表单已过期" in await answer.text()


async def test_the_his_launches_onto_a_patients_record(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    # The hospital's HIS page posts the physician's token and the patient's identifier.
    tok = token(county, "doctor-wang", "county-hospital", "physician")
    page = await context.new_page()
    seen: list[Request] = []
    page.on("request", lambda r: seen.append(r))
    await page.set_content(
        f'<form method="post" action="{county.url}/app/launch">'
        f'<input type="hidden" name="token" value="{tok}">'
        '<input type="hidden" name="identifier" '
        f'value="urn:oid:2.16.156.10011.1.3|{RESIDENTS[0].resident_id}">'
        '<button type="submit">调阅</button></form>'
    )
    await page.get_by_role("button", name="调阅").click()
    await arrive(page, RECORD_URL)
    assert await page.get_by_role("heading", name="患者健康档案").is_visible()
    assert not [r for r in seen if RESIDENTS[0].resident_id in r.url]
    await checked(page, tmp_path, "launched")


async def test_pages_are_chinese_first_with_english_a_click_away(
    county: Running, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto(f"{county.url}/app/login")
    assert await page.get_attribute("html", "lang") == "zh-CN"
    assert await page.get_by_role("heading", name="登录").is_visible()
    # The switch, then the choice kept for the next page.
    await page.get_by_role("link", name="English").click()
    await arrive(page, re.compile(r"/app/login\?lang=en$"))
    assert await page.get_attribute("html", "lang") == "en"
    await page.goto(f"{county.url}/app/login")
    assert await page.get_by_role("heading", name="Sign in").is_visible()
