"""The demo county: four institutions with their own keys, synthetic residents' records
submitted through NATS by two of them, and a separate consent for most residents.

Running it again reuses the keys and the data: submission ids come from content, so every
repeat is answered with its original receipt and nothing is stored twice.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.envelope import (
    build_envelope,
    load_private_key_pem,
    new_private_key,
    private_key_pem,
    public_key_b64,
)
from adapters.fhir import read_fhir
from adapters.nats import SubmitClient
from domain.identity import RESIDENT_ID_SYSTEM
from domain.submission import submission_key
from exchange.auth.tokens import TokenIssuer
from exchange.bootstrap import Runtime
from exchange.demo.data import DemoResident, demo_bundles, demo_residents
from exchange.demo.referrals import seed_referrals

INSTITUTIONS = [
    ("county-hospital", "青溪县人民医院", "county_hospital"),
    ("dongcheng-thc", "东城镇卫生院", "township_health_centre"),
    ("xishan-thc", "西山乡卫生院", "township_health_centre"),
    ("taoyuan-vc", "桃源村卫生室", "village_clinic"),
]
# The consortium's consent notice (告知书): the clinics showed it on paper, and the patients'
# pages show it (written into the data directory unless one is there already).
CONSENT_NOTICE = (Path(__file__).with_name("consent_notice.txt")).read_bytes()
NOTICE_TITLE = CONSENT_NOTICE.decode().partition("\n")[0]
CONSENT_FROM = datetime(2026, 1, 1, tzinfo=UTC)


def _key(rt: Runtime, code: str) -> Any:
    path = rt.settings.keys_dir / f"{code}.pem"
    if path.exists():
        return load_private_key_pem(path.read_bytes(), rt.settings.profile)
    rt.settings.keys_dir.mkdir(mode=0o700, exist_ok=True)
    key = new_private_key(rt.settings.profile)  # Ed25519 under intl, SM2 under gm
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key))
    return key


def consent_item(institution: str, resident: DemoResident, n: int) -> dict[str, Any]:
    """A separate consent (单独同意) for treatment across the whole consortium."""
    return {
        "source_id": f"Consent/{institution}-consent-{n}",
        "kind": "consent",
        "payload": {
            "patient": {"resident_id": resident.resident_id},
            "consent_type": "separate",
            "scope": ["*"],
            "purposes": ["TREAT"],
            "valid_from": CONSENT_FROM.isoformat(),
            "valid_to": (CONSENT_FROM + timedelta(days=5 * 365)).isoformat(),
            "notice_sha256": hashlib.sha256(CONSENT_NOTICE).hexdigest(),
            "signed_by": "patient",
            # The signed paper form, scanned at the township centre: what lets a consent
            # for the whole consortium count at once (else the patient confirms it).
            "signed_document": {
                "sha256": hashlib.sha256(f"{NOTICE_TITLE} 签字 {n}".encode()).hexdigest(),
                "method": "handwritten-scan",
            },
        },
    }


async def submit_records(
    rt: Runtime, institution: str, key: Any, residents: Sequence[DemoResident], *, consents: bool
) -> list[dict[str, Any]]:
    envelopes = []
    # When they are sent (the exchange refuses envelopes dated far from its clock); the
    # submission ids come from the content alone, so they stay the same from run to run.
    sent_at = datetime.now(UTC)
    for n, bundle in enumerate(demo_bundles(institution, list(residents))):
        report = read_fhir(bundle, institution=institution)
        items = list(report.items)
        if consents:
            items.append(consent_item(institution, residents[n], n))
        envelopes.append(
            build_envelope(institution=institution, items=items, key=key, sent_at=sent_at)
        )
    # Submission ids come from content: what the ledger already holds is not sent again.
    held = await rt.sync(
        rt.ledger.positions_of, [submission_key(institution, e["submission_id"]) for e in envelopes]
    )
    todo = [e for e in envelopes if submission_key(institution, e["submission_id"]) not in held]
    receipts = await SubmitClient(rt.nc, rt.settings.consortium, institution).submit(todo)
    return [receipts.get(e["submission_id"], {"status": "held"}) for e in envelopes]


async def seed_demo(rt: Runtime) -> str:
    """Register the demo county, submit its records through NATS, and say how to look."""
    notice = rt.settings.consent_notice
    if notice is not None and not notice.exists():
        notice.write_bytes(CONSENT_NOTICE)
    keys = {code: _key(rt, code) for code, _, _ in INSTITUTIONS}
    for code, name, level in INSTITUTIONS:
        changed = await rt.sync(
            rt.ledger.register_institution, code, name, level, public_key_b64(keys[code])
        )
        if changed:  # an admin action: audited
            await rt.audit_writer.append(
                {
                    "action": "admin.institution.register",
                    "decision": "permit",
                    "reasons": [],
                    "role": "admin",
                    "person": "hie-demo",
                    "institution": code,
                    "level": level,
                },
                datetime.now(UTC),
            )
    residents = demo_residents()
    # The township centre records every resident's consent except the last one's, so the demo
    # shows a refusal too; the county hospital sends its own records for the first four.
    township = await submit_records(
        rt, "dongcheng-thc", keys["dongcheng-thc"], residents[:-1], consents=True
    )
    township += await submit_records(
        rt, "dongcheng-thc", keys["dongcheng-thc"], residents[-1:], consents=False
    )
    county = await submit_records(
        rt, "county-hospital", keys["county-hospital"], residents[:4], consents=False
    )
    # Referrals: one up to the county and back (follow-up due), one waiting at the township.
    receipts = township + county + await seed_referrals(rt, keys, residents)
    await rt.projection().wait_for(await rt.sync(rt.ledger.max_position))
    new = sum(1 for r in receipts if r["status"] == "accepted" and not r.get("repeat"))
    repeats = sum(1 for r in receipts if r["status"] == "held" or r.get("repeat"))
    rejected = [r for r in receipts if r["status"] == "rejected"]
    issuer = TokenIssuer(rt.settings.secrets.token_key, rt.settings.profile)
    now = datetime.now(UTC)
    physician, _ = issuer.issue(
        person="demo-doctor-li", institution="county-hospital", role="physician", now=now
    )
    regulator, _ = issuer.issue(
        person="demo-regulator-zhao", institution="county-health-bureau", role="regulator", now=now
    )
    township_md, _ = issuer.issue(
        person="demo-doctor-wang", institution="dongcheng-thc", role="physician", now=now
    )
    first = rt.ledger.patient_id(residents[0].resident_id)
    last = rt.ledger.patient_id(residents[-1].resident_id)
    url = rt.endpoints.http_url
    return f"""
county-hie demo is running at {url}
  {len(INSTITUTIONS)} institutions; {len(residents)} residents; submissions through NATS:
  {new} newly accepted, {repeats} already held (not sent again), {len(rejected)} rejected

physician token (demo-doctor-li, county-hospital, 8 h):
  {physician}
regulator token (demo-regulator-zhao, 8 h):
  {regulator}
township physician token (demo-doctor-wang, dongcheng-thc, 8 h):
  {township_md}

try:
  curl -s {url}/fhir/metadata
  curl -s -H "Authorization: Bearer $PHYSICIAN" -H "X-Purpose-Of-Use: TREAT" \\
       "{url}/fhir/Patient?identifier={RESIDENT_ID_SYSTEM}|{residents[0].resident_id}"
  curl -s -H "Authorization: Bearer $PHYSICIAN" -H "X-Purpose-Of-Use: TREAT" \\
       {url}/fhir/Patient/{first}/\\$everything         # consented: the record from 2 institutions
  curl -s -H "Authorization: Bearer $PHYSICIAN" -H "X-Purpose-Of-Use: TREAT" \\
       {url}/fhir/Patient/{last}/\\$everything         # no consent: 403
  curl -s -X POST -H "Authorization: Bearer $PHYSICIAN" -H "Content-Type: application/json" \\
       -d '{{"reason_code":"unconscious","reason":"brought in unconscious after a fall"}}' \\
       {url}/fhir/Patient/{last}/\\$break-glass       # then read it with X-Purpose-Of-Use: ETREAT
  curl -s -H "Authorization: Bearer $REGULATOR" "{url}/fhir/AuditEvent?patient={first}"
  curl -s -H "Authorization: Bearer $TOWNSHIP" -H "X-Purpose-Of-Use: TREAT" \
       {url}/referrals/outbox                        # referred up and back: follow-up due
  curl -s -H "Authorization: Bearer $TOWNSHIP" -H "X-Purpose-Of-Use: TREAT" \
       {url}/referrals/inbox                         # a village clinic's referral, waiting
  curl -s -H "Authorization: Bearer $PHYSICIAN" -H "X-Purpose-Of-Use: TREAT" \
       "{url}/fhir/ServiceRequest?patient={first}"   # the referral as FHIR; Task?focus= its history
  curl -s -H "Authorization: Bearer $REGULATOR" {url}/referrals/statistics
(set PHYSICIAN, REGULATOR and TOWNSHIP to the tokens above). Ctrl-C stops everything.
"""
