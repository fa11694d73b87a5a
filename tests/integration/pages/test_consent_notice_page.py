"""The consent notice a patient agrees to is the one the consortium publishes, word for word:
a new version published while the patient's page is open refuses the consent sent from that
page (the patient reads the new one and gives it again, recorded under the new hash); with no
notice published, the page takes no consent and says where to give one."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import httpx
from playwright.async_api import BrowserContext

from exchange.demo.seed import CONSENT_NOTICE
from tests.integration.conftest import Running
from tests.integration.pages.conftest import arrive, checked, sign_in, token
from tests.integration.pages.test_patient_journey import patient_id

NEW_VERSION = (
    CONSENT_NOTICE.decode()
    .replace("v1 (2026)", "v2 (2027)", 1)
    .replace("期限：自您同意之日起三年。", "期限：自您同意之日起两年。")
    .encode()
)


async def consent_notices(county: Running, pid: str, tok: str) -> list[str]:
    """The notice hash of each of the patient's consents, as the API gives them."""
    async with httpx.AsyncClient(base_url=county.url) as http:
        answer = await http.get(
            "/fhir/Consent",
            params={"patient": pid},
            headers={"Authorization": f"Bearer {tok}", "X-Purpose-Of-Use": "PATRQT"},
        )
    assert answer.status_code == 200, answer.text
    return [
        p["uri"].removeprefix("urn:sha256:")
        for e in answer.json().get("entry") or []
        for p in e["resource"].get("policy") or []
    ]


async def test_a_consent_is_given_under_the_notice_the_page_showed(
    county: Running, context: BrowserContext, tmp_path: Path
) -> None:
    pid = str(await patient_id(county, 1))
    patient = token(county, pid, "dongcheng-thc", "patient")
    notice_file = county.rt.settings.consent_notice
    assert notice_file is not None and notice_file.read_bytes() == CONSENT_NOTICE
    page = await context.new_page()
    await sign_in(page, county, patient)
    await page.goto(f"{county.url}/app/patients/{pid}/consents")
    assert "v1 (2026)" in await page.locator("blockquote.notice-text").inner_text()

    # The consortium publishes a new version while the page is open: the consent sent from
    # the page that showed v1 is refused, and nothing is recorded.
    before = await consent_notices(county, pid, patient)
    notice_file.write_bytes(NEW_VERSION)
    os.utime(notice_file, ns=(1, 1))
    await page.get_by_label("青溪县人民医院").check()
    await page.get_by_label("我已阅读并同意告知书").check()
    await page.get_by_role("button", name="同意", exact=True).click()
    await arrive(page, re.compile(rf"/app/patients/{pid}/consents$"))
    assert "告知书在本页面显示后已更新" in await page.get_by_role("alert").inner_text()
    await checked(page, tmp_path, "patient-consent-notice-changed")
    assert await consent_notices(county, pid, patient) == before

    # Shown again, the page has v2 in full; the consent given now records v2's hash.
    await page.goto(f"{county.url}/app/patients/{pid}/consents")
    shown = await page.locator("blockquote.notice-text").inner_text()
    assert "v2 (2027)" in shown and "两年" in shown and "三年" not in shown
    await page.get_by_label("青溪县人民医院").check()
    await page.get_by_label("我已阅读并同意告知书").check()
    await page.get_by_role("button", name="同意", exact=True).click()
    await arrive(page, re.compile(r"/consents\?done=given$"))
    after = await consent_notices(county, pid, patient)
    assert hashlib.sha256(NEW_VERSION).hexdigest() in after
    assert len(after) == len(before) + 1
    # The clinic's consent, given under v1, is no longer the notice as it stands: shown by
    # its fingerprint; the new one by the title of v2.
    sections = await page.locator("section.consent").all_inner_texts()
    assert "v2 (2027)" in sections[0]
    assert any(hashlib.sha256(CONSENT_NOTICE).hexdigest()[:12] in s for s in sections[1:])

    # No notice published: no consent can be given on the page, and it says where to.
    notice_file.unlink()
    await page.goto(f"{county.url}/app/patients/{pid}/consents")
    assert await page.locator("#no-notice").is_visible()
    assert await page.get_by_role("button", name="同意", exact=True).count() == 0
    await checked(page, tmp_path, "patient-consent-no-notice")
