"""FHIR R4 Patient, Encounter, Condition, Observation, Procedure, Immunization and
AllergyIntolerance → canonical payloads (the mappers of adapters/fhir_resources.py)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.immunization import Immunization
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure

from adapters.fhir_context import Context
from adapters.fhir_values import (
    CATEGORIES,
    ENCOUNTER_CLASSES,
    ENCOUNTER_STATUSES,
    OBSERVATION_CATEGORY,
    PEOPLE,
    Pairs,
    _coded,
    _compact,
    _first,
    _quantity,
    _text,
)
from domain.times import ClinicalTime

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


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


def _patient(p: Patient, ctx: Context) -> Pairs:
    ref, fault = ctx.index.patient_ref(ctx.entry)
    if fault is not None:
        ctx.bad(*fault, "identifier")
    # A partial birthDate (a year or a month) is left out rather than padded: the consent
    # rules count a child's age in days.
    born = p.birthDate.isoformat() if isinstance(p.birthDate, date) else None
    if p.birthDate is not None and born is None:
        ctx.note("a birthDate of a year or a month is left out (a full date is kept)", "birthDate")
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ref,
                    "name": _name(p),
                    "gender": p.gender or "unknown",
                    "birth_date": born,
                }
            ),
        )
    ]


def _encounter(e: Encounter, ctx: Context) -> Pairs:
    patient = ctx.patient()
    klass = ENCOUNTER_CLASSES.get(e.class_fhir.code or "") if e.class_fhir else None
    if klass is None:
        ctx.bad(
            "fhir.encounter_class",
            "class must be a code of the v3 ActEncounterCode value set "
            f"({', '.join(ENCOUNTER_CLASSES)})",
            "class",
        )
    period, stay = e.period, e.hospitalization
    department = _text(e.serviceType)
    if not department and e.location:
        department = ctx.display(e.location[0].location, "location[0].location", ("Location",))
    # The attending (ATND), else the primary performer (PPRF, as Synthea sends).
    roles = [
        (n, {c.code for t in p.type or [] for c in t.coding or []})
        for n, p in enumerate(e.participant or [])
        if p.individual
    ]
    chosen = next((n for want in ("ATND", "PPRF") for n, codes in roles if want in codes), None)
    attending = (
        None
        if chosen is None
        else ctx.display(
            (e.participant or [])[chosen].individual, f"participant[{chosen}].individual", PEOPLE
        )
    )
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": patient,
                    "encounter_class": klass,
                    "status": ENCOUNTER_STATUSES.get(e.status or "", e.status),
                    "start": ctx.time(period.start if period else None, "period.start"),
                    "end": ctx.time(period.end if period else None, "period.end"),
                    "department": department or None,
                    "attending": attending,
                    "admit_source": _text(stay.admitSource) if stay else None,
                    "discharge_disposition": _text(stay.dischargeDisposition) if stay else None,
                    "reason": [
                        c
                        for cc in e.reasonCode or []
                        for c in map(ctx.coding, cc.coding or [])
                        if c
                    ],
                }
            ),
        )
    ]


def _condition(c: Condition, ctx: Context) -> Pairs:
    onset, where = (
        (c.onsetPeriod.start, "onsetPeriod.start")
        if c.onsetPeriod is not None
        else (c.onsetDateTime, "onsetDateTime")
    )
    if c.onsetAge is not None or c.onsetRange is not None or c.onsetString is not None:
        ctx.note("an onset given as an age, a range or text is left out", "onset[x]")
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient(),
                    "code": ctx.first_coding(c.code),
                    "clinical_status": ctx.status_code(c.clinicalStatus),
                    "verification_status": ctx.status_code(c.verificationStatus),
                    "onset": ctx.time(onset, where),
                    "recorded": ctx.time(c.recordedDate, "recordedDate"),
                    "encounter": ctx.link(c.encounter, "Encounter", "encounter"),
                }
            ),
        )
    ]


def _values(ctx: Context, o: Any) -> dict[str, Any]:
    """What an Observation or one of its components says: code, value, range, interpretation."""
    ranges = o.referenceRange or []
    reference_range = (
        _compact(
            {
                "low": _quantity(ranges[0].low),
                "high": _quantity(ranges[0].high),
                "text": ranges[0].text,
            }
        )
        if ranges
        else None
    )
    return _compact(
        {
            "code": ctx.first_coding(o.code),
            "value_quantity": _quantity(o.valueQuantity),
            "value_string": o.valueString,
            "value_coding": ctx.first_coding(o.valueCodeableConcept),
            "reference_range": reference_range or None,
            "interpretation": ctx.first_coding(_first(o.interpretation)),
        }
    )


def _effective(o: Observation, ctx: Context) -> dict[str, Any]:
    """Every form of effective[x]: a dateTime, an instant, a period; a timing by its first
    event. Without any, ``issued`` (when the result was released) says when."""
    period, timing = o.effectivePeriod, o.effectiveTiming
    if period is not None:
        if period.start is None:
            ctx.bad("fhir.required", "a period needs its start", "effectivePeriod.start")
        return {
            "effective": ctx.time(period.start, "effectivePeriod.start"),
            "effective_end": ctx.time(period.end, "effectivePeriod.end"),
        }
    if timing is not None:
        texts = [
            ctx.time(e, f"effectiveTiming.event[{n}]") for n, e in enumerate(timing.event or [])
        ]
        known = [t for t in texts if t is not None]
        if not known:
            ctx.bad("fhir.effective_timing", "a timing needs an event", "effectiveTiming.event")
            return {}
        return {"effective": min(known, key=lambda t: ClinicalTime.parse(t).earliest)}
    if o.effectiveDateTime is not None:
        return {"effective": ctx.time(o.effectiveDateTime, "effectiveDateTime")}
    if o.effectiveInstant is not None:
        return {"effective": ctx.instant(o.effectiveInstant, "effectiveInstant")}
    if o.issued is None:
        ctx.bad(
            "fhir.observation_time",
            "say when: effective[x] (when it was taken) or issued (when it was released)",
            "effective[x]",
        )
    return {}


def _observation(o: Observation, ctx: Context) -> Pairs:
    common = _compact(
        {
            "patient": ctx.patient(),
            "status": o.status,
            **_effective(o, ctx),
            "issued": ctx.instant(o.issued, "issued"),
            "encounter": ctx.link(o.encounter, "Encounter", "encounter"),
        }
    )
    # The canonical model wants the category said, even when it is None.
    common["category"] = next(
        (
            c.code
            for cc in o.category or []
            for c in cc.coding or []
            if c.system == OBSERVATION_CATEGORY and c.code in CATEGORIES
        ),
        None,
    )
    sid, parts = ctx.entry.source_id, o.component or []
    own = _values(ctx, o)
    pairs = [(f"{sid}#{n}", {**common, **_values(ctx, part)}) for n, part in enumerate(parts)]
    if parts and not {"value_quantity", "value_string", "value_coding"} & own.keys():
        # A panel (blood pressure) says nothing of its own: its components are the results.
        ctx.note(
            f"a panel with no value of its own: its {len(parts)} component(s) are sent as "
            f"observations of their own, source_id suffixed #0 to #{len(parts) - 1}"
        )
        return pairs
    return [(sid, {**common, **own}), *pairs]


def _procedure(p: Procedure, ctx: Context) -> Pairs:
    performed = p.performedPeriod.start if p.performedPeriod else p.performedDateTime
    where = "performedPeriod.start" if p.performedPeriod else "performedDateTime"
    performer = _first(p.performer)
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient(),
                    "code": _coded(ctx, p.code, "code"),
                    "status": p.status,
                    "performed": ctx.time(performed, where),
                    "body_site": ctx.first_coding(_first(p.bodySite)),
                    "performer": ctx.display(performer.actor, "performer[0].actor", PEOPLE)
                    if performer
                    else None,
                    "encounter": ctx.link(p.encounter, "Encounter", "encounter"),
                }
            ),
        )
    ]


def _immunization(i: Immunization, ctx: Context) -> Pairs:
    dose = _first(i.protocolApplied)
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient("patient"),
                    "vaccine": _coded(ctx, i.vaccineCode, "vaccineCode"),
                    "status": i.status,
                    "occurrence": ctx.time(
                        i.occurrenceDateTime, "occurrenceDateTime", required=True
                    ),
                    "lot_number": i.lotNumber,
                    "site": ctx.first_coding(i.site),
                    "route": ctx.first_coding(i.route),
                    "dose_number": dose.doseNumberPositiveInt if dose else None,
                    "manufacturer": ctx.display(i.manufacturer, "manufacturer", ("Organization",)),
                }
            ),
        )
    ]


def _allergy(a: AllergyIntolerance, ctx: Context) -> Pairs:
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient("patient"),
                    "substance": _coded(ctx, a.code, "code"),
                    "clinical_status": ctx.status_code(a.clinicalStatus),
                    "verification_status": ctx.status_code(a.verificationStatus),
                    "category": _first(a.category),
                    "criticality": a.criticality,
                    "reactions": [
                        c
                        for r in a.reaction or []
                        for m in r.manifestation or []
                        if (c := ctx.first_coding(m))
                    ],
                    "recorded": ctx.time(a.recordedDate, "recordedDate"),
                }
            ),
        )
    ]
