"""`hie submit` with FHIR spread over files: a Bulk Data export's NDJSON read together line by
line, and a directory whose files name each other's Patients."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from adapters.fhir_bulk import MAX_LINE
from domain.submission import validate_envelope
from exchange.cli.main import hie
from exchange.cli.submit_files import (
    INPUT_CODES,
    MAX_FILE_BYTES,
    NdjsonFile,
    Reader,
    detect,
    expand,
    exports,
    lent_by,
)
from tests.unit.fhir_builders import INSTITUTION, RID, bundle, condition, observation, patient

BULK = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "fhir-bulk"


def test_an_ndjson_file_is_known_by_its_name_not_its_first_brace() -> None:
    assert detect(Path("Patient.000.ndjson"), b'{"resourceType":"Patient"') == "ndjson"
    assert detect(Path("Patient.json"), b'{"resourceType":"Patient"') == "fhir"


def test_the_bulk_export_is_one_read_sent_in_envelopes_the_gateway_takes() -> None:
    files = expand([str(BULK)])
    assert not any(f.name.startswith("LICENSE") for f in files)  # the export's licence
    found = exports(files)
    assert list(found) == [BULK] and len(found[BULK]) == len(list(BULK.glob("*.ndjson")))
    first = Reader(INSTITUTION).read_export(BULK, found[BULK])
    assert first.report.problems == [] and first.fmt == "ndjson"
    kinds = Counter(i["kind"] for e in first.envelopes for i in e["events"])
    assert kinds["patient"] == 13 and kinds["encounter"] == 1215
    assert all(validate_envelope(e)[0] is not None for e in first.envelopes)
    # The same export read again makes the same submissions (a second run is recognised).
    again = Reader(INSTITUTION).read_export(BULK, found[BULK])
    assert [e["submission_id"] for e in again.envelopes] == [
        e["submission_id"] for e in first.envelopes
    ]


def test_an_over_long_line_is_cut_and_the_next_line_still_read(tmp_path: Path) -> None:
    export = tmp_path / "Condition.ndjson"
    with export.open("wb") as f:
        f.write(b'{"resourceType": "Condition", "note": "' + b"x" * (MAX_LINE + 10) + b'"}\n')
        f.write(b'{"resourceType": "Condition", "id": "c2"}\n')
    lines = list(NdjsonFile(export).lines())
    assert len(lines) == 2 and len(lines[0]) == MAX_LINE + 1 and lines[1].endswith(b'"c2"}\n')


def test_a_file_may_name_a_patient_kept_in_another_file_of_the_run(tmp_path: Path) -> None:
    (tmp_path / "patient.json").write_text(json.dumps(patient()), encoding="utf-8")
    lone = {**condition(), "subject": {"reference": "Patient/p1"}}
    (tmp_path / "condition.json").write_text(json.dumps(lone), encoding="utf-8")
    files = expand([str(tmp_path)])
    reader = Reader(INSTITUTION, lent=lent_by(files, INSTITUTION))
    read = {f.name: reader.read(f) for f in files}
    assert all(r.report.problems == [] for r in read.values())
    [item] = read["condition.json"].envelopes[0]["events"]
    assert item["payload"]["patient"]["resident_id"] == RID
    # Without the other file, the condition names no patient and is refused.
    alone = Reader(INSTITUTION).read(tmp_path / "condition.json")
    assert [p.code for p in alone.report.problems] == ["fhir.subject_unresolved"]


def test_the_senders_time_zone_reads_a_time_sent_without_its_offset(tmp_path: Path) -> None:
    # A clinic in Xinjiang keeps its clocks on Urumqi time (UTC+6).
    doc = bundle(patient(), observation(effectiveDateTime="2026-03-02T09:25:00"))
    path = tmp_path / "visit.json"
    path.write_text(json.dumps(doc, default=float), encoding="utf-8")
    read = Reader(INSTITUTION, zone=ZoneInfo("Asia/Urumqi")).read(path)
    [_, result] = read.envelopes[0]["events"]
    assert result["payload"]["effective"] == "2026-03-02T09:25:00+06:00"
    # The command refuses a zone that is none, before reading anything.
    refused = CliRunner(env={"HIE_DATA_DIR": str(tmp_path / "data")}).invoke(
        hie,
        [
            "submit",
            str(path),
            "--institution",
            INSTITUTION,
            "--dry-run",
            "--time-zone",
            "Mars/Base",
        ],
    )
    assert refused.exit_code == 2 and "option.time_zone" in refused.stderr


def test_a_file_too_large_to_read_whole_is_refused_by_name(tmp_path: Path) -> None:
    huge = tmp_path / "export.json"
    with huge.open("wb") as f:  # sparse: its size without its bytes
        f.truncate(MAX_FILE_BYTES + 1)
    result = Reader(INSTITUTION).read(huge)
    assert [p.code for p in result.report.problems] == ["file.too_large"]
    assert "file.too_large" in INPUT_CODES  # the run stops before anything is sent
