"""The read benchmark's synthetic county and its seeding: four institutions, each resident's
record spread over all of them (visits, diagnoses, results, prescriptions, dispensing,
procedures, immunisations, allergies) with the resident's separate consent, submitted through
NATS; then the wait for the projection and the VACUUM ANALYZE autovacuum would have done.
Values are synthetic; resident IDs are valid, made-up GB 11643 numbers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import nats

from adapters.envelope import build_envelope
from adapters.nats import SubmitClient
from domain.resident_id import make_resident_id

INSTITUTIONS = [  # the reading physician works at the first
    ("county-hospital", "青溪县人民医院", "county_hospital"),
    ("dongcheng-thc", "东城镇卫生院", "township_health_centre"),
    ("xishan-thc", "西山乡卫生院", "township_health_centre"),
    ("taoyuan-vc", "桃源村卫生室", "village_clinic"),
]
READER = INSTITUTIONS[0][0]
CONSENTING = INSTITUTIONS[1][0]  # where each resident signed the consent

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = [
    "建国",
    "秀英",
    "桂兰",
    "志强",
    "丽娟",
    "海燕",
    "国华",
    "玉梅",
    "德明",
    "春花",
    "文斌",
    "淑珍",
    "永红",
    "小军",
    "凤英",
]
VITALS = [
    ("8480-6", "收缩压", "mmHg", "mm[Hg]", 120),
    ("8462-4", "舒张压", "mmHg", "mm[Hg]", 78),
    ("8867-4", "心率", "次/分", "/min", 72),
    ("29463-7", "体重", "kg", "kg", 62),
]
LABS = [
    ("2345-7", "葡萄糖", "mmol/L", "mmol/L", 5),
    ("718-7", "血红蛋白", "g/L", "g/L", 128),
    ("2160-0", "肌酐", "μmol/L", "umol/L", 70),
    ("4548-4", "糖化血红蛋白", "%", "%", 6),
]
DIAGNOSES = [
    ("I10", "原发性高血压"),
    ("E11.9", "2型糖尿病"),
    ("J06.9", "急性上呼吸道感染"),
    ("K29.7", "胃炎"),
    ("M54.5", "腰痛"),
]
DRUGS = [
    ("C09AA02", "依那普利片", "10 mg 每日一次"),
    ("A10BA02", "二甲双胍片", "0.5 g 每日三次"),
    ("C08CA01", "氨氯地平片", "5 mg 每日一次"),
    ("J01CA04", "阿莫西林胶囊", "0.5 g 每日三次"),
]
ATC, LOINC = "http://www.whocc.no/atc", "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
NOTICE = hashlib.sha256("青溪县医共体健康信息共享告知书 v1".encode()).hexdigest()
T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def resident_id(n: int) -> str:
    return make_resident_id("341122", date(1940, 1, 1) + timedelta(days=n * 97 % 25000), n % 1000)


def entry_item(inst: str, n: int, k: int, ref: dict[str, str]) -> dict[str, Any]:
    """The k-th clinical entry an institution holds for resident n (synthetic values)."""
    at = T0 + timedelta(days=k * 9, minutes=(n * 37) % 600)
    sid = f"{inst}-{n}-{k}"
    step = k % 10
    if step == 0:
        return {
            "source_id": f"enc-{sid}",
            "kind": "encounter",
            "payload": {
                "patient": ref,
                "encounter_class": "outpatient",
                "status": "finished",
                "start": at.isoformat(),
                "end": (at + timedelta(minutes=15)).isoformat(),
                "department": "全科门诊",
            },
        }
    if step == 1:
        code, display = DIAGNOSES[(n + k) % len(DIAGNOSES)]
        return {
            "source_id": f"dx-{sid}",
            "kind": "condition",
            "payload": {
                "patient": ref,
                "code": {
                    "system": ICD10,
                    "version": "国家临床版2.0",
                    "code": code,
                    "display": display,
                },
            },
        }
    if step in (4, 6):
        code, display, dosage = DRUGS[(n + k) % len(DRUGS)]
        if step == 4:
            return {
                "source_id": f"rx-{sid}",
                "kind": "medication_request",
                "payload": {
                    "patient": ref,
                    "medication": {"system": ATC, "code": code, "display": display},
                    "status": "completed",
                    "authored": at.isoformat(),
                    "dosage_text": dosage,
                    "duration_days": 14,
                },
            }
        return {
            "source_id": f"disp-{sid}",
            "kind": "medication_dispense",
            "payload": {
                "patient": ref,
                "medication": {"system": ATC, "code": code, "display": display},
                "status": "completed",
                "handed_over": at.isoformat(),
                "days_supply": 14,
                "quantity": {"value": "28", "unit": "片"},
            },
        }
    if step == 7:
        return {
            "source_id": f"proc-{sid}",
            "kind": "procedure",
            "payload": {
                "patient": ref,
                "code": {
                    "system": "http://hl7.org/fhir/sid/icd-9-cm",
                    "code": "89.52",
                    "display": "心电图",
                },
                "status": "completed",
                "performed": at.isoformat(),
            },
        }
    if step == 8 and k % 20 == 8:
        return {
            "source_id": f"imm-{sid}",
            "kind": "immunization",
            "payload": {
                "patient": ref,
                "vaccine": {
                    "system": "http://hl7.org/fhir/sid/cvx",
                    "code": "141",
                    "display": "流感疫苗",
                },
                "status": "completed",
                "occurrence": at.isoformat(),
                "dose_number": 1,
            },
        }
    if step == 8 and k == 8:
        return {
            "source_id": f"alg-{sid}",
            "kind": "allergy",
            "payload": {
                "patient": ref,
                "substance": {"system": ATC, "code": "J01CE01", "display": "青霉素"},
                "category": "medication",
                "criticality": "high",
            },
        }
    code, display, unit, ucum, base = (VITALS if step in (2, 3) else LABS)[(n + k) % 4]
    return {
        "source_id": f"obs-{sid}",
        "kind": "observation",
        "payload": {
            "patient": ref,
            "code": {"system": LOINC, "code": code, "display": display},
            "status": "final",
            "category": "vital-signs" if step in (2, 3) else "laboratory",
            "effective": at.isoformat(),
            "value_quantity": {"value": str(base + (n * 7 + k) % 9), "unit": unit, "code": ucum},
        },
    }


def county_items(patients: int, entries: int, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Every institution's items: per resident a registration (with its own record number)
    and its share of the ``entries``; the consenting institution adds the separate consent.
    Every institution's first entry for a resident is a visit (a care relationship)."""
    out: dict[str, list[dict[str, Any]]] = {code: [] for code, _, _ in INSTITUTIONS}
    for n in range(patients):
        rid = resident_id(n)
        name = SURNAMES[n % len(SURNAMES)] + GIVEN[n * 7 % len(GIVEN)]
        for i, (inst, _, _) in enumerate(INSTITUTIONS):
            ref = {"resident_id": rid, "mrn": f"{inst.split('-')[0].upper()}{n:06d}"}
            items = out[inst]
            items.append(
                {
                    "source_id": f"pat-{inst}-{n}",
                    "kind": "patient",
                    "payload": {
                        "patient": ref,
                        "name": name,
                        # As the ID's sequence code says (odd: male): no data-quality flag.
                        "gender": "male" if int(rid[16]) % 2 else "female",
                        "birth_date": rid[6:10] + "-" + rid[10:12] + "-" + rid[12:14],
                    },
                }
            )
            share = entries // len(INSTITUTIONS) + (i < entries % len(INSTITUTIONS))
            items += [entry_item(inst, n, k, ref) for k in range(share)]
            if inst == CONSENTING:
                items.append(consent_item(n, rid, now))
    return out


def consent_item(n: int, rid: str, now: datetime) -> dict[str, Any]:
    """Resident n's separate consent to treatment across the consortium, signed a month ago."""
    return {
        "source_id": f"consent-{n}",
        "kind": "consent",
        "payload": {
            "patient": {"resident_id": rid},
            "consent_type": "separate",
            "scope": ["*"],
            "purposes": ["TREAT"],
            "valid_from": (now - timedelta(days=30)).isoformat(),
            "valid_to": (now + timedelta(days=5 * 365)).isoformat(),
            "notice_sha256": NOTICE,
            "signed_by": "patient",
            "signed_document": {"sha256": NOTICE, "method": "handwritten-scan"},
        },
    }


async def seed(
    nats_url: str,
    consortium: str,
    keys: dict[str, Any],
    items: dict[str, list[dict[str, Any]]],
    per_submission: int,
) -> int:
    """Submit every institution's items through NATS (the four at once); return how many
    submissions were accepted. Raises if any was rejected."""
    # Every envelope is built and signed before the first publish (in a thread: at county
    # size this takes long enough that, on the event loop, NATS requests would time out).
    sent_at = datetime.now(UTC)

    def build(inst: str) -> list[dict[str, Any]]:
        mine = items[inst]
        return [
            build_envelope(
                institution=inst,
                items=mine[i : i + per_submission],
                key=keys[inst],
                sent_at=sent_at,
            )
            for i in range(0, len(mine), per_submission)
        ]

    built = {inst: await asyncio.to_thread(build, inst) for inst, _, _ in INSTITUTIONS}
    nc = await nats.connect(nats_url)
    try:

        async def one(inst: str) -> list[dict[str, Any]]:
            receipts = await SubmitClient(nc, consortium, inst).submit(built[inst], wait=300)
            return list(receipts.values())

        receipts = [
            r
            for group in await asyncio.gather(*(one(i) for i, _, _ in INSTITUTIONS))
            for r in group
        ]
    finally:
        await nc.close()
    refused = [r for r in receipts if r.get("status") != "accepted"]
    if refused:
        problems = refused[0].get("problems", [])[:3]
        raise RuntimeError(
            f"{len(refused)} seed submission(s) were not accepted, e.g. "
            f"{json.dumps(problems, ensure_ascii=False)}"
        )
    return len(receipts)


async def projection_caught_up(db_url: str, timeout: float) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        end = await conn.fetchval("SELECT max(notification_id) FROM ledger_events")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = await conn.fetchval(
                "SELECT position FROM projection_position WHERE name = 'patient_record'"
            )
            if at is not None and at >= end:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the projection did not catch up with the ledger in time")
    finally:
        await conn.close()


async def settle(db_url: str) -> None:
    """VACUUM ANALYZE what the seeding wrote: planner statistics and visibility maps as
    autovacuum would leave them (it would otherwise run during the measurement)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()
