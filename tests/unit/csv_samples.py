"""The sample exports of 桃源村卫生室 (samples/csv/) and its mapping file, as the CSV adapter's
tests read, edit and check them. Synthetic data only; not collected as tests."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from adapters.csv_export import load_mapping, read_csv
from adapters.report import IngestReport

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "csv"
MAPPING_TEXT = (SAMPLES / "taoyuan-vc.mapping.toml").read_text(encoding="utf-8")
MAPPING = load_mapping(MAPPING_TEXT)
INSTITUTION = "taoyuan-vc"
ICD10, LOINC, UCUM = (
    "http://hl7.org/fhir/sid/icd-10",
    "http://loinc.org",
    "http://unitsofmeasure.org",
)

EXPECTED = {  # what each sample export maps to, by kind
    "taoyuan-vc-residents.csv": {"patient": 20},
    "taoyuan-vc-visits.csv": {"encounter": 29, "condition": 29, "observation": 75},
    "taoyuan-vc-prescriptions.csv": {"medication_request": 28},
    "taoyuan-vc-labs.csv": {"observation": 40},
    "taoyuan-vc-immunizations.csv": {"immunization": 3},
}
VISITS = "taoyuan-vc-visits.csv"
ENCODING = {
    "taoyuan-vc-residents.csv": "utf-8-sig",
    VISITS: "gb18030",
    "taoyuan-vc-prescriptions.csv": "gb18030",
    "taoyuan-vc-labs.csv": "utf-8",
    "taoyuan-vc-immunizations.csv": "gb18030",
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def read(name: str, data: bytes | None = None, mapping: Any = MAPPING) -> IngestReport:
    return read_csv(
        sample(name) if data is None else data,
        mapping=mapping,
        institution=INSTITUTION,
        filename=name,
    )


def table(name: str) -> list[list[str]]:
    """A sample export as rows of cells (row 0 the header), to edit in a test."""
    return list(csv.reader(io.StringIO(sample(name).decode(ENCODING[name]), newline="")))


def encoded(rows: list[list[str]], encoding: str = "gb18030") -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode(encoding)


def edited(name: str, changes: dict[tuple[int, str], str]) -> bytes:
    """The export with cells replaced: (spreadsheet row number, column name) → new text."""
    rows = table(name)
    for (n, column), value in changes.items():
        rows[n - 1][rows[0].index(column)] = value
    return encoded(rows, ENCODING[name])


def by_id(report: IngestReport) -> dict[str, dict[str, Any]]:
    return {i["source_id"]: i for i in report.items}


PERSONAL = {
    cell
    for name in EXPECTED
    for row in table(name)[1:]
    for cell in row
    if len(cell) == 18 and cell[:6] == "341122"
} | {row[1] for row in table("taoyuan-vc-residents.csv")[1:]}


def assert_no_patient_data(report: IngestReport) -> None:
    for problem in report.problems:
        assert not any(value in str(problem) for value in PERSONAL)
