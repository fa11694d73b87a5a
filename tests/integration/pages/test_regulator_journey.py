"""The regulator's console, clicked through in Chromium on the seeded demo county: a township
physician breaks the glass over the API and reads an unconsented resident's record; the
regulator signs in, finds that grant in the review queue and reviews it, finds the read in the
audit search and its CSV export, sees the alert and the physician's breach scope, and checks the audit log's consistency proof
on the server (which refuses a root the log never had)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx
from playwright.async_api import BrowserContext, Page

from exchange.demo.data import demo_residents
from exchange.pages.render import SHANGHAI
from tests.integration.conftest import Running
from tests.integration.pages.conftest import arrive, checked, sign_in, token

RESIDENTS = demo_residents()
CONSOLE_URL = re.compile(r"/app/audit/$")
QUEUE_URL = re.compile(r"/app/audit/break-glass\?reviewed=\d+$")
REASON = {"reason_code": "unconscious", "reason": "昏迷送入急诊，需核对既往病史与过敏史"}


async def emergency_read(county: Running) -> str:
    """doctor-li breaks the glass on the unconsented resident and reads; the patient's id."""
    pid = str(county.rt.ledger.patient_id(RESIDENTS[-1].resident_id))
    bearer = {"Authorization": f"Bearer {token(county, 'doctor-li', 'dongcheng-thc', 'physician')}"}
    async with httpx.AsyncClient(base_url=county.url) as http:
        granted = await http.post(f"/fhir/Patient/{pid}/$break-glass", headers=bearer, json=REASON)
        assert granted.status_code == 200, granted.text
        read = await http.get(
            f"/fhir/Patient/{pid}/$everything", headers={**bearer, "X-Purpose-Of-Use": "ETREAT"}
        )
        assert read.status_code == 200
    return pid


async def signed_head(page: Page) -> tuple[int, str]:
    """The console's signed head (its size and root), once one is signed."""
    for _ in range(50):
        state = page.locator("#head-state")
        if await state.count():
            size = await page.locator("input[name=size]").get_attribute("value")
            root = await page.locator("input[name=root]").get_attribute("value")
            assert size and root
            return int(size), root
        await asyncio.sleep(0.2)
        await page.reload()
    raise AssertionError("no tree head was signed")


async def test_the_regulator_reviews_a_break_glass_read_and_checks_the_log(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    pid = await emergency_read(county)
    page = await context.new_page()

    # The regulator's start page is the console: the audit log's state.
    await sign_in(page, county, token(county, "inspector-sun", "health-bureau", "regulator"))
    await arrive(page, CONSOLE_URL)
    shown, root = await signed_head(page)
    await checked(page, tmp_path, "regulator-console")

    # The review queue holds doctor-li's grant, with its reason; the regulator reviews it.
    await page.get_by_role("link", name="紧急授权审查").click()
    await arrive(page, re.compile(r"/app/audit/break-glass$"))
    grant = page.locator("tbody tr", has_text="doctor-li")
    assert await grant.count() == 1
    assert pid in await grant.inner_text() and "unconscious" in await grant.inner_text()
    await checked(page, tmp_path, "regulator-queue")
    seq = (await grant.locator("td").first.inner_text()).strip()
    await grant.get_by_label(f"第 {seq} 号的审查结论").select_option("justified")
    await grant.get_by_label("意见").fill("急诊昏迷患者，理由充分")
    await grant.get_by_role("button", name="记录审查结论").click()
    await arrive(page, QUEUE_URL)
    assert await page.get_by_role("status").inner_text() == f"第 {seq} 号紧急授权已完成审查。"
    assert await page.locator("tbody tr", has_text="doctor-li").count() == 0
    await checked(page, tmp_path, "regulator-reviewed")
    # The review is itself in the audit log, naming the grant and its outcome.
    reviews = await county.rt.pool.fetch(
        "SELECT record_text::jsonb->>'reviewed_seq' AS seq, record_text::jsonb->>'outcome' AS o "
        "FROM audit_log WHERE action = 'break-glass.review'"
    )
    assert [(r["seq"], r["o"]) for r in reviews] == [(seq, "justified")]

    # The audit search finds the read under break-glass, by the physician's name.
    await page.get_by_role("link", name="审计查询").click()
    await arrive(page, re.compile(r"/app/audit/events$"))
    await page.get_by_label("人员").fill("doctor-li")
    await page.get_by_label("紧急授权").select_option("true")
    await page.get_by_role("button", name="查询").click()
    await arrive(page, re.compile(r"/app/audit/events\?.*agent=doctor-li"))
    rows = page.locator("tbody tr")
    texts = await rows.all_inner_texts()
    assert texts and all("doctor-li" in t for t in texts)
    assert any("read" in t and pid in t for t in texts), texts
    await checked(page, tmp_path, "regulator-search")

    # The CSV export has the same filters and the same records, by the session cookie.
    href = await page.get_by_role("link", name="将这些记录导出为 CSV").get_attribute("href")
    assert href and "agent=doctor-li" in href and "break-glass=true" in href
    exported = await page.request.get(f"{county.url}{href}")
    assert exported.status == 200 and exported.headers["content-type"].startswith("text/csv")
    lines = (await exported.text()).splitlines()
    assert lines[0].startswith("seq,recorded_at,action")
    assert len(lines) - 1 == len(texts)
    assert all(",doctor-li," in line for line in lines[1:])

    # The alert of the grant.
    await page.get_by_role("link", name="告警").click()
    await arrive(page, re.compile(r"/app/audit/alerts$"))
    alert = page.locator("tbody tr", has_text="doctor-li")
    assert "已批准紧急授权" in await alert.first.inner_text()
    await checked(page, tmp_path, "regulator-alerts")

    # The breach scope of doctor-li today: the one patient, read under break-glass.
    await page.get_by_role("link", name="泄露范围排查").click()
    await arrive(page, re.compile(r"/app/audit/breach-scope$"))
    today = datetime.now(SHANGHAI).date().isoformat()
    await page.get_by_label("人员").fill("doctor-li")
    await page.get_by_label("起始日期").fill(today)
    await page.get_by_label("截止日期").fill(today)
    await page.get_by_role("button", name="查询").click()
    await arrive(page, re.compile(r"/app/audit/breach-scope\?.*agent=doctor-li"))
    [given] = await page.locator("tbody tr").all_inner_texts()
    assert pid in given and "紧急授权" in given
    await checked(page, tmp_path, "regulator-breach")

    # The referral statistics: the table beside the monthly chart holds the API's figures.
    async with httpx.AsyncClient(base_url=county.url) as http:
        figures = (
            await http.get(
                "/referrals/statistics",
                headers={
                    "Authorization": "Bearer "
                    + token(county, "inspector-sun", "health-bureau", "regulator")
                },
            )
        ).json()
    upward: dict[str, int] = {}
    for row in figures["by_month"]:
        if row["direction"] == "upward":
            upward[row["month"]] = upward.get(row["month"], 0) + row["n"]
    assert upward
    await page.get_by_role("link", name="转诊统计").click()
    await arrive(page, re.compile(r"/app/audit/referrals$"))
    for month, n in upward.items():
        cells = (
            await page.locator("#monthly-table tr", has_text=month).locator("td").all_inner_texts()
        )
        assert cells[0] == str(n), (month, cells)
    assert await page.locator("figure.chart svg title").count() >= 2
    await checked(page, tmp_path, "regulator-referral-statistics")

    # Back on the console (after the log has grown), the check proves the head the
    # regulator was first shown is a prefix of the latest signed head.
    await page.get_by_role("link", name="审计日志").click()
    await arrive(page, CONSOLE_URL)
    await asyncio.sleep(0.5)  # heads are signed every 0.2 s here: let the latest include more
    await page.goto(f"{county.url}/app/audit/check?size={shown}&root={quote(root, safe='')}")
    verdict = await page.get_by_role("status").inner_text()
    latest = int(re.findall(r"已验证至第 (\d+) 条", verdict)[0])
    assert latest > shown and f"您所见的 {shown} 条记录" in verdict
    await checked(page, tmp_path, "regulator-verified")
    # The button checks from the head now shown.
    await page.get_by_role("button", name="核验最新一致性证明").click()
    await arrive(page, re.compile(r"/app/audit/check\?size=\d+"))
    assert "已验证至第" in await page.get_by_role("status").inner_text()

    # A root the log never had at that size does not verify, and the page says so.
    forged = "A" * 43 + "="
    await page.goto(f"{county.url}/app/audit/check?size={shown}&root={quote(forged, safe='')}")
    assert await page.get_by_role("heading", name="一致性证明未通过验证").is_visible()
    await checked(page, tmp_path, "regulator-not-verified")
    # A check without what the page showed is refused by name.
    bad = await page.request.get(f"{county.url}/app/audit/check?size=x")
    assert bad.status == 400 and "核验需要页面所示的记录数与根哈希" in await bad.text()


async def test_a_review_without_its_csrf_token_is_refused(
    county: Running, context: BrowserContext
) -> None:
    await emergency_read(county)
    page = await context.new_page()
    await sign_in(page, county, token(county, "inspector-sun", "health-bureau", "regulator"))
    await arrive(page, CONSOLE_URL)
    [seq] = await county.rt.pool.fetch(
        "SELECT seq FROM audit_log WHERE action = 'break-glass' AND decision = 'permit'"
    )
    answer = await page.request.post(
        f"{county.url}/app/audit/break-glass/{seq['seq']}",
        form={"outcome": "justified", "comment": ""},
        max_redirects=0,
    )
    assert answer.status == 403 and "表单已过期" in await answer.text()
    # ... and the grant still awaits review.
    await page.goto(f"{county.url}/app/audit/break-glass")
    assert await page.locator("tbody tr", has_text="doctor-li").count() == 1
