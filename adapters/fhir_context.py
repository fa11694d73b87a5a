"""Where a FHIR resource stands in its document: how its references resolve, which patient it
is about, and what is wrong with it. Used by the FHIR adapter (adapters/fhir.py) and its
per-resource mappers (adapters/fhir_resources.py); pure, no IO.

References resolve, in this order: a contained resource (``#id``); a resource of the document by
fullUrl or ``Type/id``; a conditional reference (``Type?identifier=system|value``) or a logical
one (``Reference.identifier``) matched against the identifiers of the document's resources and
of any directory bundles given with it; for Organizations, against the registered institutions
(see ``Index.institution``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from adapters.fhir_paths import rule_words
from domain.errors import InvalidResidentId
from domain.identity import HEALTH_CARD_SYSTEM, RESIDENT_ID_SYSTEM, mrn_system
from domain.problems import Problem
from domain.resident_id import parse_resident_id
from domain.values import PatientRef

# A consortium member named by its institution code (as the exchange's FHIR output names one).
INSTITUTION_SYSTEM = "urn:county-hie:institution"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
LOCAL_SYSTEM = "urn:county-hie:local:"
NO_TZ = (
    "needs a full date and time with a timezone offset (for example "
    "2026-11-01T09:30:00+08:00); the exchange does not guess one"
)
LOOKED_FOR = (
    f"an identifier with system {RESIDENT_ID_SYSTEM} (resident ID), the sending "
    "institution's MRN (system {mrn}, or type MR of v2-0203) or system "
    f"{HEALTH_CARD_SYSTEM} (health card)"
)


_NOT_HERE = "refers to no resource in this document"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


@dataclass
class Entry:
    path: str  # FHIR path of the resource, e.g. "Bundle.entry[3].resource"
    rtype: str
    raw: dict[str, Any]
    source_id: str
    full_url: str | None = None
    resource: Any = None  # the parsed R4B model; None for a type that is only looked up


def _identifiers(raw: dict[str, Any]) -> list[tuple[str | None, str]]:
    """A raw resource's identifiers as (system, value), read defensively: it is unvalidated."""
    found = raw.get("identifier")
    return [
        (i["system"] if isinstance(i.get("system"), str) else None, i["value"])
        for i in (found if isinstance(found, list) else [])
        if isinstance(i, dict) and isinstance(i.get("value"), str)
    ]


@dataclass
class Index:
    """Every resource of the document (and of its directories), by address and by identifier."""

    institution: str
    institutions: Mapping[str, str]
    by_address: dict[str, Entry] = field(default_factory=dict)
    by_identifier: dict[tuple[str, str | None, str], list[Entry]] = field(default_factory=dict)
    patients: dict[str, tuple[dict[str, str] | None, tuple[str, str] | None]] = field(
        default_factory=dict
    )
    documented: set[str] = field(default_factory=set)  # reports a DocumentReference carries

    def add(self, entry: Entry) -> None:
        for address in (entry.full_url, entry.source_id):
            if address:
                self.by_address.setdefault(address, entry)
        for system, value in _identifiers(entry.raw):
            self.by_identifier.setdefault((entry.rtype, system, value), []).append(entry)

    def matching(self, rtype: str, wanted: list[tuple[str | None, str, bool]]) -> list[Entry]:
        """Resources of ``rtype`` having every identifier wanted: (system, value, any_system)."""
        found: list[Entry] | None = None
        for system, value, any_system in wanted:
            if any_system:
                hits = [
                    e
                    for (t, _, v), es in self.by_identifier.items()
                    if t == rtype and v == value
                    for e in es
                ]
            else:
                hits = self.by_identifier.get((rtype, system, value), [])
            found = hits if found is None else [e for e in found if e in hits]
        return list({id(e): e for e in found or []}.values())

    def institution_for(self, system: str | None, value: str) -> str | None:
        """The registered institution an Organization identifier names, if any.

        ``institutions`` maps ``"system|value"`` to an institution code; a key without ``|``
        is an identifier value given with no system. An identifier of system
        urn:county-hie:institution whose value is a registered code names that institution.
        """
        if system is None:
            return self.institutions.get(value) or self.institutions.get(f"|{value}")
        hit = self.institutions.get(f"{system}|{value}")
        if hit is None and system == INSTITUTION_SYSTEM and value in self.institutions.values():
            return value
        return hit

    def patient_ref(self, entry: Entry) -> tuple[dict[str, str] | None, tuple[str, str] | None]:
        """A Patient's ref (every identifier the exchange can use) or why it has none."""
        if entry.path not in self.patients:
            self.patients[entry.path] = _patient_ref(entry.resource, self.institution)
        return self.patients[entry.path]


def _patient_ref(
    patient: Any, institution: str
) -> tuple[dict[str, str] | None, tuple[str, str] | None]:
    ids = [i for i in patient.identifier or [] if i.value]
    ref: dict[str, str] = {}
    rid = next((i.value for i in ids if i.system == RESIDENT_ID_SYSTEM), None)
    if rid is not None:
        try:  # present but invalid is refused, never dropped: the sender must fix it
            ref["resident_id"] = parse_resident_id(rid, divisions=True).value
        except InvalidResidentId as exc:
            return None, (exc.code, exc.message)
    own = mrn_system(institution)
    mrn = next((i.value for i in ids if i.system == own), None)
    ambiguous = False
    if mrn is None:  # typed MR, unless its system says it is another member's MRN
        typed = {
            i.value
            for i in ids
            if i.type
            and any(c.system == V2_0203 and c.code == "MR" for c in i.type.coding or [])
            and not (i.system or "").startswith(mrn_system(""))
        }
        ambiguous = len(typed) > 1  # several: which is ours is unknown
        mrn = typed.pop() if len(typed) == 1 else None
    if mrn is not None:
        ref["mrn"] = mrn
    card = next((i.value for i in ids if i.system == HEALTH_CARD_SYSTEM), None)
    if card is not None:
        ref["health_card"] = card
    if not ref:
        return None, (
            "fhir.no_patient_identifier",
            "no identifier the exchange can link: "
            f"looked for {LOOKED_FOR.format(mrn=own)}"
            + (
                f"; several identifiers are typed MR: give this institution's the system {own}"
                if ambiguous
                else ""
            )
            + "; it and what refers to it are not sent",
        )
    try:
        PatientRef.model_validate(ref)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        said = rule_words(err) or (err["type"], err["msg"])
        which = {"mrn": "MRN", "health_card": "health card"}.get(str(err["loc"][0]), "")
        return None, (said[0], f"the {which} identifier {said[1]}".replace("  ", " "))
    return ref, None


@dataclass
class Lent:
    """Resources of the other files of a directory or export that resolve references in this
    one: Patients (each with its ref, or why it has none, worked out once) and directory
    resources (Organizations, Practitioners, ...). Nothing lent is mapped again."""

    entries: list[tuple[Entry, tuple[dict[str, str] | None, tuple[str, str] | None] | None]] = (
        field(default_factory=list)
    )

    def lend_to(self, index: Index) -> None:
        for entry, patient in self.entries:
            if any(a in index.by_address for a in (entry.full_url, entry.source_id) if a):
                continue  # the document's own copy wins
            index.add(entry)
            if patient is not None:
                index.patients[entry.path] = patient

    def add_patient(self, entry: Entry, institution: str) -> None:
        """A Patient of another file, kept by its identifiers and name only."""
        ref = _patient_ref(entry.resource, institution)
        kept: dict[str, Any] = {
            k: entry.raw[k] for k in ("resourceType", "id", "identifier", "name") if k in entry.raw
        }
        self.entries.append(
            (Entry(entry.path, "Patient", kept, entry.source_id, entry.full_url), ref)
        )


@dataclass(frozen=True)
class Target:
    """What a reference resolved to: a resource, or a registered institution."""

    entry: Entry | None = None
    institution: str | None = None


@dataclass
class Context:
    """One resource being mapped, the document's index, and the problems and notes it gives."""

    entry: Entry
    index: Index
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for report.skipped: left out, not wrong

    @property
    def institution(self) -> str:
        return self.index.institution

    def bad(self, code: str, message: str, where: str = "") -> None:
        path = f"{self.entry.path}.{where}" if where else self.entry.path
        self.problems.append(Problem(code, message, path, None, self.entry.source_id))

    def note(self, message: str, where: str = "") -> None:
        self.notes.append(
            f"{self.entry.path}.{where}: {message}" if where else f"{self.entry.path}: {message}"
        )

    def instant(self, value: object, where: str, *, required: bool = False) -> str | None:
        """An instant (a date and a time with its offset) where the exchange needs one."""
        if value is None:
            if required:
                self.bad("fhir.required", f"{where} is needed for this resource", where)
            return None
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.isoformat()
        self.bad("fhir.datetime_no_timezone", NO_TZ, where)  # a date alone, or partial
        return None

    def time(self, value: object, where: str, *, required: bool = False) -> str | None:
        """A FHIR date or dateTime at the precision sent: ``2016``, ``2016-08``,
        ``2016-08-18`` or an instant (a local time was given its offset on reading)."""
        if value is None:
            if required:
                self.bad("fhir.required", f"{where} is needed for this resource", where)
            return None
        if isinstance(value, datetime):  # the FHIR models keep the offset a time must have
            return value.isoformat()
        if isinstance(value, (date, str)):  # a day, or a year or month the models keep as text
            return value.isoformat() if isinstance(value, date) else value
        self.bad("fhir.time", "is not a FHIR date or dateTime", where)
        return None

    # Codes -------------------------------------------------------------------------------------

    def coding(self, c: Any) -> dict[str, str] | None:
        if c is None or not c.code:
            return None
        # A local code with no system is named as this institution's own.
        out = {
            "system": c.system or LOCAL_SYSTEM + self.institution,
            "code": c.code,
            "display": c.display,
            "version": c.version,
        }
        return {k: v for k, v in out.items() if v}

    def first_coding(self, concept: Any) -> dict[str, str] | None:
        codings = concept.coding or [] if concept else []
        best = [c for c in codings if c.system] + [c for c in codings if not c.system]
        return next((c for c in map(self.coding, best) if c), None)

    def status_code(self, concept: Any) -> str | None:
        return next((c.code for c in concept.coding or [] if c.code), None) if concept else None

    # References --------------------------------------------------------------------------------

    def follow(self, ref: Any, types: tuple[str, ...]) -> tuple[Target | None, str | None]:
        """Resolve a reference to one of ``types``: (target, None) or (None, why not).

        (None, None) means there was nothing to follow (no reference, or a display only).
        """
        if ref is None:
            return None, None
        text = (ref.reference or "").split("/_history/")[0]
        if text.startswith("#"):
            found = next((c for c in self.entry.resource.contained or [] if c.id == text[1:]), None)
            if found is None:
                return None, "refers to a contained resource that is not there"
            rtype = found.get_resource_type()
            inside = Entry(f"{self.entry.path}.contained", rtype, {}, text, None, found)
            return self._typed(inside, types)
        if "?" in text:
            rtype, _, query = text.partition("?")
            params = parse_qsl(query, keep_blank_values=True)
            if not params or any(k != "identifier" for k, _ in params):
                return None, (
                    "is a conditional reference by search parameters other than "
                    "identifier, which the adapter cannot resolve"
                )
            wanted = [
                (s or None, v, not bar)
                for _, token in params
                for s, bar, v in [token.rpartition("|")]
            ]
            return self._by_identifier(rtype, wanted, types, "conditional reference")
        if text:
            entry = self.index.by_address.get(text)
            if entry is None:
                return None, _NOT_HERE
            return self._typed(entry, types)
        ident = ref.identifier
        if ident is not None and ident.value:  # a logical reference
            rtype = ref.type or (types[0] if len(types) == 1 else "")
            return self._by_identifier(
                rtype, [(ident.system, ident.value, False)], types, "logical reference"
            )
        return None, None

    def _typed(self, entry: Entry, types: tuple[str, ...]) -> tuple[Target | None, str | None]:
        if entry.rtype not in types:
            return None, f"refers to a {entry.rtype}, where a {' or '.join(types)} is expected"
        return Target(entry), None

    def _by_identifier(
        self,
        rtype: str,
        wanted: list[tuple[str | None, str, bool]],
        types: tuple[str, ...],
        what: str,
    ) -> tuple[Target | None, str | None]:
        if rtype not in types:
            return None, (
                f"is a {what} to a {rtype or 'resource'}, where a {' or '.join(types)} is expected"
            )
        found = self.index.matching(rtype, wanted)
        if len(found) > 1:
            return None, f"is a {what} that matches more than one {rtype} in this document"
        if found:
            return Target(found[0]), None
        if rtype == "Organization" and len(wanted) == 1:
            system, value, _ = wanted[0]
            code = self.index.institution_for(system, value)
            if code is not None:
                return Target(institution=code), None
        where = (
            "this document, its directories or the registered institutions"
            if rtype == "Organization"
            else "this document or its directories"
        )
        return None, f"is a {what} whose identifier matches no {rtype} in {where}"

    def display(self, ref: Any, where: str, types: tuple[str, ...]) -> str | None:
        """Text naming who or what a display-only reference points at (a performer, an author).

        An unresolved reference does not sink the item: its own display text stands in (or
        nothing), and the report says so.
        """
        target, why = self.follow(ref, types)
        if target is None:
            if why is not None:
                left = "its display text is used" if ref.display else "it is left out"
                self.note(f"{why}; {left}", where)
            return ref.display if ref is not None and ref.display else None
        if target.institution is not None:
            return target.institution
        return _name_of(target.entry, self.index) or ref.display or None  # type: ignore[arg-type]

    def link(self, ref: Any, rtype: str, where: str) -> str | None:
        """The source_id of a related item (its encounter, its prescription), when nameable."""
        target, why = self.follow(ref, (rtype,))
        if target is not None and target.entry is not None and target.entry.resource is not None:
            return target.entry.source_id
        text = ref.reference if ref is not None else None
        if (
            why == _NOT_HERE
            and text
            and text.startswith(f"{rtype}/")
            and "/" not in text[len(rtype) + 1 :]
        ):
            return str(text)  # sent before: this adapter named it by the same Type/id
        if why is not None:
            self.note(f"{why}; the item is sent without it", where)
        return None

    def patient(self, where: str = "subject") -> dict[str, str] | None:
        """The PatientRef of the resource's subject (the same as its Patient item's)."""
        attribute = "for_fhir" if where == "for" else where  # a Task's patient: Task.for
        ref, what = getattr(self.entry.resource, attribute), self.entry.rtype
        target, why = self.follow(ref, ("Patient",))
        if target is not None and target.entry is not None:  # directories hold no Patients
            found, fault = self.index.patient_ref(target.entry)
            if fault is None:
                return found
            self.bad(
                "fhir.subject_refused",
                f"the {where} Patient ({target.entry.path}) is "
                f"refused (see its problem); the {what} was not mapped",
                where,
            )
            return None
        if ref is not None and ref.reference and "?" in ref.reference:
            logical = _logical(ref.reference, self.institution)
            if logical is not None:
                return logical
        if ref is not None and ref.identifier is not None and ref.identifier.value:
            logical = _patient_key(ref.identifier.system, ref.identifier.value, self.institution)
            if logical is not None:
                return logical
        self.bad(
            "fhir.subject_unresolved",
            f"{where} {why or 'is missing'}, and names no "
            f"patient by {LOOKED_FOR.format(mrn=mrn_system(self.institution))}; the "
            f"{what} was not mapped",
            where,
        )
        return None


def _patient_key(system: str | None, value: str, institution: str) -> dict[str, str] | None:
    key = {
        RESIDENT_ID_SYSTEM: "resident_id",
        mrn_system(institution): "mrn",
        HEALTH_CARD_SYSTEM: "health_card",
    }.get(system or "")
    return {key: value} if key else None


def _logical(reference: str, institution: str) -> dict[str, str] | None:
    """``Patient?identifier=<system>|<value>`` for a system the exchange links patients by."""
    rtype, _, query = reference.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    if rtype != "Patient" or len(params) != 1 or params[0][0] != "identifier":
        return None
    system, bar, value = params[0][1].rpartition("|")
    return _patient_key(system, value, institution) if bar and value else None


def _name_of(entry: Entry, index: Index) -> str | None:
    """A display name for an Organization, Location, Practitioner (or role) resource."""
    raw = (
        entry.raw
        if entry.raw
        else (entry.resource.model_dump(mode="json") if entry.resource is not None else {})
    )
    if entry.rtype == "Organization":
        code = next((c for s, v in _identifiers(raw) if (c := index.institution_for(s, v))), None)
        if code is not None:
            return code
    name = raw.get("name")
    if isinstance(name, str):
        return name.strip() or None
    if isinstance(name, list) and name and isinstance(name[0], dict):
        human = name[0]
        if isinstance(human.get("text"), str) and human["text"].strip():
            return str(human["text"]).strip()
        parts = [
            p for key in ("prefix", "given") for p in (human.get(key) or []) if isinstance(p, str)
        ]
        family: str = human["family"] if isinstance(human.get("family"), str) else ""
        given = [p for p in human.get("given") or [] if isinstance(p, str)]
        if _CJK.search(family + "".join(given)):  # 李 + 建国 → 李建国: no space in a CJK name
            return (family + "".join(given)).strip() or None
        text = " ".join([*parts, family]).strip()
        return text or None
    practitioner = raw.get("practitioner")
    if entry.rtype == "PractitionerRole" and isinstance(practitioner, dict):
        display = practitioner.get("display")
        return display if isinstance(display, str) and display.strip() else None
    return None
