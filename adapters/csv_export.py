"""CSV exports of old clinic software → canonical submission items. A pure mapper: no IO.

Village clinics (村卫生室) and township public-health (公卫) systems can often only export CSV.
Each institution ships a mapping file (adapters/csv_mapping.py, samples/csv/) saying which
columns hold which fields, the file's encoding and delimiter (Chinese exports are often
GB18030), and how its local codes and units become ICD-10, LOINC, ATC, CVX and UCUM.

Each section of the mapping that reads a file makes one item per row: ``source_id`` is the
section name and the row's id columns (``visit:SF20260302001``), so a re-export of the same rows
gives the same source_ids and the ledger keeps each once. Times without an offset are taken in
the mapping's ``timezone`` (default Asia/Shanghai, +08:00); a date alone is midnight there.

A row with any problem is left out whole (every section's item of it); the others still map.
Problems name ``row N column <name>`` (row 1 is the header, as a spreadsheet counts) and never
repeat a cell, which may be patient data. A column the mapping names but the header lacks
refuses the file, in one problem naming the missing columns.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from fnmatch import fnmatchcase
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from adapters.csv_mapping import (
    CsvMapping,
    FileSpec,
    MappingError,
    Section,
    Source,
    load_mapping,
)
from adapters.csv_row import Row, _compact
from adapters.csv_sections import MAPPERS
from adapters.report import IngestReport, check_item
from domain.errors import InvalidResidentId
from domain.problems import Problem
from domain.resident_id import parse_resident_id

__all__ = ["CsvMapping", "MappingError", "load_mapping", "read_csv"]

_HEALTH_CARD = re.compile(r"[0-9A-Za-z]{6,32}")
# Row id cells are percent-encoded apart from these, so ids with spaces or "|" stay one token
# and a combination of columns ("|"-joined) can never collide with another.
_ID_SAFE = "!$&'()*+,-./:;=?@[]^_`{}~"


def read_csv(
    data: bytes, *, mapping: CsvMapping, institution: str, filename: str = ""
) -> IngestReport:
    """Map one export file by the institution's mapping; say what was refused and where.

    ``filename`` picks the mapping's ``[files.<name>]`` table by its ``pattern``; without it,
    the mapping must have only one.
    """
    report = IngestReport()
    if institution != mapping.institution:
        report.problems.append(
            Problem(
                "csv.institution",
                f"the mapping is that of institution {mapping.institution}, not of {institution}",
                "mapping",
            )
        )
        return report
    picked = _pick(mapping, filename, report)
    text = _decode(data, *picked, report) if picked else None
    if picked is None or text is None:
        return report
    spec_name, spec = picked
    sections = [(n, s) for n, s in mapping.sections.items() if s.file == spec_name]
    rows = _rows(text, spec, report)
    if not rows:
        report.problems.append(Problem("csv.empty", "the file has no header row", "file"))
        return report
    header = [h.strip() for h in rows[0]]
    if not _header_ok(header, _needed(mapping, spec, sections), report):
        return report
    width, position = len(header), {h: i for i, h in enumerate(header)}
    seen: dict[str, tuple[int, dict[str, Any]]] = {}  # source_id → (row, item)
    for n, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue  # blank lines at the end of an export
        if len(cells) != width:
            report.problems.append(
                Problem(
                    "csv.row_width",
                    f"the row has {len(cells)} cells, the header {width}",
                    f"row {n}",
                )
            )
            continue
        row = Row(n, {h: cells[i] for h, i in position.items()}, mapping)
        patient = _patient(row, spec)
        items = [item for name, s in sections if (item := _item(row, name, s, spec, patient))]
        for item in items:
            if not row.problems:
                row.problems += check_item(
                    item, where=f"row {n} [{item['source_id']}]", source_id=item["source_id"]
                )
        if not row.problems and (items := _first_time(row, items, seen, report)):
            seen.update((i["source_id"], (n, i)) for i in items)
        report.problems += row.problems
        report.items += [] if row.problems else items
    if len(rows) == 1:
        report.skipped.append("file: a header and no rows (nothing to map)")
    return report


def _first_time(
    row: Row,
    items: list[dict[str, Any]],
    seen: dict[str, tuple[int, dict[str, Any]]],
    report: IngestReport,
) -> list[dict[str, Any]]:
    """A row exported twice in one file is sent once; the same id with other content is a
    problem, since which of the two is right is not known."""
    earlier = [seen[i["source_id"]] for i in items if i["source_id"] in seen]
    if not earlier:
        return items
    if all(item in [e for _, e in earlier] for item in items):
        report.skipped.append(f"row {row.n}: the same as row {earlier[0][0]} (sent once)")
    else:
        section = row.mapping.section(items[0]["source_id"].split(":")[0])
        columns = section.id or row.mapping.files[section.file].id
        row.bad(
            "csv.duplicate_id",
            f"the row id repeats row {earlier[0][0]}, with other content: export each row once",
            Source(tuple(columns)),
        )
    return []


def _pick(mapping: CsvMapping, filename: str, report: IngestReport) -> tuple[str, FileSpec] | None:
    if filename:
        base = PurePath(filename.replace("\\", "/")).name.lower()
        found = [(n, f) for n, f in mapping.files.items() if fnmatchcase(base, f.pattern.lower())]
    else:
        found = list(mapping.files.items()) if len(mapping.files) == 1 else []
    if len(found) == 1:
        return found[0]
    if not filename:
        why = "give the file's name so the mapping can pick its [files.<name>] table"
    elif not found:  # the name itself is not repeated: it may name a person
        why = "the file name matches no [files.<name>] pattern of the mapping"
    else:
        why = f"the file name matches more than one [files] pattern: {', '.join(dict(found))}"
    report.problems.append(Problem("csv.no_mapping", why, "file"))
    return None


def _decode(data: bytes, name: str, spec: FileSpec, report: IngestReport) -> str | None:
    utf8 = spec.encoding in ("utf-8", "utf-8-sig")
    if data.startswith(codecs.BOM_UTF8) and not utf8:
        report.problems.append(
            Problem(
                "csv.encoding",
                "the file starts with a UTF-8 byte order "
                f"mark but files.{name}.encoding is {spec.encoding}: "
                "set it to utf-8-sig",
                "file",
            )
        )
        return None
    try:  # UTF-8 with or without the BOM Excel writes
        text = data.decode("utf-8-sig" if utf8 else spec.encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        report.problems.append(
            Problem(
                "csv.encoding",
                f"the file is not {spec.encoding} text (line {line}): check files.{name}.encoding",
                "file",
            )
        )
        return None
    return text.removeprefix("\ufeff")


def _rows(text: str, spec: FileSpec, report: IngestReport) -> list[list[str]]:
    rows: list[list[str]] = []
    try:
        rows.extend(csv.reader(io.StringIO(text, newline=""), delimiter=spec.delimiter))
    except csv.Error:  # the reader's message may quote the text: not repeated
        report.problems.append(
            Problem(
                "csv.malformed",
                "the file cannot be read as CSV from this "
                "row on (a quote left open, or a cell over 131072 characters): the "
                "rows after it were not read",
                f"row {len(rows) + 1}",
            )
        )
    return rows


def _needed(mapping: CsvMapping, spec: FileSpec, sections: list[tuple[str, Section]]) -> list[str]:
    needed = [*spec.id, *(c for c in (spec.resident_id, spec.mrn, spec.health_card) if c)]
    for _, s in sections:
        needed += [*(s.id or []), *(c for src in s.sources().values() for c in src.columns)]
        needed += _encounter_columns(mapping, s)
    return list(dict.fromkeys(needed))


def _encounter_columns(mapping: CsvMapping, s: Section) -> list[str]:
    target = getattr(s, "encounter", None)
    if target is None:
        return []
    visit = mapping.section(target)
    return list(getattr(s, "encounter_id", None) or visit.id or mapping.files[visit.file].id)


def _header_ok(header: list[str], needed: list[str], report: IngestReport) -> bool:
    missing = [c for c in needed if c not in header]
    twice = [c for c in needed if header.count(c) > 1]
    if missing:
        hint = (
            " (none of them is: is the mapping's encoding or delimiter right?)"
            if len(missing) == len(needed)
            else ""
        )
        report.problems.append(
            Problem(
                "csv.missing_columns",
                f"the header lacks column(s) the mapping names: {', '.join(missing)}{hint}",
                "header",
            )
        )
    if twice:
        report.problems.append(
            Problem(
                "csv.duplicate_columns",
                f"the header has these columns more than once: {', '.join(twice)}",
                "header",
            )
        )
    return not missing and not twice


def _item(
    row: Row, name: str, s: Section, spec: FileSpec, patient: dict[str, str]
) -> dict[str, Any] | None:
    if s.optional and row.text(getattr(s, s.main)) is None:
        return None  # e.g. no fasting glucose taken at this visit
    source_id = _row_id(row, name, s.id or spec.id)
    before = len(row.problems)
    payload = {"patient": patient, **MAPPERS[s.kind](row, s)}
    if encounter := _encounter_ref(row, s):
        payload["encounter"] = encounter
    if len(row.problems) > before or source_id is None:
        return None
    return {"source_id": source_id, "kind": s.kind, "payload": _compact(payload)}


def _row_id(row: Row, section: str, columns: list[str]) -> str | None:
    parts = [row.cells[c].strip() for c in columns]
    if not all(parts):
        row.bad(
            "csv.no_id",
            "the row id is empty: every row needs its id columns",
            Source(tuple(columns)),
        )
        return None
    source_id = f"{section}:" + "|".join(quote(p, safe=_ID_SAFE) for p in parts)
    if len(source_id) > 200:
        row.bad(
            "csv.id_too_long",
            "the row id is too long for a source_id (200 characters)",
            Source(tuple(columns)),
        )
        return None
    return source_id


def _patient(row: Row, spec: FileSpec) -> dict[str, str]:
    ref: dict[str, str] = {}
    if spec.resident_id and (rid := row.text(Source((spec.resident_id,)))):
        try:
            ref["resident_id"] = parse_resident_id(rid).value
        except InvalidResidentId as exc:  # its message names the rule, never the number
            row.bad(exc.code, exc.message, Source((spec.resident_id,)))
    if spec.mrn and (mrn := row.text(Source((spec.mrn,)))):
        if len(mrn) > 128:
            row.bad(
                "csv.mrn", "the patient number is longer than 128 characters", Source((spec.mrn,))
            )
        ref["mrn"] = mrn
    if spec.health_card and (card := row.text(Source((spec.health_card,)))):
        if not _HEALTH_CARD.fullmatch(card):
            row.bad(
                "csv.health_card",
                "a health card number is 6-32 letters or digits",
                Source((spec.health_card,)),
            )
        ref["health_card"] = card
    if not ref:
        named = tuple(c for c in (spec.resident_id, spec.mrn, spec.health_card) if c)
        row.bad(
            "csv.no_patient",
            "the row names no patient: its patient columns are empty",
            Source(named),
        )
    return ref


def _encounter_ref(row: Row, s: Section) -> str | None:
    target = getattr(s, "encounter", None)
    if target is None:
        return None
    columns = _encounter_columns(row.mapping, s)
    parts = [row.cells[c].strip() for c in columns]
    # A prescription written outside a visit has no visit number: it maps without the link.
    return f"{target}:" + "|".join(quote(p, safe=_ID_SAFE) for p in parts) if all(parts) else None
