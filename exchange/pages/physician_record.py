"""What the physician's record page shows, shaped from the ``$everything`` Bundle the API
handler answered: a summary in the shape of the International Patient Summary (problems,
medications, allergies, immunizations, recent results), the cross-institution timeline newest
first with each row's institution and its level, the timeline's filters, and the lab results
grouped per test for their trends. Pure: the handler reads, this only arranges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exchange.pages.i18n import N_

SUBMITTED_BY = "urn:county-hie:fhir:StructureDefinition:submitted-by"
# The exchange's data category of a resource (domain/categories.py's general ones), which is
# what a consent decision withholds by name.
CATEGORY_OF_TYPE = {
    "Encounter": "encounter",
    "Condition": "diagnosis",
    "MedicationRequest": "medication",
    "MedicationDispense": "medication",
    "Procedure": "procedure",
    "Immunization": "immunization",
    "AllergyIntolerance": "allergy",
    "DocumentReference": "document",
}
OBSERVATION_CATEGORY = {"laboratory": "lab", "vital-signs": "vital"}
CATEGORY_LABELS = {
    "encounter": N_("Visits"),
    "diagnosis": N_("Problems"),
    "medication": N_("Medications"),
    "allergy": N_("Allergies"),
    "immunization": N_("Immunizations"),
    "lab": N_("Lab results"),
    "vital": N_("Vital signs"),
    "procedure": N_("Procedures"),
    "document": N_("Documents"),
    "observation": N_("Other observations"),
}
LEVEL_LABELS = {
    "county_hospital": N_("County hospital"),
    "township_health_centre": N_("Township health centre"),
    "village_clinic": N_("Village clinic"),
}
# The IPS sections, each with the categories it is made of and how many entries it lists.
SECTIONS = (
    ("problems", N_("Problems"), ("diagnosis",), 20),
    ("medications", N_("Medications"), ("medication",), 20),
    ("allergies", N_("Allergies and intolerances"), ("allergy",), 20),
    ("immunizations", N_("Immunizations"), ("immunization",), 20),
    ("results", N_("Recent results"), ("lab", "vital"), 8),
)
# IPS's "known absent" statements (SNOMED CT, and the IPS absent-unknown codes): an entry that
# says the patient has none is a record of none, not a missing record.
NONE_KNOWN = frozenset(
    {
        "716186003",  # no known allergy
        "160245001",  # no current problems or disability
        "787481004",  # no known medication
        "no-known-allergies",
        "no-known-problems",
        "no-known-medications",
        "no-known-immunizations",
    }
)


@dataclass
class Row:
    """One line of the timeline."""

    kind: str
    category: str
    when: str | None
    what: str
    value: str
    institution: str
    institution_name: str
    level: str
    resource: dict[str, Any] = field(repr=False)


@dataclass
class Section:
    """One IPS section: its rows, or why it has none (``state``: shown, withheld, partly
    withheld, none known, not provided)."""

    key: str
    title: str
    state: str
    rows: list[Row]


def category_of(resource: Mapping[str, Any]) -> str:
    kind = str(resource.get("resourceType", ""))
    if kind != "Observation":
        return CATEGORY_OF_TYPE.get(kind, "observation")
    for concept in resource.get("category") or []:
        for coding in concept.get("coding") or []:
            found = OBSERVATION_CATEGORY.get(coding.get("code", ""))
            if found:
                return found
    return "observation"


def withheld_categories(resources: list[dict[str, Any]]) -> tuple[set[str], bool]:
    """What the decision's OperationOutcome says it withholds: the categories, and whether
    results before a date are left out."""
    withheld: set[str] = set()
    results_cut = False
    for outcome in resources:
        if outcome.get("resourceType") != "OperationOutcome":
            continue
        for issue in outcome.get("issue") or []:
            diagnostics = str(issue.get("diagnostics", ""))
            if diagnostics.startswith("categories:"):
                named = diagnostics.removeprefix("categories:").split(",")
                withheld |= {c.strip() for c in named if c.strip()}
            text = str((issue.get("details") or {}).get("text", ""))
            results_cut = results_cut or "results recorded before" in text
    return withheld, results_cut


def row_of(resource: dict[str, Any], institutions: Mapping[str, tuple[str, str]]) -> Row:
    kind = str(resource.get("resourceType", ""))
    when = (
        resource.get("effectiveDateTime")
        or (resource.get("effectivePeriod") or {}).get("start")
        or (resource.get("period") or {}).get("start")
        or resource.get("occurrenceDateTime")
        or resource.get("performedDateTime")
        or resource.get("authoredOn")
        or resource.get("whenHandedOver")
        or resource.get("recordedDate")
        or resource.get("date")
        or resource.get("issued")
    )
    concept = (
        resource.get("code")
        or resource.get("vaccineCode")
        or resource.get("medicationCodeableConcept")
        or resource.get("type")
        or {}
    )
    if isinstance(concept, list):
        concept = concept[0] if concept else {}
    codings = concept.get("coding") or [{}]
    what = concept.get("text") or codings[0].get("display") or codings[0].get("code") or ""
    code, sender = "", ""
    for ext in resource.get("extension") or []:
        if ext.get("url") == SUBMITTED_BY:
            ref = ext.get("valueReference") or {}
            code = str((ref.get("identifier") or {}).get("value", ""))
            sender = str(ref.get("display") or "")
    name, level = institutions.get(code, (sender or code, ""))
    return Row(
        kind=kind,
        category=category_of(resource),
        when=when if isinstance(when, str) else None,
        what=str(what),
        value=value_text(resource),
        institution=code,
        institution_name=name,
        level=level,
        resource=resource,
    )


def value_text(resource: Mapping[str, Any]) -> str:
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and "value" in quantity:
        return f"{quantity['value']} {quantity.get('unit') or quantity.get('code') or ''}".strip()
    for key in ("valueString", "valueInteger", "valueBoolean"):
        if key in resource:
            return str(resource[key])
    concept = resource.get("valueCodeableConcept")
    if isinstance(concept, dict):
        return str(concept.get("text") or (concept.get("coding") or [{}])[0].get("display", ""))
    return ""


def is_none_known(row: Row) -> bool:
    concept = row.resource.get("code") or {}
    codes = {c.get("code") for c in concept.get("coding") or [] if isinstance(c, dict)}
    return bool(codes & NONE_KNOWN)


def summary(rows: list[Row], withheld: set[str], results_cut: bool) -> list[Section]:
    """The IPS sections of the (newest-first) rows. A section whose categories the decision
    withholds says so, whatever the record holds; an empty one says nobody sent any; one whose
    only entries say "none known" says that."""
    sections = []
    for key, title, categories, most in SECTIONS:
        if all(c in withheld for c in categories):
            sections.append(Section(key, title, "withheld", []))
            continue
        mine = [r for r in rows if r.category in categories][:most]
        partly = any(c in withheld for c in categories) or (key == "results" and results_cut)
        if not mine:
            state = "partly-withheld" if partly else "not-provided"
        elif all(is_none_known(r) for r in mine):
            state = "none-known"
        else:
            state = "partly-withheld" if partly else "shown"
        sections.append(Section(key, title, state, mine))
    return sections


@dataclass(frozen=True)
class Filters:
    """The timeline's filters, as the page's GET form sent them (unknown values are ignored:
    a filter narrows, it never fails the page)."""

    category: str = ""
    institution: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, query: Mapping[str, str], categories: set[str], institutions: set[str]) -> Filters:
        def day(name: str) -> str:
            value = str(query.get(name, ""))[:10]
            return value if len(value) == 10 and value[4] == "-" and value[7] == "-" else ""

        category = str(query.get("category", ""))
        institution = str(query.get("institution", ""))
        return cls(
            category=category if category in categories else "",
            institution=institution if institution in institutions else "",
            since=day("since"),
            until=day("until"),
        )

    def keep(self, row: Row, local_day: str) -> bool:
        return (
            (not self.category or row.category == self.category)
            and (not self.institution or row.institution == self.institution)
            and (not self.since or (bool(local_day) and local_day >= self.since))
            and (not self.until or (bool(local_day) and local_day <= self.until))
        )

    @property
    def active(self) -> bool:
        return bool(self.category or self.institution or self.since or self.until)


@dataclass
class LabTest:
    """One test's results, oldest first, for its table and trend."""

    code: str
    name: str
    unit: str
    rows: list[Row]
    low: float | None = None
    high: float | None = None


def lab_code(row: Row) -> str:
    codings = (row.resource.get("code") or {}).get("coding") or [{}]
    first = codings[0] if isinstance(codings[0], dict) else {}
    return str(first.get("code") or row.what)


def lab_tests(rows: list[Row]) -> dict[str, LabTest]:
    """The lab results grouped per test (by its first code), each oldest first."""
    tests: dict[str, LabTest] = {}
    for row in sorted(
        (r for r in rows if r.category == "lab"), key=lambda r: r.when or "", reverse=False
    ):
        code = lab_code(row)
        quantity = row.resource.get("valueQuantity") or {}
        test = tests.setdefault(code, LabTest(code, row.what, str(quantity.get("unit") or ""), []))
        test.rows.append(row)
        for bounds in row.resource.get("referenceRange") or []:
            test.low = _number((bounds.get("low") or {}).get("value"), test.low)
            test.high = _number((bounds.get("high") or {}).get("value"), test.high)
    return tests


def numeric(row: Row) -> float | None:
    return _number((row.resource.get("valueQuantity") or {}).get("value"), None)


def _number(value: object, otherwise: float | None) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return otherwise
