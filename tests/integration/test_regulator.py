"""A regulator's day over HTTP: who saw this patient, why and under what consent; a CSV for the
file; the scope of a suspected breach; the break-glass review queue; and proof — from signed
tree heads — that the answers come from a log that was neither changed nor cut (under either
crypto profile: a SHA-256 tree with Ed25519 heads, or an SM3 tree with SM2 heads)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import cryptoprofile
from audit.checkpoint import verify_note
from audit.merkle import SHA256, SM3, hasher_named, verify_consistency, verify_inclusion
from exchange.servers.nats import stream_name
from tests.factories import record_items, resident
from tests.integration.conftest import PROFILES, Running
from tests.integration.referral_steps import accepted, consortium, referral
from tests.integration.test_walking_skeleton import submit, token


def b64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_regulator_questions_and_proofs(exchange: Running, crypto_profile: str) -> None:
    # A township centre sends two residents' records; one has a separate consent.
    await exchange.register("thc-east")
    consented, other = resident(11), resident(12)
    await submit(exchange, "thc-east", record_items(consented, "a", consent=True))
    await submit(exchange, "thc-east", record_items(other, "b"))
    await exchange.settle()
    pid, other_id = (exchange.rt.ledger.patient_id(r) for r in (consented, other))
    start = datetime.now(UTC) - timedelta(minutes=1)

    doctor = token(exchange, "doctor-liu", "thc-east", "physician")
    regulator = token(exchange, "inspector-sun", "health-bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # Dr Liu reads the consented record twice, is refused the other, then breaks the glass.
        treat = {**doctor, "X-Purpose-Of-Use": "TREAT"}
        for _ in range(2):
            assert (await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat)).is_success
        assert (
            await http.get(f"/fhir/Patient/{other_id}/$everything", headers=treat)
        ).status_code == 403
        assert (
            await http.post(
                f"/fhir/Patient/{other_id}/$break-glass",
                headers=doctor,
                json={"reason_code": "life-threatening", "reason": "急诊抢救，需核对过敏史"},
            )
        ).is_success
        assert (
            await http.get(
                f"/fhir/Patient/{other_id}/$everything",
                headers={**doctor, "X-Purpose-Of-Use": "ETREAT"},
            )
        ).is_success

        # Who saw the consented patient, and under which consent?
        seen = (
            await http.get(
                "/fhir/AuditEvent", headers=regulator, params={"patient": str(pid), "outcome": "0"}
            )
        ).json()
        reads = [e["resource"] for e in seen["entry"]]
        assert [e["subtype"][0]["code"] for e in reads] == ["read", "read"]
        assert all(e["entity"][1]["what"]["reference"].startswith("Consent/") for e in reads)
        # Refusals by agent and purpose; break-glass events; a bad parameter is named.
        refused = (
            await http.get(
                "/fhir/AuditEvent",
                headers=regulator,
                params={"agent": "doctor-liu", "outcome": "4", "purpose": "TREAT"},
            )
        ).json()
        assert refused["total"] == 1
        glass = (
            await http.get("/fhir/AuditEvent", headers=regulator, params={"break-glass": "true"})
        ).json()
        assert [e["resource"]["subtype"][0]["code"] for e in glass["entry"]] == [
            "break-glass",
            "read",
        ]
        dated = (
            await http.get(
                "/fhir/AuditEvent",
                headers=regulator,
                params=[("date", f"ge{start.isoformat()}"), ("agent", "doctor-liu")],
            )
        ).json()
        assert dated["total"] == 5
        bad = await http.get("/fhir/AuditEvent", headers=regulator, params={"outcome": "2"})
        assert bad.status_code == 400 and "outcome" in bad.text

        # The same search as a CSV file.
        exported = await http.get(
            "/audit/export.csv", headers=regulator, params={"agent": "doctor-liu"}
        )
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["decision"] for r in rows] == ["permit", "permit", "deny", "permit", "permit"]

        # Breach scope: everything Dr Liu was given in the window, by patient and category.
        scope = (
            await http.get(
                "/audit/breach-scope",
                headers=regulator,
                params={
                    "agent": "doctor-liu",
                    "start": start.isoformat(),
                    "end": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
                },
            )
        ).json()
        by_patient = {p["patient_id"]: p for p in scope["patients"]}
        assert by_patient[str(pid)]["reads"] == 2
        assert by_patient[str(pid)]["categories"] == [
            "demographics",
            "diagnosis",
            "encounter",
            "vital",
        ]
        assert by_patient[str(pid)]["resource_types"] == [
            "Condition",
            "Encounter",
            "Observation",
            "Patient",
        ]
        assert by_patient[str(other_id)]["break_glass"] is True

        # The break-glass review queue, and a review that clears it.
        queue = (await http.get("/audit/break-glass-review", headers=regulator)).json()
        [pending] = queue["pending"]
        assert (
            pending["patient_id"] == str(other_id) and pending["reason_code"] == "life-threatening"
        )
        reviewed = await http.post(
            f"/audit/break-glass-review/{pending['seq']}",
            headers=regulator,
            json={"outcome": "justified", "comment": "抢救记录已核实"},
        )
        assert reviewed.is_success
        assert (await http.get("/audit/break-glass-review", headers=regulator)).json() == {
            "pending": []
        }

        # A physician gets none of this.
        assert (await http.get("/audit/export.csv", headers=doctor)).status_code == 403

        # Proofs: the latest signed head, a record's inclusion in it, and that it extends an
        # earlier head — all checked here with the exchange's public key only.
        signer = exchange.rt.head_signer()
        public = cryptoprofile.load_public_key(base64.b64encode(signer.public_raw).decode())
        assert cryptoprofile.key_algorithm(public) == exchange.rt.settings.profile.signature
        hash_name = exchange.rt.settings.profile.hash_name

        def verify(message: bytes, signature: bytes) -> bool:
            return cryptoprofile.verify(public, signature, message)

        def verified(note: str):  # type: ignore[no-untyped-def]
            return verify_note(
                note, signer.origin, signer.public_raw, verify, signer.key_type, hash_name
            )

        async def signed_head() -> dict:
            for _ in range(100):
                head = await http.get("/audit/head", headers=regulator)
                if head.status_code == 200:
                    return head.json()
                await asyncio.sleep(0.1)
            raise AssertionError("no head was signed")

        first = await signed_head()
        first_cp = verified(first["checkpoint"])
        # The head names its tree's hash: the proofs are checked with that one.
        hasher = hasher_named(first_cp.hash_name)
        assert hasher is (SM3 if crypto_profile == "gm" else SHA256)
        for _ in range(100):  # the head signer runs every 0.2 s in tests; the log keeps growing
            second = (await http.get("/audit/head", headers=regulator)).json()
            if second["size"] > first["size"]:
                break
            await asyncio.sleep(0.1)
        second_cp = verified(second["checkpoint"])
        assert second_cp.size > first_cp.size

        seq = reads[0]["id"]
        inclusion = (
            await http.get(
                "/audit/proof/inclusion",
                headers=regulator,
                params={"seq": seq, "size": second_cp.size},
            )
        ).json()
        leaf = hasher.leaf_hash(inclusion["record"].encode())
        assert leaf == b64(inclusion["leaf_hash"])
        path = [b64(h) for h in inclusion["proof"]]
        assert verify_inclusion(hasher, int(seq), second_cp.size, leaf, path, second_cp.root)
        other = SHA256 if hasher is SM3 else SM3  # checked with the other profile's hash: never
        assert not verify_inclusion(
            other,
            int(seq),
            second_cp.size,
            other.leaf_hash(inclusion["record"].encode()),
            path,
            second_cp.root,
        )
        consistency = (
            await http.get(
                "/audit/proof/consistency",
                headers=regulator,
                params={"first": first_cp.size, "second": second_cp.size},
            )
        ).json()
        proof = [b64(h) for h in consistency["proof"]]
        assert verify_consistency(
            hasher, first_cp.size, second_cp.size, proof, first_cp.root, second_cp.root
        )
        assert not verify_consistency(
            hasher, first_cp.size, second_cp.size, proof, first_cp.root, hasher.leaf_hash(b"forged")
        )
        assert not verify_consistency(
            other, first_cp.size, second_cp.size, proof, first_cp.root, second_cp.root
        )
        beyond = await http.get(
            "/audit/proof/inclusion",
            headers=regulator,
            params={"seq": 0, "size": second_cp.size + 10**6},
        )
        assert beyond.status_code == 400

    # Every head was published on NATS for witnesses, in order.
    js = exchange.rt.nc.jetstream()
    info = await js.stream_info(stream_name(exchange.rt.settings.consortium, "AUDIT"))
    assert info.state.messages >= 2


async def test_the_csv_export_never_hands_a_spreadsheet_a_formula(exchange: Running) -> None:
    """A member's login may name its people anything: a person named like a spreadsheet
    formula reads a record, and the regulator's CSV shows the name as text, not a formula
    (the same value stays as it is in the JSON routes)."""
    await exchange.register("thc-west")
    await submit(exchange, "thc-west", record_items(resident(13), "c", consent=True))
    await exchange.settle()
    pid = exchange.rt.ledger.patient_id(resident(13))
    sly = '=HYPERLINK("http://127.0.0.1/x","click")'
    for name in (sly, "+1-2", "@SUM(A1)", "-3"):
        reader = {**token(exchange, name, "thc-west", "physician"), "X-Purpose-Of-Use": "TREAT"}
        async with httpx.AsyncClient(base_url=exchange.url) as http:
            assert (await http.get(f"/fhir/Patient/{pid}/$everything", headers=reader)).is_success
    regulator = token(exchange, "inspector-sun", "health-bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        exported = await http.get(
            "/audit/export.csv", headers=regulator, params={"patient": str(pid)}
        )
        events = (
            await http.get("/fhir/AuditEvent", headers=regulator, params={"patient": str(pid)})
        ).json()
    persons = [r["person"] for r in csv.DictReader(io.StringIO(exported.text))]
    assert sorted(p for p in persons if p) == sorted(["'" + sly, "'+1-2", "'@SUM(A1)", "'-3"])
    assert not any(line.startswith(("=", "+", "-", "@")) for line in exported.text.splitlines())
    assert json.dumps(sly) in json.dumps(events)  # the record itself keeps the name as it is


async def test_a_read_of_several_patients_is_found_by_each_of_them(exchange: Running) -> None:
    """The county hospital's referral inbox shows two residents' referrals at once: each
    resident's "who accessed my record" lists that read, and so does the regulator's breach
    scope for the physician who made it."""
    await consortium(exchange)
    first, second = resident(71), resident(72)
    await accepted(exchange, "thc-east", [referral(first, "ref-a")])
    await accepted(exchange, "thc-east", [referral(second, "ref-b")])
    await exchange.settle()
    ids = [str(exchange.rt.ledger.patient_id(r)) for r in (first, second)]
    start = datetime.now(UTC) - timedelta(minutes=1)
    doctor = {**token(exchange, "doctor-zhou", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    regulator = token(exchange, "inspector-sun", "health-bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        inbox = await http.get("/referrals/inbox", headers=doctor)
        assert inbox.status_code == 200
        read_id = inbox.headers["x-request-id"]
        seq = await exchange.rt.pool.fetchval(
            "SELECT seq FROM audit_log WHERE record_text::jsonb->>'request_id' = $1", read_id
        )
        for pid in ids:
            own = token(exchange, pid, "patient", "patient")
            events = (
                await http.get("/fhir/AuditEvent", headers=own, params={"patient": pid})
            ).json()
            [inbox_read] = [
                e["resource"] for e in events["entry"] if e["resource"]["id"] == str(seq)
            ]
            # The patient sees themself among those the read touched, not the other one.
            assert [e["what"]["reference"] for e in inbox_read["entity"]] == [f"Patient/{pid}"]
            regulator_view = (
                await http.get("/fhir/AuditEvent", headers=regulator, params={"patient": pid})
            ).json()
            [seen] = [
                e["resource"] for e in regulator_view["entry"] if e["resource"]["id"] == str(seq)
            ]
            assert sorted(e["what"]["reference"] for e in seen["entity"]) == sorted(
                f"Patient/{p}" for p in ids
            )
        scope = (
            await http.get(
                "/audit/breach-scope",
                headers=regulator,
                params={
                    "agent": "doctor-zhou",
                    "start": start.isoformat(),
                    "end": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
                },
            )
        ).json()
    assert sorted(p["patient_id"] for p in scope["patients"]) == sorted(ids)
