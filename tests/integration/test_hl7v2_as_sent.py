"""What a Chinese HIS sends over HL7 v2 reaches a physician as it was meant: a GB 18030 message
read in its character set, an admission and its discharge without a visit number kept as one
visit, a PDF report as a document, a long text report whole and a result dated to the day as
that day. Through the real gateway, ledger and projection."""

from __future__ import annotations

import base64
from typing import Any

from adapters.hl7v2 import read_hl7v2
from tests.factories import consent_item
from tests.integration.conftest import Running
from tests.integration.record_steps import record_by_type
from tests.integration.test_walking_skeleton import submit
from tests.unit.hl7v2_messages import INSTITUTION, NAME, RID, admission, obx, pv1, result

PDF = b"%PDF-1.4\n% a discharge summary\n"
FINDINGS = "双肺纹理清晰，心影大小正常，未见明显实质性病变。" * 25  # 650 characters


def items(data: bytes) -> list[dict[str, Any]]:
    report = read_hl7v2(data, institution=INSTITUTION)
    assert report.problems == [], report.problems
    return report.items


async def test_an_hl7v2_record_reads_back_as_it_was_sent(exchange: Running) -> None:
    await exchange.register(INSTITUTION, "township_health_centre", "东城镇卫生院")

    # The admission, in GB 18030 as MSH-18 says, without a visit number (PV1-19); with the
    # patient's consent to the centre's own reads.
    admitted = admission(
        "A01", "ADM-1", charset="GB 18030-2000", pv1=pv1("I", "", "20260302091000")
    )
    gb = admitted.decode().removeprefix("\ufeff").encode("gb18030")
    consent = consent_item(RID, "hl7-consent", scope=[INSTITUTION])
    receipts = [await submit(exchange, INSTITUTION, [*items(gb), consent])]
    # The discharge a week later, again without PV1-19: PV1-44 names the same admission.
    discharged = admission("A03", "DIS-1", pv1=pv1("I", "", "202603020910", "20260309100000"))
    receipts.append(await submit(exchange, INSTITUTION, items(discharged)))
    # The lab report: a PDF (ED), a long imaging text (TX), a result dated only to the day.
    report = result(
        obx(
            1,
            "ED",
            "^application^pdf^Base64^" + base64.b64encode(PDF).decode(),
            code="11502-2^检验报告^LN",
        ),
        obx(2, "TX", FINDINGS, code="18782-3^影像所见^LN"),
        obx(3, "NM", "7.2", unit="mmol/L", code="14771-0^空腹血糖^LN", at="20260302"),
    )
    receipts.append(await submit(exchange, INSTITUTION, items(report)))
    assert [r["status"] for r in receipts] == ["accepted"] * 3, receipts
    await exchange.settle()

    # The centre's physician reads the record.
    by_type = await record_by_type(exchange, INSTITUTION, "doctor-li", RID)

    # The name came through GB 18030 as written.
    assert [p["name"][0]["text"] for p in by_type["Patient"]] == [NAME]
    # One visit: the discharge superseded the admission, from admit to discharge.
    [visit] = by_type["Encounter"]
    assert visit["status"] == "finished"
    assert visit["period"] == {
        "start": "2026-03-02T09:10:00+08:00",
        "end": "2026-03-09T10:00:00+08:00",
    }
    # The PDF and the long findings as documents, whole.
    documents = {
        d["content"][0]["attachment"]["contentType"]: d for d in by_type["DocumentReference"]
    }
    assert base64.b64decode(documents["application/pdf"]["content"][0]["attachment"]["data"]) == PDF
    text = documents["text/plain"]["content"][0]["attachment"]["data"]
    assert base64.b64decode(text).decode() == FINDINGS
    # The glucose dated to the day stays that day.
    [glucose] = [o for o in by_type["Observation"] if o["code"]["coding"][0]["code"] == "14771-0"]
    assert glucose["effectiveDateTime"] == "2026-03-02"
