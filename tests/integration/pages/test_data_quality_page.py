"""The information centre's morning check, clicked through in Chromium on the seeded demo
county: the village clinic's HIS sends a visit whose resident ID has a mistyped check digit,
which the exchange refuses, and its edge node relays another visit stamped on a clock an hour
fast, which the exchange accepts and flags; the regulator opens the data-quality page from the
console and finds each institution's figures as the API gives them, the refusal's problem code
and the clock an hour ahead on the village clinic's row, the clinic among those needing
attention for both, and narrows the window."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import BrowserContext

from adapters.envelope import build_envelope, load_private_key_pem
from adapters.nats import EDGE_RECEIVED, SubmitClient
from exchange.demo.data import demo_residents
from exchange.demo.seed import INSTITUTIONS
from tests.factories import record_items
from tests.integration.conftest import Running
from tests.integration.pages.conftest import arrive, checked, sign_in, token
from tests.integration.test_edge_clock import measured
from tests.integration.test_replays import send

CLINIC = "taoyuan-vc"


async def mistyped_visit(county: Running) -> str:
    """The village clinic sends a visit under a resident ID whose check digit is wrong; the
    problem code the exchange refused it with."""
    rid = demo_residents()[0].resident_id
    wrong = rid[:-1] + ("1" if rid[-1] != "1" else "2")
    key = load_private_key_pem((county.rt.settings.keys_dir / f"{CLINIC}.pem").read_bytes())
    envelope = build_envelope(
        institution=CLINIC,
        items=record_items(wrong, "tyvc-0412"),
        key=key,
        sent_at=datetime.now(UTC),
    )
    client = SubmitClient(county.rt.nc, county.rt.settings.consortium, CLINIC)
    receipt = (await client.submit([envelope], wait=20))[envelope["submission_id"]]
    assert receipt["status"] == "rejected"
    return str(receipt["problems"][0]["code"])


async def hour_fast_visit(county: Running) -> None:
    """The village clinic's clock runs an hour fast: it signs a visit, and its edge node takes
    it, on that clock; the exchange accepts it, flagged."""
    key = load_private_key_pem((county.rt.settings.keys_dir / f"{CLINIC}.pem").read_bytes())
    fast = datetime.now(UTC) + timedelta(hours=1)
    envelope = build_envelope(
        institution=CLINIC,
        items=record_items(demo_residents()[1].resident_id, "tyvc-0413"),
        key=key,
        sent_at=fast,
    )
    receipt = await send(county, CLINIC, envelope, {EDGE_RECEIVED: fast.isoformat()})
    assert receipt["status"] == "accepted", receipt.get("problems")
    assert receipt["warnings"][0]["code"] == "edge.clock_ahead"
    await measured(county, CLINIC, fast)  # kept as the receipt is sent, not before it


async def api_figures(county: Running, tok: str, days: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=county.url) as http:
        answer = await http.get(
            "/audit/data-quality",
            headers={"Authorization": f"Bearer {tok}"},
            params={"days": days},
        )
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


async def test_the_morning_check_of_every_institution(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    code = await mistyped_visit(county)
    await hour_fast_visit(county)
    await county.settle()
    regulator = token(county, "inspector-sun", "health-bureau", "regulator")
    figures = {
        r["institution"]: r for r in (await api_figures(county, regulator, 7))["institutions"]
    }
    page = await context.new_page()
    await sign_in(page, county, regulator)
    await arrive(page, re.compile(r"/app/audit/$"))
    await page.get_by_role("link", name="数据质量").click()
    await arrive(page, re.compile(r"/app/audit/data-quality$"))
    assert await page.get_by_role("heading", level=1).inner_text() == "数据质量"
    assert await page.get_by_label("时段").input_value() == "7"

    # Every member institution has its row, with the API's numbers.
    for inst, name, _level in INSTITUTIONS:
        row = page.locator(f'#quality-table tr[data-institution="{inst}"]')
        assert await row.count() == 1, inst
        assert name in await row.locator("th").inner_text()
        assert await row.locator("td.accepted").inner_text() == str(figures[inst]["accepted"])
        assert await row.locator("td.refused").inner_text() == str(figures[inst]["rejected"])
    hospital = page.locator('#quality-table tr[data-institution="county-hospital"]')
    assert figures["county-hospital"]["accepted"] > 0
    assert "就诊" in await hospital.locator("td.kinds").inner_text()
    assert "县级医院" in await hospital.locator("th").inner_text()  # its level

    # The clinic's refusal: its code on its row, and the clinic needs attention.
    clinic = page.locator(f'#quality-table tr[data-institution="{CLINIC}"]')
    assert await clinic.locator("td.refused").inner_text() == "1"
    assert code in await clinic.locator("td.codes").inner_text()
    needing = page.locator("#attention-list li", has_text="桃源村卫生室")
    assert "拒收率超过 5%" in await needing.inner_text()
    # Its edge node's clock an hour ahead: on its row, and why it needs attention too; the
    # other institutions send without an edge node.
    assert figures[CLINIC]["edge_clock"]["clock_skew_s"] > 3500
    assert "快 60 分钟" in await clinic.locator("td.clock").inner_text()
    assert "边缘节点时钟偏差超过 5 分钟" in await needing.inner_text()
    hospital_clock = await hospital.locator("td.clock").inner_text()
    assert hospital_clock == "无边缘节点"
    # Institutions that sent nothing are listed as never having sent.
    for inst, name, _level in INSTITUTIONS:
        if figures[inst]["last_submission_at"] is None:
            listed = page.locator("#attention-list li", has_text=name)
            assert "从未上报" in await listed.inner_text(), inst
    # The county's day: today's row of the daily table counts every submission of today.
    today = (await api_figures(county, regulator, 1))["daily"][0]
    first = page.locator("#daily-table tbody tr").first
    assert (await first.locator("th").inner_text()) == today["day"]
    assert await first.locator("td").all_inner_texts() == [
        str(today["accepted"]),
        str(today["rejected"]),
    ]
    await checked(page, tmp_path, "regulator-data-quality")

    # Today only.
    await page.get_by_label("时段").select_option("1")
    await page.get_by_role("button", name="显示").click()
    await arrive(page, re.compile(r"/app/audit/data-quality\?days=1$"))
    assert await page.locator("#daily-table tbody tr").count() == 1
    assert await page.get_by_label("时段").input_value() == "1"
    await checked(page, tmp_path, "regulator-data-quality-today")

    # The page view is in the audit log as the regulator's, like every page.
    actions = await county.rt.pool.fetch(
        "SELECT decision FROM audit_log WHERE action = 'page.data-quality' "
        "AND person = 'inspector-sun'"
    )
    assert [r["decision"] for r in actions] == ["permit", "permit"]
