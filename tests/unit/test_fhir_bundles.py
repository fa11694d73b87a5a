"""FHIR as senders package it: Bundles of every R4 type, a Bulk Data export (NDJSON) read
line by line and grouped by patient, and a directory whose files name each other's Patients."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.fhir import read_fhir
from adapters.fhir_bulk import MAX_LINE, lend, read_ndjson
from tests.unit.fhir_builders import INSTITUTION, RID, bundle, condition, encounter, patient

BULK = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "fhir-bulk"


class NdjsonFile:
    """Lines of one file, read again from the start each time they are asked for."""

    def __init__(self, name: str, lines: list[bytes] | None = None, path: Path | None = None):
        self.name, self._lines, self._path, self.passes = name, lines, path, 0

    def lines(self) -> Iterator[bytes]:
        self.passes += 1
        if self._path is not None:
            with self._path.open("rb") as f:
                yield from f
        else:
            yield from self._lines or []


def test_a_document_and_a_message_map_their_entries_and_name_their_frames() -> None:
    composition = {"resourceType": "Composition", "id": "doc1", "status": "final"}
    header = {"resourceType": "MessageHeader", "id": "m1"}
    for kind, frame in (("document", composition), ("message", header)):
        report = read_fhir(
            bundle(frame, patient(), encounter(), kind=kind), institution=INSTITUTION
        )
        assert report.problems == [], kind
        assert [i["kind"] for i in report.items] == ["patient", "encounter"]
        assert len(report.skipped) == 1 and frame["resourceType"] in report.skipped[0]
        assert "resource type not mapped" not in report.skipped[0]


def test_a_history_maps_each_resources_newest_version_and_names_the_rest() -> None:
    newer = condition(clinicalStatus={"coding": [{"code": "resolved"}]})
    doc = bundle(patient(), newer, condition(), kind="history")
    doc["entry"].append({"request": {"method": "DELETE", "url": "Condition/c9"}})
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems == []
    conditions = [i for i in report.items if i["kind"] == "condition"]
    assert [c["payload"]["clinical_status"] for c in conditions] == ["resolved"]
    assert any("older version of Condition/c1" in s for s in report.skipped)
    assert any("deletion" in s for s in report.skipped)


def test_the_bulk_export_maps_whole_grouped_by_patient() -> None:
    files = [NdjsonFile(p.name, path=p) for p in sorted(BULK.glob("*.ndjson"))]
    report = read_ndjson(files, institution=INSTITUTION)
    assert report.problems == []
    # Every clinical line of a mapped type is an item; Devices and the log are named.
    lines = {f.name.split(".")[0]: sum(1 for _ in f.lines()) for f in files}
    kinds = Counter(i["kind"] for i in report.items)
    assert kinds == {
        "patient": lines["Patient"],
        "encounter": lines["Encounter"],
        "condition": lines["Condition"],
        "immunization": lines["Immunization"],
        "allergy": lines["AllergyIntolerance"],
    }
    assert sum("Device: resource type not mapped" in s for s in report.skipped) == lines["Device"]
    assert any(s.startswith("log.ndjson: the export's log") for s in report.skipped)
    # Read in two passes over the lines, not held whole (the third is this test's count).
    assert all(f.passes == 3 for f in files if f.name != "log.ndjson")
    # One patient's items travel together, the patient's own first.
    owners = [json.dumps(i["payload"]["patient"], sort_keys=True) for i in report.items]
    runs = [o for n, o in enumerate(owners) if n == 0 or owners[n - 1] != o]
    assert len(runs) == len(set(owners)) == lines["Patient"]
    starts = [n for n, o in enumerate(owners) if n == 0 or owners[n - 1] != o]
    assert all(report.items[n]["kind"] == "patient" for n in starts)


def test_a_bad_line_is_named_by_file_and_line_and_the_rest_maps() -> None:
    good = json.dumps(patient()).encode() + b"\n"
    sick = json.dumps({**condition(), "subject": {"reference": "Patient/p1"}}).encode() + b"\n"
    files = [
        NdjsonFile("Patient.ndjson", [good]),
        NdjsonFile(
            "Condition.ndjson",
            [b"\n", b"{not json\n", b'{"no": "type"}\n', b"[" + b" " * MAX_LINE + b"]\n", sick],
        ),
    ]
    report = read_ndjson(files, institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.json", "Condition.ndjson:2"),
        ("fhir.resource_type", "Condition.ndjson:3"),
        ("fhir.line_too_long", "Condition.ndjson:4"),
    ]
    assert [i["kind"] for i in report.items] == ["patient", "condition"]
    assert report.items[1]["payload"]["patient"] == {"resident_id": RID, "mrn": "MR000123"}


def test_a_resource_may_name_a_patient_kept_in_another_file_of_its_directory() -> None:
    # The Patient in one file, a lone Condition about them in the next.
    lone: dict[str, Any] = {**condition(), "subject": {"reference": "Patient/p1"}}
    alone = read_fhir(lone, institution=INSTITUTION)
    assert [p.code for p in alone.problems] == ["fhir.subject_unresolved"]
    lent = lend([("patient.json", patient()), ("condition.json", lone)], institution=INSTITUTION)
    report = read_fhir(lone, institution=INSTITUTION, lent=lent)
    assert report.problems == []
    assert report.items[0]["payload"]["patient"] == {"resident_id": RID, "mrn": "MR000123"}
    # The document's own Patient wins over a lent copy (no ambiguity from lending it twice).
    both = read_fhir(
        bundle(patient(), encounter(subject={"reference": "Patient?identifier=" + RID})),
        institution=INSTITUTION,
        lent=lend([("same.json", patient())], institution=INSTITUTION),
    )
    assert both.problems == [] and len(both.items) == 2
