"""The physician's journey in Chromium on the seeded demo county: launched from the hospital's
HIS onto a record, the summary and the timeline from two institutions with their level badges,
the record as it stood a moment ago, filtered to lab results, a test's trend; the referrals
inbox and outbox; refused on the unconsented resident, the glass broken
with a reason, and the record read for ETREAT. Then the same search and filter by keyboard
alone. axe-core on every page."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from playwright.async_api import BrowserContext, Page

from exchange.demo.data import DemoResident, demo_bundles, demo_residents
from exchange.pages.render import SHANGHAI
from tests.integration.conftest import Running
from tests.integration.pages.conftest import arrive, checked, sign_in, token

RESIDENTS = demo_residents()
RECORD_URL = re.compile(r"/app/patients/[0-9a-f-]{36}(\?.*)?$")
HOME_URL = re.compile(r"/app/(\?.*)?$")
RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"


def seen_at_both_with_labs() -> DemoResident:
    """A resident both the county hospital and the township centre saw (the seed sends the
    first four to both), with lab results in the demo's records."""
    for n, resident in enumerate(RESIDENTS[:4]):
        sent = [demo_bundles(i, RESIDENTS[:4])[n] for i in ("county-hospital", "dongcheng-thc")]
        if "laboratory" in json.dumps(sent):
            return resident
    raise AssertionError("the demo county has no resident seen at both with lab results")


async def launch(page: Page, county: Running, tok: str, resident_id: str) -> None:
    """The HIS's "调阅" button: a form of the hospital's page posting the token and patient."""
    await page.set_content(
        f'<form method="post" action="{county.url}/app/launch">'
        f'<input type="hidden" name="token" value="{tok}">'
        f'<input type="hidden" name="identifier" value="{RESIDENT_ID}|{resident_id}">'
        '<button type="submit">调阅</button></form>'
    )
    await page.get_by_role("button", name="调阅").click()
    await arrive(page, RECORD_URL)


async def timeline(page: Page) -> list[tuple[str, str, str]]:
    """The timeline's rows as (kind, institution, its level badge)."""
    rows = page.locator("table.timeline tbody tr")
    found = []
    for i in range(await rows.count()):
        row = rows.nth(i)
        found.append(
            (
                await row.locator("td").nth(1).inner_text(),
                await row.locator(".sender").inner_text(),
                await row.locator(".badge").inner_text(),
            )
        )
    return found


async def test_a_physician_reads_filters_trends_and_breaks_the_glass(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    page = await context.new_page()
    await launch(
        page,
        county,
        token(county, "doctor-wang", "county-hospital", "physician"),
        seen_at_both_with_labs().resident_id,
    )

    # The summary in the IPS's sections: what no institution sent says so.
    for heading in ("问题", "用药", "过敏与不耐受", "预防接种", "近期结果"):
        assert await page.get_by_role("heading", name=heading, exact=True).is_visible()
    allergies = page.locator(
        "section.ips-section", has=page.get_by_role("heading", name="过敏与不耐受")
    )
    assert "未提供" in await allergies.inner_text()
    # One timeline, newest first, from two institutions, each with its level.
    rows = await timeline(page)
    assert {("青溪县人民医院", "县级医院"), ("东城镇卫生院", "乡镇卫生院")} <= {
        (sender, badge) for _, sender, badge in rows
    }
    times = await page.locator("table.timeline tbody tr td:first-child").all_inner_texts()
    assert times == sorted(times, reverse=True)
    await checked(page, tmp_path, "physician-record")

    # The record as it stood a moment ago: the same entries, said to be as of then.
    now = datetime.now(SHANGHAI)
    await page.get_by_label("日期", exact=True).fill(now.strftime("%Y-%m-%d"))
    await page.get_by_label("时间（北京时间）").fill(now.strftime("%H:%M:%S"))
    await page.get_by_role("button", name="查看该时点的档案").click()
    await arrive(page, re.compile(r"\?_at="))
    assert await page.get_by_role("status").filter(has_text="截至").is_visible()
    assert await timeline(page) == rows
    await checked(page, tmp_path, "physician-record-as-it-stood")

    # Filtered to lab results: only lab results are left, and fewer rows than before.
    await page.get_by_label("类别").select_option(label="检验结果")
    await page.get_by_role("button", name="筛选").click()
    await arrive(page, re.compile(r"category=lab"))
    labs = await timeline(page)
    assert labs and {kind for kind, _, _ in labs} == {"检验结果"} and len(labs) < len(rows)
    await checked(page, tmp_path, "physician-record-labs")

    # A test's trend: the chart, named, and the same results in the table beside it.
    trend = page.get_by_role("link", name=re.compile("^趋势："))
    assert await trend.count() > 0
    await trend.first.click()
    await arrive(page, re.compile(r"/trend\?code="))
    chart = page.get_by_role("img", name=re.compile("趋势"))
    assert await chart.is_visible()
    points = await page.locator("svg circle").count()
    assert points > 0 and points == await page.locator("table tbody tr").count()
    await checked(page, tmp_path, "physician-trend")

    # The last resident gave no consent: the township centre's physician is refused, and
    # the refusal offers the break-glass dialog.
    await sign_in(page, county, token(county, "doctor-li", "dongcheng-thc", "physician"))
    await arrive(page, HOME_URL)
    # The township centre's referrals: the village clinic's upward one waits in its inbox,
    # its own to the county hospital is in its outbox; each party with its level.
    await page.get_by_role("link", name="收到的转诊").click()
    await arrive(page, re.compile(r"/app/referrals/inbox$"))
    inbox = await page.locator("table.referrals tbody tr").all_inner_texts()
    assert any("上转" in r and "桃源村卫生室" in r and "村卫生室" in r for r in inbox), inbox
    await checked(page, tmp_path, "physician-referrals-inbox")
    await page.get_by_role("link", name="发出的转诊").click()
    await arrive(page, re.compile(r"/app/referrals/outbox$"))
    outbox = await page.locator("table.referrals tbody tr").all_inner_texts()
    assert any("青溪县人民医院" in r and "县级医院" in r for r in outbox), outbox
    await checked(page, tmp_path, "physician-referrals-outbox")
    # The referral's history: the request, then each step with who took it, newest last.
    sent = page.locator("table.referrals tbody tr", has_text="青溪县人民医院")
    await sent.first.get_by_role("link").first.click()
    await arrive(page, re.compile(r"/app/referrals/[0-9a-f-]{36}$"))
    steps = await page.locator("table.history tbody tr").all_inner_texts()
    assert "发起转诊" in steps[0] and "东城镇卫生院" in steps[0], steps
    assert any("李主任" in s and "青溪县人民医院" in s for s in steps), steps
    assert "已下转" in steps[-1] and "随访计划" in steps[-1], steps
    # Its direction and state, in words (the FHIR extensions named by their URN).
    facts = await page.locator("dl.referral").inner_text()
    assert "上转" in facts and "None" not in facts, facts
    await checked(page, tmp_path, "physician-referral-history")
    await page.get_by_role("link", name="发出的转诊").click()
    await arrive(page, re.compile(r"/app/referrals/outbox$"))
    await page.get_by_role("link", name="查找患者").click()
    await arrive(page, HOME_URL)
    await page.get_by_label("号码").fill(RESIDENTS[-1].resident_id)
    await page.get_by_role("button", name="查找").click()
    await arrive(page, RECORD_URL)
    assert await page.get_by_role("heading", name="无权调阅").is_visible()
    await page.get_by_role("link", name="紧急情况下：申请紧急授权").click()
    await arrive(page, re.compile(r"/break-glass$"))
    consequences = await page.locator(".consequences").inner_text()
    assert "审计" in consequences and "监管" in consequences and "告知" in consequences
    await checked(page, tmp_path, "physician-break-glass")

    await page.get_by_label("紧急事由").select_option("unconscious")
    await page.get_by_label("书面理由", exact=False).fill(
        "患者昏迷送入急诊，无家属在场，需查既往病史"
    )
    await page.get_by_role("button", name="紧急授权并调阅档案").click()
    await arrive(page, re.compile(r"/app/patients/[0-9a-f-]{36}\?purpose=ETREAT$"))
    assert await page.get_by_role("status").filter(has_text="紧急授权").is_visible()
    assert await page.locator("table.timeline tbody tr").count() > 0
    await checked(page, tmp_path, "physician-record-break-glass")
    # A filter keeps the emergency purpose: the next read is still the ETREAT one.
    await page.get_by_label("类别").select_option(label="检验结果")
    await page.get_by_role("button", name="筛选").click()
    await arrive(page, re.compile(r"purpose=ETREAT.*category=lab|category=lab.*purpose=ETREAT"))
    assert await page.locator("table.timeline tbody tr").count() > 0


async def test_search_and_filter_by_keyboard_alone(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    page = await context.new_page()
    await sign_in(page, county, token(county, "doctor-wang", "county-hospital", "physician"))
    await arrive(page, HOME_URL)

    async def tab_to(label: str) -> None:
        """Tab forward until the element of this id (or button text) has the focus."""
        for _ in range(40):
            await page.keyboard.press("Tab")
            focused = await page.evaluate(
                "() => document.activeElement.id || document.activeElement.textContent.trim()"
            )
            if focused == label:
                return
        raise AssertionError(f"{label} cannot be reached by Tab")

    await tab_to("value")
    await page.keyboard.type(seen_at_both_with_labs().resident_id)
    await tab_to("查找")
    await page.keyboard.press("Enter")
    await arrive(page, RECORD_URL)

    await tab_to("f-category")
    for _ in range(12):  # the closed select steps through its options by arrow keys
        if await page.evaluate("() => document.activeElement.value") == "lab":
            break
        await page.keyboard.press("ArrowDown")
    await tab_to("筛选")
    await page.keyboard.press("Enter")
    await arrive(page, re.compile(r"category=lab"))
    labs = await timeline(page)
    assert labs and {kind for kind, _, _ in labs} == {"检验结果"}
    await checked(page, tmp_path, "physician-keyboard")
