"""FHIR read across files: a Bulk Data export (NDJSON, one resource per line, one file per
type, as ``$export`` writes it) and the other files of a directory. Pure: the caller opens
the files (exchange/cli/submit_bulk.py) and hands over their lines.

An export is read in two passes over its lines, never whole: the first maps the Patients and
keeps what resolves references (each Patient's identifiers, the Organizations, Locations,
Practitioners and Medications); the second maps every other resource, one line at a time,
against that. The items are returned grouped by patient, each patient's own item first, so
that one patient's record travels together (the exchange sees who a visit is about before
the visit). What is kept in memory is the items and the small index, not the resources.

A reference to an Encounter (or another clinical resource) of the export is not looked up:
it names the item by its ``Type/id`` as this adapter names every resource, so the link holds
whichever file the target is in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import tzinfo
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from adapters.fhir import (
    DEFAULT_ZONE,
    DIRECTORY_TYPES,
    Document,
    map_entry,
    parse_entry,
)
from adapters.fhir_context import Entry, Index, Lent
from adapters.report import IngestReport
from domain.problems import Problem

MAX_LINE = 8_000_000  # one resource; a document larger than this is not a clinical record
# Lines of an export's log (log.ndjson: kickoff, status, manifest) are not resources.
LOG_FILE = "log.ndjson"


class Lines(Protocol):
    """One NDJSON file: its name, and a fresh iterator over its lines each time it is asked
    (each at most ``MAX_LINE + 1`` bytes: a longer one is cut there and refused)."""

    name: str

    def lines(self) -> Iterable[bytes]: ...


def read_ndjson(
    files: Sequence[Lines],
    *,
    institution: str,
    institutions: Mapping[str, str] | None = None,
    zone: tzinfo | None = None,
) -> IngestReport:
    """Map an export's NDJSON files to canonical items, grouped by patient."""
    report = IngestReport()
    local = zone if zone is not None else ZoneInfo(DEFAULT_ZONE)
    index = Index(institution, institutions or {})
    groups: dict[str, list[dict[str, Any]]] = {}
    data = [f for f in files if f.name.rsplit("/", 1)[-1] != LOG_FILE]
    for f in files:
        if f not in data:
            report.skipped.append(f"{f.name}: the export's log, not resources")
    # Pass 1: the Patients (mapped) and what references resolve to (kept).
    for f in data:
        for path, raw in _resources(f, report):
            rtype = raw["resourceType"]
            if rtype in DIRECTORY_TYPES:
                rid = raw.get("id")
                index.add(Entry(path, rtype, raw, f"{rtype}/{rid}" if isinstance(rid, str) else ""))
            elif rtype == "Patient":
                entry = parse_entry(raw, path, None, report, local)
                if entry is not None:
                    index.add(entry)
                    _grouped(entry, index, report, groups)  # works out its ref, kept by path
                    entry.raw, entry.resource = {}, None  # the ref is all that is needed
    # Pass 2: everything else, a line at a time.
    for f in data:
        for path, raw in _resources(f, IngestReport()):  # its problems were said in pass 1
            if raw["resourceType"] in (*DIRECTORY_TYPES, "Patient"):
                continue
            entry = parse_entry(raw, path, None, report, local)
            if entry is not None:
                _grouped(entry, index, report, groups)
    report.items = [item for items in groups.values() for item in items]
    return report


def lend(docs: Iterable[tuple[str, Document]], *, institution: str) -> Lent:
    """What the FHIR files of one directory lend each other: every Patient and directory
    resource, so that a resource in one file may name a Patient kept in another."""
    lent = Lent()
    for name, doc in docs:
        report = IngestReport()  # a file's own problems are said when it is read
        data = _as_json(doc)
        if data is None:
            continue
        for where, raw in _lendable(data):
            path = f"{name}: {where}"
            rtype = raw["resourceType"]
            if rtype == "Patient":
                entry = parse_entry(raw, path, None, report, ZoneInfo(DEFAULT_ZONE))
                if entry is not None:
                    lent.add_patient(entry, institution)
            else:
                rid = raw.get("id")
                lent.entries.append(
                    (
                        Entry(path, rtype, raw, f"{rtype}/{rid}" if isinstance(rid, str) else ""),
                        None,
                    )
                )
    return lent


def _grouped(
    entry: Entry, index: Index, report: IngestReport, groups: dict[str, list[dict[str, Any]]]
) -> None:
    one = IngestReport()
    map_entry(entry, index, one)
    report.problems += one.problems
    report.skipped += one.skipped
    for item in one.items:
        key = json.dumps(item["payload"].get("patient"), sort_keys=True)
        group = groups.setdefault(key, [])
        if item["kind"] == "patient":
            group.insert(0, item)  # the patient before what is about them
        else:
            group.append(item)


def _resources(f: Lines, report: IngestReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each line's resource with its path (``<file>:<line>:<Type>``); a line that is no
    resource is a problem named by file and line."""
    for n, line in enumerate(f.lines(), 1):
        where = f"{f.name}:{n}"
        text = line.strip()
        if not text:
            continue
        if len(line) > MAX_LINE:
            report.problems.append(
                Problem(
                    "fhir.line_too_long",
                    f"a line over {MAX_LINE:,} bytes is no one resource",
                    where,
                )
            )
            continue
        try:
            raw = json.loads(text.decode("utf-8-sig"), parse_float=Decimal)
        except (ValueError, RecursionError):
            report.problems.append(Problem("fhir.json", "the line is not UTF-8 JSON text", where))
            continue
        rtype = raw.get("resourceType") if isinstance(raw, dict) else None
        if not isinstance(rtype, str) or not rtype.isalpha():
            report.problems.append(
                Problem("fhir.resource_type", "the line holds no FHIR resource", where)
            )
            continue
        yield f"{where}:{rtype}", raw


def _as_json(doc: Document) -> dict[str, Any] | None:
    try:
        data = json.loads(doc, parse_float=Decimal) if isinstance(doc, (str, bytes)) else doc
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _lendable(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if data.get("resourceType") != "Bundle":
        resources = [(str(data.get("resourceType")), data)]
    else:
        found = data.get("entry")
        entries: list[Any] = found if isinstance(found, list) else []
        resources = [
            (f"Bundle.entry[{i}].resource", e["resource"])
            for i, e in enumerate(entries)
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]
    for where, raw in resources:
        if raw.get("resourceType") in ("Patient", *DIRECTORY_TYPES):
            yield where, raw
