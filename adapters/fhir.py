"""FHIR R4 → canonical submission items, with an ingest report. A pure mapper: no IO.

Resources are parsed with the fhir.resources R4B models (R4B keeps R4's shape for the resources
mapped here) and mapped by adapters/fhir_resources.py (referrals: adapters/fhir_referrals.py).
Each clinical item names its patient by the same PatientRef as its Patient's item: the resident
ID, this institution's MRN and the health card, whichever the Patient has (the exchange gives a
patient without a resident ID a temporary identity). References resolve inside the document,
in directory bundles given with it, and (Organizations) against the registered institutions;
see adapters/fhir_context.py.

Every item is checked against the canonical models before it is returned, so what leaves here
is what the gateway accepts. A resource with any problem is left out whole; problems name the
FHIR path and never repeat an input value, which may be patient data. ``report.skipped`` says
what was deliberately not mapped: resource types the exchange does not hold, and references
that matter only for display but could not be resolved (the item maps without them).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from adapters.fhir_context import Context, Entry, Index, Lent
from adapters.fhir_paths import item_problems, structure_problems
from adapters.fhir_resources import MAPPERS
from adapters.report import IngestReport
from domain.problems import Problem

# Every Bundle type of R4; what differs is only which entries carry a resource to map.
BUNDLE_TYPES = (
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
)
# Resources that frame a Bundle rather than record care: left out by name, their entries map.
FRAMES = {
    "Composition": "a document's Composition (its sections list the entries, which are mapped)",
    "MessageHeader": "a message's header (how it travelled; the entries it carries are mapped)",
}
# What a directory bundle (an organisation or practitioner register) may lend for resolving.
DIRECTORY_TYPES = ("Organization", "Location", "Practitioner", "PractitionerRole", "Medication")
RFC3986 = "urn:ietf:rfc:3986"

_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_NAIVE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?")
# Where an institution's clocks are when a time is sent without its offset (policy).
DEFAULT_ZONE = "Asia/Shanghai"

Document = dict[str, Any] | str | bytes


def read_fhir(
    doc: Document,
    *,
    institution: str,
    institutions: Mapping[str, str] | None = None,
    directories: Sequence[Document] = (),
    zone: tzinfo | None = None,
    lent: Lent | None = None,
) -> IngestReport:
    """Map a FHIR R4 Bundle (or one resource) to canonical items, saying what was refused.

    ``institutions`` maps an Organization identifier (``"system|value"``, or a bare value for
    one with no system) to a registered institution code, for references to organisations
    outside the document. ``directories`` are other bundles (Synthea's hospitalInformation and
    practitionerInformation, say) whose Organizations, Locations, Practitioners and Medications
    resolve references; nothing in them is mapped. ``zone``: the institution's time zone, in
    which a date and time sent without an offset is read (default Asia/Shanghai). ``lent``:
    the Patients (and directory resources) of the other files of the same directory or
    export (``lend``), which resolve references as if they were in this document.
    """
    report = IngestReport()
    data = _load(doc, report)
    local = zone if zone is not None else ZoneInfo(DEFAULT_ZONE)
    entries = _entries(data, report, local) if data is not None else []
    index = Index(institution, institutions or {})
    for entry in entries:
        index.add(entry)
    for n, other in enumerate(directories):
        _directory(other, n, index, report)
    if lent is not None:
        lent.lend_to(index)
    index.documented = _documented_reports(entries, index)
    for entry in entries:
        map_entry(entry, index, report)
    return report


def map_entry(entry: Entry, index: Index, report: IngestReport) -> None:
    """Map one resource of the document, into ``report``: its items when nothing is wrong
    with it, else its problems (the resource is left out whole)."""
    if entry.rtype not in MAPPERS:
        where = entry.path.removesuffix(".resource")
        why = FRAMES.get(entry.rtype, "resource type not mapped")
        report.skipped.append(f"{where} {entry.rtype}: {why}")
        return
    ctx = Context(entry, index)
    kind, mapper, _ = MAPPERS[entry.rtype]
    pairs = [] if _entered_in_error(ctx) else mapper(entry.resource, ctx)
    items: list[dict[str, Any]] = [
        {"source_id": sid, "kind": kind, "payload": payload} for sid, payload in pairs
    ]
    for item in items:
        if not ctx.problems:
            ctx.problems += item_problems(item, where=entry.path, source_id=item["source_id"])
    report.problems += ctx.problems
    if not ctx.problems:
        report.items += items
        report.skipped += ctx.notes


def _entered_in_error(ctx: Context) -> bool:
    resource = ctx.entry.resource
    where = (
        "status"
        if getattr(resource, "status", None) == "entered-in-error"
        else "verificationStatus"
        if ctx.status_code(getattr(resource, "verificationStatus", None)) == "entered-in-error"
        else None
    )
    if where is not None:
        ctx.bad(
            "fhir.entered_in_error",
            "the resource is marked entered-in-error, which is not a "
            "record to share: to withdraw the record sent before, send a retract item whose "
            "record is this resource's source_id instead",
            where,
        )
    return where is not None


def _load(doc: object, report: IngestReport, where: str = "") -> dict[str, Any] | None:
    try:
        if isinstance(doc, (bytes, bytearray)):
            doc = bytes(doc).decode("utf-8-sig")
        if isinstance(doc, str):  # decimals as given: 7.20 stays "7.20", not the float 7.2
            doc = json.loads(doc.removeprefix("\ufeff"), parse_float=Decimal)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        report.problems.append(Problem("fhir.json", "the document is not UTF-8 JSON text", where))
        return None
    if not isinstance(doc, dict):
        report.problems.append(
            Problem("fhir.not_a_resource", "the document is not a JSON object", where)
        )
        return None
    return doc


def _entries(data: dict[str, Any], report: IngestReport, zone: tzinfo) -> list[Entry]:
    """The resources of a Bundle (or the one resource): mapped types parsed, others as read."""
    if data.get("resourceType") != "Bundle":
        rtype = data.get("resourceType")  # the path of a lone resource starts with its type
        path = rtype if isinstance(rtype, str) and _RESOURCE_TYPE.fullmatch(rtype) else "resource"
        one = parse_entry(data, path, None, report, zone)
        return [one] if one else []
    raw = data.get("entry") if isinstance(data.get("entry"), list) else None
    # The Bundle is checked without its resources, so that one bad resource fails alone.
    shell = (
        data
        if raw is None
        else {
            **data,
            "entry": [
                {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
                for e in raw
            ],
        }
    )
    try:
        Bundle.model_validate(shell)
    except ValidationError as exc:
        report.problems += structure_problems(exc, "Bundle")
        return []
    if data.get("type") not in BUNDLE_TYPES:
        report.problems.append(
            Problem(
                "fhir.bundle_type",
                f"Bundle.type must be one of R4's: {', '.join(BUNDLE_TYPES)}",
                "Bundle.type",
            )
        )
        return []
    parsed: list[Entry] = []
    newest: set[str] = set()  # a history lists a resource's versions newest first
    for i, e in enumerate(raw or []):
        if not isinstance(e, dict) or e.get("resource") is None:
            deleted = isinstance(e, dict) and (e.get("request") or {}).get("method") == "DELETE"
            report.skipped.append(
                f"Bundle.entry[{i}]: "
                + (
                    "a deletion in the sender's history (to withdraw a record sent before, "
                    "send a retract item)"
                    if deleted
                    else "no resource (nothing to map)"
                )
            )
            continue
        if data.get("type") == "history":
            res = e["resource"]
            key = f"{res.get('resourceType')}/{res.get('id')}" if isinstance(res, dict) else ""
            if key in newest:
                report.skipped.append(
                    f"Bundle.entry[{i}]: an older version of {key} in a history (the newest "
                    "is mapped)"
                )
                continue
            newest.add(key)
        full_url = e["fullUrl"] if isinstance(e.get("fullUrl"), str) else None
        one = parse_entry(e["resource"], f"Bundle.entry[{i}].resource", full_url, report, zone)
        parsed += [one] if one else []
    return parsed


def parse_entry(
    raw: object, path: str, full_url: str | None, report: IngestReport, zone: tzinfo
) -> Entry | None:
    rtype = raw.get("resourceType") if isinstance(raw, dict) else None
    if (
        not isinstance(raw, dict)
        or not isinstance(rtype, str)
        or not _RESOURCE_TYPE.fullmatch(rtype)
    ):
        report.problems.append(
            Problem(
                "fhir.resource_type",
                "not a FHIR resource: resourceType is missing or malformed",
                f"{path}.resourceType",
            )
        )
        return None
    if rtype not in MAPPERS:  # kept as read: it may still resolve a reference
        rid = raw.get("id")
        return Entry(path, rtype, raw, f"{rtype}/{rid}" if isinstance(rid, str) else "", full_url)
    try:
        try:
            resource = MAPPERS[rtype][2].model_validate(raw)
        except ValidationError as exc:
            local = _local_times(raw, exc, zone)
            if local is None:
                raise
            raw, resource = local, MAPPERS[rtype][2].model_validate(local)
    except ValidationError as exc:
        report.problems += structure_problems(exc, path)
        return None
    except (KeyError, TypeError, AttributeError, RecursionError):
        # fhir.resources lets some malformed input escape unconverted (a contained resource of
        # an unknown type raises KeyError); the sender's document is still what is at fault.
        report.problems.append(Problem("fhir.invalid", f"not readable as a FHIR R4 {rtype}", path))
        return None
    source_id = f"{rtype}/{resource.id}" if resource.id else full_url
    if not source_id:
        report.problems.append(
            Problem(
                "fhir.no_source_id",
                "give the resource an id (or its entry a fullUrl) so that a resend is known",
                path,
            )
        )
        return None
    return Entry(path, rtype, raw, source_id, full_url, resource)


def _local_times(raw: dict[str, Any], exc: ValidationError, zone: tzinfo) -> dict[str, Any] | None:
    """The resource with each date and time sent without an offset read in ``zone`` (FHIR
    wants the offset; an HIS that leaves it out means its own clocks), or None if the errors
    are about something else."""
    fixed: dict[str, Any] | None = None
    for err in exc.errors(include_url=False, include_context=False):
        value = err.get("input")
        if not (isinstance(value, str) and _NAIVE_TIME.fullmatch(value)):
            continue
        if "DateTime" not in err["msg"] and "Instant" not in err["msg"]:
            continue
        fixed = fixed if fixed is not None else copy.deepcopy(raw)
        *inner, last = err["loc"]
        holder: Any = fixed
        try:
            for key in inner:
                holder = holder[key]
            if holder[last] == value:
                holder[last] = datetime.fromisoformat(value).replace(tzinfo=zone).isoformat()
        except (KeyError, IndexError, TypeError, ValueError):  # not that path: leave it be
            continue
    return fixed


def _directory(doc: Document, n: int, index: Index, report: IngestReport) -> None:
    """Index a directory bundle's Organizations, Locations, ... for resolving; map nothing."""
    where = f"directories[{n}]"
    data = _load(doc, report, where)
    entries = data.get("entry") if data is not None else None
    if data is None or data.get("resourceType") != "Bundle" or not isinstance(entries, list):
        if data is not None:
            report.problems.append(
                Problem("fhir.directory", "a directory must be a Bundle with entries", where)
            )
        return
    for i, e in enumerate(entries):
        raw = e.get("resource") if isinstance(e, dict) else None
        rtype = raw.get("resourceType") if isinstance(raw, dict) else None
        if isinstance(raw, dict) and rtype in DIRECTORY_TYPES:
            rid, url = raw.get("id"), e.get("fullUrl")
            index.add(
                Entry(
                    f"{where}.entry[{i}].resource",
                    str(rtype),
                    raw,
                    f"{rtype}/{rid}" if isinstance(rid, str) else "",
                    url if isinstance(url, str) else None,
                )
            )


def _documented_reports(entries: list[Entry], index: Index) -> set[str]:
    """DiagnosticReports whose note a DocumentReference of the document carries (as Synthea
    sends each note twice): sent once, as the DocumentReference."""
    found: set[str] = set()
    for entry in entries:
        if entry.rtype != "DocumentReference" or entry.resource is None:
            continue
        named = [i.value for i in entry.resource.identifier or [] if i.system == RFC3986]
        context = entry.resource.context
        named += [r.reference for r in (context.related or [] if context else [])]
        found |= {
            target.path
            for address in named
            if address
            and (target := index.by_address.get(address)) is not None
            and target.rtype == "DiagnosticReport"
        }
    return found
