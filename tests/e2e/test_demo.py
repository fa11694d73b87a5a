"""`hie demo`, `hie submit` and `hie token` as a new user drives them, on the embedded servers."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import psutil

from exchange.demo.data import demo_bundles, demo_residents
from exchange.demo.seed import INSTITUTIONS
from tests.e2e.drive import Demo, hie

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "testdata"


def test_demo_serves_a_consented_county_record_and_restarts_without_doubling(
    tmp_path: Path,
) -> None:
    # First run: the demo county is seeded through NATS and the API is up.
    demo = Demo(tmp_path, tmp_path / "first.log")
    try:
        assert re.search(
            r"(\d+) newly accepted, 0 already held \(not sent again\), 0 rejected", demo.out
        )
        consented, unconsented = demo.patients[0], demo.patients[1]
        doctor = {"Authorization": f"Bearer {demo.physician}", "X-Purpose-Of-Use": "TREAT"}
        with httpx.Client(base_url=demo.url) as http:
            assert http.get("/fhir/metadata").json()["fhirVersion"] == "4.0.1"
            record = http.get(f"/fhir/Patient/{consented}/$everything", headers=doctor)
            assert record.status_code == 200
            sources = {
                e["resource"]["meta"]["source"]
                for e in record.json()["entry"][1:]
                if e["search"]["mode"] == "match"
            }
            assert sources == {
                "urn:county-hie:institution:dongcheng-thc",
                "urn:county-hie:institution:county-hospital",
            }
            assert (
                http.get(f"/fhir/Patient/{unconsented}/$everything", headers=doctor).status_code
                == 403
            )
            # The demo's referrals: the township's outbox holds one referred up and back,
            # its follow-up due; its inbox a village clinic's referral, waiting.
            township = {"Authorization": f"Bearer {demo.township}", "X-Purpose-Of-Use": "TREAT"}
            outbox = http.get("/referrals/outbox", headers=township).json()["referrals"]
            assert [(r["status"], r["to_institution"], r["patient_id"]) for r in outbox] == [
                ("back_referred", "county-hospital", consented)
            ]
            assert outbox[0]["follow_up_due"] and not outbox[0]["follow_up_overdue"]
            inbox = http.get("/referrals/inbox", headers=township).json()["referrals"]
            assert [(r["status"], r["from_institution"]) for r in inbox] == [
                ("requested", "taoyuan-vc")
            ]
            requests = http.get(
                "/fhir/ServiceRequest", params={"patient": consented}, headers=doctor
            ).json()
            assert [e["resource"]["status"] for e in requests["entry"]] == ["active"]

        # While it runs, a village clinic submits a FHIR file with `hie submit` ...
        resident = demo_residents(count=8)[7]
        bundle = tmp_path / "visit.json"
        bundle.write_text(json.dumps(demo_bundles("taoyuan-vc", [resident])[0], ensure_ascii=False))
        sent = hie("submit", str(bundle), "--institution", "taoyuan-vc", env=demo.env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert re.search(r"visit\.json: sent: \d+ item\(s\) accepted in 1 submission", sent.stdout)
        # ... sends it again (nothing is stored twice) ...
        again = hie("submit", str(bundle), "--institution", "taoyuan-vc", env=demo.env)
        assert again.returncode == 0 and "visit.json: sent before: its " in again.stdout
        assert "item(s) already held (nothing stored twice)" in again.stdout
        # ... and a directory of HL7 v2 messages: what maps is accepted, the rest is refused
        # with its reason before sending, and the exit status says something was refused.
        # Its referral messages (REF^I12) name the county hospital by an HL7 facility.
        hl7 = hie(
            "submit",
            str(SHARED / "hl7v2" / "microsoft-fhir-converter"),
            "--institution",
            "taoyuan-vc",
            "--facility",
            "RHHFacility=county-hospital",
            env=demo.env,
        )
        assert hl7.returncode == 1, hl7.stdout + hl7.stderr
        assert "refused before sending: MSH-9: " in hl7.stdout
        assert "hl7.unsupported_type" in hl7.stdout
        assert re.search(
            r"ADT-A01-01\.hl7: (sent|partly refused): \d+ item\(s\) accepted", hl7.stdout
        )
        assert "REF-I12-01.hl7: sent: 2 item(s) accepted in 1 submission(s)" in hl7.stdout
        # The same message control id in later files: the exchange holds a source id once,
        # and each refusal names the item and why.
        assert "ADT-A01-02.hl7: refused: item MSG00001/PID/1, source_id: " in hl7.stdout

        # ... and the village clinic's CSV exports, its mapping file found beside them: the dry
        # run reports file by file and sends nothing; then they are sent; a second run sends
        # nothing again (the journal of accepted ids, and content-derived submission ids).
        csv = str(ROOT / "samples" / "csv")
        dry = hie("submit", csv, "--institution", "taoyuan-vc", "--dry-run", env=demo.env)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert (
            "taoyuan-vc-labs.csv: csv; 40 item(s) in 1 submission(s) (observation 40)" in dry.stdout
        )
        assert "dry run: 5 file(s), 5 submission(s) with 224 item(s) would be sent" in dry.stdout
        first = hie("submit", csv, "--institution", "taoyuan-vc", env=demo.env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "5 submission(s) newly accepted, 0 already held, 0 rejected" in first.stdout
        assert "items/s" in first.stderr  # the progress line
        second = hie("submit", csv, "--institution", "taoyuan-vc", env=demo.env)
        assert "0 submission(s) newly accepted, 5 already held, 0 rejected" in second.stdout

        # The township centre collects its notifications: the steps of its referral up and
        # back, and the village clinic's referral to it, in order; then nothing more.
        told = hie("notifications", "--institution", "dongcheng-thc", env=demo.env)
        assert told.returncode == 0, told.stderr
        events = [(n["referral"], n["event"]) for n in map(json.loads, told.stdout.splitlines())]
        assert events == [
            ("dongcheng-thc/DEMO-REF-1", e) for e in ("accept", "arrive", "complete", "back_refer")
        ] + [("taoyuan-vc/DEMO-REF-2", "request")]
        assert hie("notifications", "--institution", "dongcheng-thc", env=demo.env).stdout == ""

        # The read models are rebuilt from the ledger while the exchange runs.
        rebuilt = hie("projections", "rebuild", env=demo.env)
        assert rebuilt.returncode == 0, rebuilt.stderr
        with httpx.Client(base_url=demo.url) as http:
            for _ in range(100):
                again_record = http.get(f"/fhir/Patient/{consented}/$everything", headers=doctor)
                if again_record.status_code == 200 and len(again_record.json()["entry"]) == len(
                    record.json()["entry"]
                ):
                    break
                time.sleep(0.1)
            assert again_record.json()["entry"] == record.json()["entry"]

        # A token issued from the command line works against the running exchange.
        issued = hie(
            "token",
            "--person",
            "inspector-2",
            "--institution",
            "bureau",
            "--role",
            "regulator",
            env=demo.env,
        )
        assert issued.returncode == 0, issued.stderr
        with httpx.Client(base_url=demo.url) as http:
            audit = http.get(
                "/fhir/AuditEvent",
                params={"patient": unconsented},
                headers={"Authorization": f"Bearer {issued.stdout.strip()}"},
            )
            assert audit.status_code == 200
            assert [e["resource"]["outcome"] for e in audit.json()["entry"]] == ["4"]

        # The operator's view: alive, ready, and /metrics for an administrator's token.
        admin = hie(
            "token", "--person", "ops-1", "--institution", "bureau", "--role", "admin", env=demo.env
        )
        with httpx.Client(base_url=demo.url) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").json() == {"status": "ready"}
            scraped = http.get(
                "/metrics", headers={"Authorization": f"Bearer {admin.stdout.strip()}"}
            )
        assert scraped.status_code == 200
        assert 'hie_submissions_total{institution="county-hospital",outcome="accepted"}' in (
            scraped.text
        )
        assert not any(p in scraped.text for p in demo.patients)
    finally:
        code = demo.stop()
    # Ctrl-C stops every process the demo started.
    assert code == 0
    assert not [p for p in demo.children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    # Second run: the same data, nothing submitted twice.
    second = Demo(tmp_path, tmp_path / "second.log")
    try:
        assert re.search(
            r" 0 newly accepted, (\d+) already held \(not sent again\), 0 rejected", second.out
        )
        assert second.patients == demo.patients
    finally:
        assert second.stop() == 0

    # Every line both runs logged is JSON; they say what happened; and none of them holds a
    # seeded patient's identifier, name or clinical value, nor a patient's regional id.
    records = [json.loads(line) for run in (demo, second) for line in log_lines(run.log)]
    said = [r["message"] for r in records]
    assert {r["level"] for r in records} >= {"INFO"}
    for expected in ("exchange starting", "exchange serving HTTP", "exchange stopped"):
        assert said.count(expected) == 2, expected
    assert any(m.startswith("gateway answered") for m in said)
    words, values = seeded_patient_data()
    for line in (json.dumps(r, ensure_ascii=False) for r in records):
        assert not [w for w in [*words, *demo.patients] if w in line], line
        assert not [v for v in values if v.search(line)], line


def log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def seeded_patient_data() -> tuple[set[str], list[re.Pattern[str]]]:
    """What the demo's patients are: identifiers, names, diagnoses and measurements (as
    words), and each measured value beside its unit or as a field's value (as patterns)."""
    words: set[str] = {"mmHg", "mm[Hg]", "mmol/L"}
    values: list[re.Pattern[str]] = []
    residents = demo_residents(count=8)
    for code, *_ in INSTITUTIONS:
        for bundle in demo_bundles(code, residents):
            for entry in bundle["entry"]:
                resource = entry["resource"]
                for identifier in resource.get("identifier", []):
                    words.add(identifier["value"])
                words |= {name["text"] for name in resource.get("name", [])}
                words |= {c["display"] for c in resource.get("code", {}).get("coding", [])}
                if quantity := resource.get("valueQuantity"):
                    number = re.escape(str(quantity["value"]))
                    values.append(
                        re.compile(rf"(?<![\d.]){number}\s*(mm|%)|value\W{{0,4}}{number}(?![\d])")
                    )
    return words, values
