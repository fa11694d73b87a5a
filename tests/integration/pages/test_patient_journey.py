"""A resident signs in to the exchange's pages with a patient token: sees their record's
timeline, who read it (a physician's read, and an emergency access marked as one), withdraws
the consent the township centre recorded — after which the physician's next read is refused —
and gives a consent again from the page. In Chromium, on the seeded demo county."""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

import httpx
from playwright.async_api import BrowserContext

from domain.identity import RESIDENT_ID_SYSTEM
from exchange.demo.data import demo_residents
from exchange.demo.seed import CONSENT_NOTICE, NOTICE_TITLE
from tests.integration.conftest import Running
from tests.integration.pages.conftest import arrive, checked, sign_in, token

RESIDENTS = demo_residents()


async def patient_id(county: Running, resident: int) -> UUID:
    found = await county.rt.records.find_patient(
        RESIDENT_ID_SYSTEM, RESIDENTS[resident].resident_id
    )
    assert found is not None
    return found


async def physician_reads(county: Running, pid: UUID, tok: str, purpose: str = "TREAT") -> int:
    async with httpx.AsyncClient(base_url=county.url) as http:
        answer = await http.get(
            f"/fhir/Patient/{pid}/$everything",
            headers={"Authorization": f"Bearer {tok}", "X-Purpose-Of-Use": purpose},
        )
    return answer.status_code


async def test_a_patient_sees_who_read_their_record_and_withdraws_their_consent(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    pid = await patient_id(county, 0)
    doctor = token(county, "doctor-zhou", "county-hospital", "physician")
    assert await physician_reads(county, pid, doctor) == 200

    page = await context.new_page()
    await sign_in(page, county, token(county, str(pid), "dongcheng-thc", "patient"))
    # Their start page is their own record: the same timeline a physician reads.
    await arrive(page, re.compile(rf"/app/patients/{pid}$"))
    assert await page.locator("table tbody tr").count() > 0
    await checked(page, tmp_path, "patient-record")

    # Who read it: the county hospital's physician, under the patient's consent.
    await page.get_by_role("link", name="谁调阅了我的档案").click()
    await arrive(page, re.compile(rf"/app/patients/{pid}/reads$"))
    first = page.locator("table tbody tr").first
    assert "doctor-zhou" in await first.inner_text()
    assert "青溪县人民医院" in await first.inner_text()
    assert "已允许" in await first.inner_text()
    await checked(page, tmp_path, "patient-reads")

    # Their consents: the township centre's, for every institution, under the demo's notice.
    await page.get_by_role("link", name="我的知情同意").click()
    await arrive(page, re.compile(rf"/app/patients/{pid}/consents$"))
    # The page's notice is the one the clinics showed (the demo wrote it into the data dir).
    assert county.rt.settings.consent_notice is not None
    assert county.rt.settings.consent_notice.read_bytes() == CONSENT_NOTICE
    consent = page.locator("section.consent").first
    assert "有效" in await consent.inner_text()
    assert "医共体内所有机构" in await consent.inner_text()
    assert NOTICE_TITLE in await consent.inner_text()
    await checked(page, tmp_path, "patient-consents")

    # They withdraw it; the list says so, and the physician's next read is refused.
    await page.get_by_role("button", name="撤回知情同意 1").click()
    await arrive(page, re.compile(r"/consents\?done=withdrawn$"))
    assert await page.get_by_role("status").is_visible()
    assert "已撤回" in await page.locator("section.consent").first.inner_text()
    await checked(page, tmp_path, "patient-consent-withdrawn")
    assert await physician_reads(county, pid, doctor) == 403

    # The refused read is among the accesses they see, newest first.
    await page.get_by_role("link", name="谁调阅了我的档案").click()
    await arrive(page, re.compile(rf"/app/patients/{pid}/reads$"))
    assert "已拒绝" in await page.locator("table tbody tr").first.inner_text()

    # They give a consent again, for the county hospital alone, having read the notice.
    await page.get_by_role("link", name="我的知情同意").click()
    await arrive(page, re.compile(rf"/app/patients/{pid}/consents$"))
    # The notice in full, as the consortium wrote it: its title and every paragraph.
    shown = await page.locator("blockquote.notice-text").inner_text()
    assert NOTICE_TITLE in shown
    for paragraph in CONSENT_NOTICE.decode().split("\n\n")[1:]:
        assert paragraph.strip() in shown
    await page.get_by_label("青溪县人民医院").check()
    await page.get_by_label("我已阅读并同意告知书").check()
    await page.get_by_role("button", name="同意", exact=True).click()
    await arrive(page, re.compile(r"/consents\?done=given$"))
    newest = await page.locator("section.consent").first.inner_text()
    assert "有效" in newest and "青溪县人民医院" in newest
    await checked(page, tmp_path, "patient-consent-given")
    assert await physician_reads(county, pid, doctor) == 200


async def test_an_emergency_access_is_marked_for_the_patient(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    # The last resident gave no consent: a physician reads only by breaking the glass.
    pid = await patient_id(county, -1)
    doctor = token(county, "doctor-sun", "county-hospital", "physician")
    async with httpx.AsyncClient(base_url=county.url) as http:
        granted = await http.post(
            f"/fhir/Patient/{pid}/$break-glass",
            headers={"Authorization": f"Bearer {doctor}"},
            json={"reason_code": "unconscious", "reason": "brought in unconscious after a fall"},
        )
    assert granted.status_code in (200, 201), granted.text
    assert await physician_reads(county, pid, doctor, "ETREAT") == 200

    page = await context.new_page()
    await sign_in(page, county, token(county, str(pid), "dongcheng-thc", "patient"))
    await arrive(page, re.compile(rf"/app/patients/{pid}$"))
    await page.get_by_role("link", name="谁调阅了我的档案").click()
    await arrive(page, re.compile(rf"/app/patients/{pid}/reads$"))
    notices = page.locator("section.emergencies")
    assert "青溪县人民医院" in await notices.inner_text()
    assert "昏迷" in await notices.inner_text()
    marked = page.locator("table tbody tr.emergency")
    assert await marked.count() >= 2  # the grant and the read under it
    assert "紧急授权" in await marked.first.inner_text()
    assert "doctor-sun" in await marked.first.inner_text()
    await checked(page, tmp_path, "patient-reads-emergency")

    # Nothing they gave: the consents page says what that means.
    await page.get_by_role("link", name="我的知情同意").click()
    await arrive(page, re.compile(rf"/app/patients/{pid}/consents$"))
    assert await page.get_by_text("您尚未给予知情同意").is_visible()
    await checked(page, tmp_path, "patient-no-consent")


async def test_a_patient_cannot_open_another_patients_pages(
    county: Running, context: BrowserContext
) -> None:
    me, other = await patient_id(county, 1), await patient_id(county, 2)
    page = await context.new_page()
    await sign_in(page, county, token(county, str(me), "dongcheng-thc", "patient"))
    await arrive(page, re.compile(rf"/app/patients/{me}$"))
    for where in ("consents", "reads"):
        answer = await page.goto(f"{county.url}/app/patients/{other}/{where}")
        assert answer is not None and answer.status == 403, where
