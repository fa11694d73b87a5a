"""FHIR R4 → canonical submission items, with an ingest report. A pure mapper: no IO.

Resources are parsed with the fhir.resources R4B models (R4B keeps R4's shape for the four
resources mapped here), each clinical resource's patient is resolved to a resident ID inside
the document, and every item is checked against the canonical models before it is returned, so
what leaves here is what the gateway accepts. A resource with any problem is left out whole;
problems name the FHIR path and never repeat an input value, which may be patient data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from adapters.report import IngestReport, check_item
from domain.errors import InvalidResidentId
from domain.identity import RESIDENT_ID_SYSTEM, mrn_system
from domain.problems import Problem, problems_from_validation
from domain.resident_id import parse_resident_id

BUNDLE_TYPES = ("transaction", "batch", "collection", "searchset")
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ENCOUNTER_CLASSES = {"AMB": "outpatient", "IMP": "inpatient", "ACUTE": "inpatient",
                     "NONAC": "inpatient", "EMER": "emergency"}
# R4 statuses without a canonical twin map to the nearest one; the rest pass through, and the
# canonical model refuses by name those it does not take (entered-in-error, unknown).
ENCOUNTER_STATUSES = {"triaged": "arrived", "onleave": "in-progress"}
# The canonical category set; other categories (imaging, procedure, …) are left unsaid.
CATEGORIES = ("vital-signs", "laboratory", "survey", "exam", "social-history")

_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_NAIVE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]+")
_NO_TZ = ("needs a full date and time with a timezone offset (for example "
          "2026-11-01T09:30:00+08:00); the exchange does not guess one")


@dataclass
class _Entry:
    path: str  # FHIR path of the resource, e.g. "Bundle.entry[3].resource"
    rtype: str
    resource: Any  # the parsed R4B model
    source_id: str


@dataclass
class _Context:
    """One resource being mapped, the document's entries by reference, the problems found."""

    entry: _Entry
    index: dict[str, _Entry]
    institution: str
    problems: list[Problem] = field(default_factory=list)

    def bad(self, code: str, message: str, where: str = "") -> None:
        path = f"{self.entry.path}.{where}" if where else self.entry.path
        self.problems.append(Problem(code, message, path, None, self.entry.source_id))

    def instant(self, value: object, where: str) -> str | None:
        if value is None:
            return None
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.isoformat()
        self.bad("fhir.datetime_no_timezone", _NO_TZ, where)  # a date alone, or partial
        return None

    def resolve(self, ref: Any, rtype: str) -> _Entry | None:
        target = self.index.get((ref.reference or "").split("/_history/")[0]) if ref else None
        return target if target is not None and target.rtype == rtype else None

    def patient(self) -> dict[str, str] | None:
        ref, what = self.entry.resource.subject, self.entry.rtype
        ident = ref.identifier if ref else None
        if ident is not None and ident.system == RESIDENT_ID_SYSTEM and ident.value:
            return {"resident_id": ident.value}  # a logical reference, checked canonically
        target = self.resolve(ref, "Patient")
        if target is None:
            self.bad("fhir.subject_unresolved", "subject refers to no Patient in this document "
                     f"and has no identifier with system {RESIDENT_ID_SYSTEM}; the {what} was "
                     "not mapped", "subject")
            return None
        rid, fault = _resident_id(target.resource)
        if fault is not None:
            self.bad("fhir.no_resident_id", f"the subject Patient ({target.path}) has no valid "
                     f"resident ID; the {what} was not mapped", "subject")
            return None
        return {"resident_id": str(rid)}

    def encounter(self, ref: Any) -> str | None:
        # Only an encounter sent in the same document has a source_id we can name.
        target = self.resolve(ref, "Encounter")
        return target.source_id if target else None


def read_fhir(doc: dict[str, Any] | str | bytes, *, institution: str) -> IngestReport:
    """Map a FHIR R4 Bundle (or one resource) to canonical items, saying what was refused."""
    report = IngestReport()
    data = _load(doc, report)
    entries = _entries(data, report) if data is not None else []
    index = {key: entry for full_url, entry in entries
             for key in (full_url, entry.source_id) if key}
    for _, entry in entries:
        ctx = _Context(entry, index, institution)
        kind, mapper, _ = _MAPPERS[entry.rtype]
        payload = mapper(entry.resource, ctx)
        item = {"source_id": entry.source_id, "kind": kind, "payload": payload}
        if not ctx.problems:
            ctx.problems += check_item(item, where=entry.path, source_id=entry.source_id)
        report.problems += ctx.problems
        if not ctx.problems:
            report.items.append(item)
    return report


def _load(doc: object, report: IngestReport) -> dict[str, Any] | None:
    try:
        if isinstance(doc, (bytes, bytearray)):
            doc = bytes(doc).decode("utf-8-sig")
        if isinstance(doc, str):  # decimals as given: 7.20 stays "7.20", not the float 7.2
            doc = json.loads(doc.removeprefix("\ufeff"), parse_float=Decimal)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        report.problems.append(Problem("fhir.json", "the document is not UTF-8 JSON text"))
        return None
    if not isinstance(doc, dict):
        report.problems.append(Problem("fhir.not_a_resource", "the document is not a JSON object"))
        return None
    return doc


def _entries(data: dict[str, Any], report: IngestReport) -> list[tuple[str | None, _Entry]]:
    """The parsed mapped resources of a Bundle (or the one resource), with their fullUrl."""
    if data.get("resourceType") != "Bundle":
        rtype = data.get("resourceType")  # the path of a lone resource starts with its type
        path = rtype if isinstance(rtype, str) and _RESOURCE_TYPE.fullmatch(rtype) else "resource"
        one = _parse(data, path, "resource", None, report)
        return [(None, one)] if one else []
    raw = data.get("entry") if isinstance(data.get("entry"), list) else None
    # The Bundle is checked without its resources, so that one bad resource fails alone.
    shell = data if raw is None else {**data, "entry": [
        {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
        for e in raw]}
    try:
        Bundle.model_validate(shell)
    except ValidationError as exc:
        report.problems += _fhir_problems(exc, "Bundle")
        return []
    if data.get("type") not in BUNDLE_TYPES:
        report.problems.append(Problem("fhir.bundle_type", "a Bundle of type "
                                       f"{', '.join(BUNDLE_TYPES)} is expected", "Bundle.type"))
        return []
    parsed: list[tuple[str | None, _Entry]] = []
    for i, e in enumerate(raw or []):
        if not isinstance(e, dict) or e.get("resource") is None:
            report.skipped.append(f"Bundle.entry[{i}]: no resource (nothing to map)")
            continue
        full_url = e["fullUrl"] if isinstance(e.get("fullUrl"), str) else None
        one = _parse(e["resource"], f"Bundle.entry[{i}].resource", f"Bundle.entry[{i}]",
                     full_url, report)
        parsed += [(full_url, one)] if one else []
    return parsed


def _parse(raw: object, path: str, where: str, full_url: str | None,
           report: IngestReport) -> _Entry | None:
    rtype = raw.get("resourceType") if isinstance(raw, dict) else None
    if not isinstance(rtype, str) or not _RESOURCE_TYPE.fullmatch(rtype):
        report.problems.append(Problem("fhir.resource_type", "not a FHIR resource: resourceType "
                                       "is missing or malformed", f"{path}.resourceType"))
        return None
    if rtype not in _MAPPERS:
        report.skipped.append(f"{where} {rtype}: resource type not mapped")
        return None
    try:
        resource = _MAPPERS[rtype][2].model_validate(raw)
    except ValidationError as exc:
        report.problems += _fhir_problems(exc, path)
        return None
    except (KeyError, TypeError, AttributeError, RecursionError):
        # fhir.resources lets some malformed input escape unconverted (a contained resource of
        # an unknown type raises KeyError); the sender's document is still what is at fault.
        report.problems.append(Problem("fhir.invalid", f"not readable as a FHIR R4 {rtype}", path))
        return None
    source_id = f"{rtype}/{resource.id}" if resource.id else full_url
    if not source_id:
        report.problems.append(Problem("fhir.no_source_id", "give the resource an id (or its "
                                       "entry a fullUrl) so that a resend is known", path))
        return None
    return _Entry(path, rtype, resource, source_id)


def _fhir_problems(exc: ValidationError, prefix: str) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False, include_context=False):
        where = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        naive = isinstance(err.get("input"), str) and _NAIVE_TIME.fullmatch(err["input"])
        if naive and ("DateTime" in err["msg"] or "Instant" in err["msg"]):
            problems.append(Problem("fhir.datetime_no_timezone", _NO_TZ, where))
        else:  # the message only: the input may be patient data
            problems.append(Problem(f"fhir.{err['type']}", err["msg"].removeprefix("Value error, "),
                                    where))
    return problems


def _resident_id(patient: Patient) -> tuple[str | None, tuple[str, str] | None]:
    """The Patient's resident ID and, when it has no valid one, why: (code, message)."""
    rid = next((i.value for i in patient.identifier or []
                if i.system == RESIDENT_ID_SYSTEM and i.value), None)
    if rid is None:
        return None, ("fhir.no_resident_id", "no identifier with system "
                      f"{RESIDENT_ID_SYSTEM} (resident ID); it and what refers to it are not sent")
    try:
        return parse_resident_id(rid).value, None
    except InvalidResidentId as exc:
        return None, (exc.code, exc.message)


def _coding(c: Any) -> dict[str, str] | None:
    if c is None or not c.system or not c.code:
        return None
    out = {"system": c.system, "code": c.code, "display": c.display, "version": c.version}
    return {k: v for k, v in out.items() if v}


def _first_coding(concept: Any) -> dict[str, str] | None:
    return next((c for c in map(_coding, concept.coding or []) if c), None) if concept else None


def _quantity(q: Any) -> dict[str, Any] | None:
    # system stays None when not given: the canonical default (UCUM) would be a guess.
    return None if q is None else {"value": None if q.value is None else str(q.value),
                                   "unit": q.unit or q.code, "system": q.system, "code": q.code}


def _compact(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None}


def _name(patient: Patient) -> str | None:
    names = patient.name or []
    chosen = next((n for n in names if n.use == "official"), names[0] if names else None)
    if chosen is None:
        return None
    if chosen.text and chosen.text.strip():
        return str(chosen.text.strip())
    family, given = chosen.family or "", [g for g in chosen.given or [] if g]
    if _CJK.search(family + "".join(given)):  # 王 + 秀英 → 王秀英: no space in a CJK name
        return family + "".join(given)
    return " ".join([*given, family]).strip() or None


def _patient(p: Patient, ctx: _Context) -> dict[str, Any]:
    rid, fault = _resident_id(p)
    if fault is not None:
        ctx.bad(*fault, "identifier")
    ids, own = p.identifier or [], mrn_system(ctx.institution)
    mrn = next((i.value for i in ids if i.system == own and i.value), None) or next(
        (i.value for i in ids if i.value and i.type and any(
            c.system == V2_0203 and c.code == "MR" for c in i.type.coding or [])), None)
    # A partial birthDate (a year or a month) is left out rather than padded.
    born = p.birthDate.isoformat() if isinstance(p.birthDate, date) else None
    return _compact({"patient": _compact({"resident_id": rid, "mrn": mrn}), "name": _name(p),
                     "gender": p.gender or "unknown", "birth_date": born})


def _encounter(e: Encounter, ctx: _Context) -> dict[str, Any]:
    patient = ctx.patient()
    klass = ENCOUNTER_CLASSES.get(e.class_fhir.code or "") if e.class_fhir else None
    if klass is None:
        ctx.bad("fhir.encounter_class",
                f"class must be a v3 ActCode of {', '.join(ENCOUNTER_CLASSES)}", "class")
    period, service = e.period, e.serviceType
    department = service and (service.text or next(
        (c.display for c in service.coding or [] if c.display), None))
    if not department and e.location:
        department = e.location[0].location.display
    return _compact({
        "patient": patient, "encounter_class": klass,
        "status": ENCOUNTER_STATUSES.get(e.status or "", e.status),
        "start": ctx.instant(period.start if period else None, "period.start"),
        "end": ctx.instant(period.end if period else None, "period.end"),
        "department": department or None,
        "reason": [c for cc in e.reasonCode or [] for c in map(_coding, cc.coding or []) if c]})


def _condition(c: Condition, ctx: _Context) -> dict[str, Any]:
    onset = c.onsetDateTime  # a calendar date as the sender wrote it; a partial one is left out
    return _compact({
        "patient": ctx.patient(), "code": _first_coding(c.code),
        "clinical_status": (_first_coding(c.clinicalStatus) or {}).get("code"),
        "verification_status": (_first_coding(c.verificationStatus) or {}).get("code"),
        "onset": onset.date().isoformat() if isinstance(onset, datetime)
        else onset.isoformat() if isinstance(onset, date) else None,
        "recorded": ctx.instant(c.recordedDate, "recordedDate"),
        "encounter": ctx.encounter(c.encounter)})


def _observation(o: Observation, ctx: _Context) -> dict[str, Any]:
    period = o.effectivePeriod
    effective = ctx.instant(period.start, "effectivePeriod.start") if period else ctx.instant(
        o.effectiveDateTime or o.effectiveInstant, "effectiveDateTime")
    ranges = o.referenceRange or []
    reference_range = _compact({"low": _quantity(ranges[0].low), "high": _quantity(ranges[0].high),
                                "text": ranges[0].text}) if ranges else None
    payload = _compact({
        "patient": ctx.patient(), "code": _first_coding(o.code), "status": o.status,
        "effective": effective, "value_quantity": _quantity(o.valueQuantity),
        "value_string": o.valueString, "value_coding": _first_coding(o.valueCodeableConcept),
        "reference_range": reference_range or None,
        "interpretation": _first_coding(o.interpretation[0]) if o.interpretation else None,
        "encounter": ctx.encounter(o.encounter)})
    # The canonical model wants the category said, even when it is None.
    payload["category"] = next((c.code for cc in o.category or [] for c in cc.coding or []
                                if c.system == OBSERVATION_CATEGORY and c.code in CATEGORIES), None)
    return payload


_MAPPERS: dict[str, tuple[str, Callable[[Any, _Context], dict[str, Any]], Any]] = {
    "Patient": ("patient", _patient, Patient), "Encounter": ("encounter", _encounter, Encounter),
    "Condition": ("condition", _condition, Condition),
    "Observation": ("observation", _observation, Observation)}
