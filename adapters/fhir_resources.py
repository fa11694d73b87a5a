"""FHIR R4 resources → canonical payloads, one mapper per resource type (for adapters/fhir.py).

A mapper returns ``(source_id, payload)`` pairs: usually one, none for a resource whose content
is sent another way (a note on ``ctx`` says which), several for an Observation with components
(each component its own observation, ``<Observation/id>#<n>``). It reports what is wrong on
``ctx``; the caller leaves the resource out whole when anything is.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.immunization import Immunization
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from pydantic import ValidationError

from adapters.fhir_context import Context
from adapters.fhir_referrals import REFERRAL_MAPPERS

Pairs = list[tuple[str, dict[str, Any]]]

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ENCOUNTER_CLASSES = {
    "AMB": "outpatient",
    "IMP": "inpatient",
    "ACUTE": "inpatient",
    "NONAC": "inpatient",
    "EMER": "emergency",
}
# R4 codes without a canonical twin map to the nearest one; the rest pass through, and the
# canonical model refuses by name those it does not take (unknown, cancelled, ...).
ENCOUNTER_STATUSES = {"triaged": "arrived", "onleave": "in-progress"}
INTENTS = {"reflex-order": "order", "filler-order": "order"}
# The canonical category set; other categories are left unsaid.
CATEGORIES = (
    "vital-signs",
    "laboratory",
    "survey",
    "exam",
    "social-history",
    "imaging",
    "procedure",
)
PEOPLE = (
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Patient",
    "RelatedPerson",
    "Device",
    "CareTeam",
)
DAYS = {"d": 1, "day": 1, "days": 1, "天": 1, "wk": 7, "week": 7, "周": 7}
MAX_DATA = 700_000  # the canonical limit on inline base64; a larger document goes by its hash
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def _compact(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None and v != []}


def _quantity(q: Any) -> dict[str, Any] | None:
    # system stays None when not given: the canonical default (UCUM) would be a guess.
    return (
        None
        if q is None
        else {
            "value": None if q.value is None else str(q.value),
            "unit": q.unit or q.code,
            "system": q.system,
            "code": q.code,
        }
    )


def _text(concept: Any) -> str | None:
    if concept is None:
        return None
    return concept.text or next((c.display for c in concept.coding or [] if c.display), None)


def _days(q: Any) -> int | None:
    factor = DAYS.get(q.code or q.unit or "") if q is not None and q.value is not None else None
    days = q.value * factor if factor else None
    return int(days) if isinstance(days, Decimal) and days == days.to_integral_value() else None


def _first(items: list[Any] | None) -> Any:
    return items[0] if items else None


def _coded(ctx: Context, concept: Any, where: str) -> dict[str, str] | None:
    found = ctx.first_coding(concept)
    if found is None:
        ctx.bad(
            "fhir.not_coded",
            f"{where} needs a coding with a code (a local code with no "
            "system is taken as this institution's own)",
            where,
        )
    return found


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
    # A partial birthDate (a year or a month) is left out rather than padded.
    born = p.birthDate.isoformat() if isinstance(p.birthDate, date) else None
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
            f"class must be a v3 ActCode of {', '.join(ENCOUNTER_CLASSES)}",
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
                    "start": ctx.instant(
                        period.start if period else None, "period.start", required=True
                    ),
                    "end": ctx.instant(period.end if period else None, "period.end"),
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
    onset = c.onsetDateTime  # a calendar date as the sender wrote it; a partial one is left out
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient(),
                    "code": ctx.first_coding(c.code),
                    "clinical_status": ctx.status_code(c.clinicalStatus),
                    "verification_status": ctx.status_code(c.verificationStatus),
                    "onset": onset.date().isoformat()
                    if isinstance(onset, datetime)
                    else onset.isoformat()
                    if isinstance(onset, date)
                    else None,
                    "recorded": ctx.instant(c.recordedDate, "recordedDate"),
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


def _observation(o: Observation, ctx: Context) -> Pairs:
    period = o.effectivePeriod
    effective = (
        ctx.instant(period.start, "effectivePeriod.start")
        if period
        else ctx.instant(o.effectiveDateTime or o.effectiveInstant, "effectiveDateTime")
    )
    common = _compact(
        {
            "patient": ctx.patient(),
            "status": o.status,
            "effective": effective,
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


def _medication(r: Any, ctx: Context) -> dict[str, str] | None:
    """The coded drug of a request or dispense, following medicationReference when given."""
    if r.medicationCodeableConcept is not None:
        return _coded(ctx, r.medicationCodeableConcept, "medicationCodeableConcept")
    target, why = ctx.follow(r.medicationReference, ("Medication",))
    entry = target.entry if target is not None else None
    if entry is None:
        ctx.bad(
            "fhir.medication_unresolved",
            f"medicationReference {why or 'is empty'}; the "
            "drug's code is needed: send the Medication in the document or contained",
            "medicationReference",
        )
        return None
    if entry.resource is None:  # a Medication of the document or a directory: read it now
        try:
            entry.resource = Medication.model_validate(entry.raw)
        except (ValidationError, KeyError, TypeError, AttributeError):
            ctx.bad(
                "fhir.medication_invalid",
                f"the Medication it refers to ({entry.path}) is not valid FHIR R4",
                "medicationReference",
            )
            return None
    return _coded(ctx, entry.resource.code, "medicationReference (the Medication's code)")


def _frequency(timing: Any) -> str | None:
    if timing is None:
        return None
    if timing.code is not None and (timing.code.text or timing.code.coding):
        return _text(timing.code) or next((c.code for c in timing.code.coding if c.code), None)
    rep = timing.repeat
    if rep is None or rep.frequency is None or rep.period is None or not rep.periodUnit:
        return None
    return f"{rep.frequency}/{rep.period.normalize():f}{rep.periodUnit}"[:128]  # 2/1d: twice a day


def _medication_request(r: MedicationRequest, ctx: Context) -> Pairs:
    dosage, supply = _first(r.dosageInstruction), r.dispenseRequest
    dose = _first(dosage.doseAndRate) if dosage else None
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient(),
                    "medication": _medication(r, ctx),
                    "status": r.status,
                    "intent": INTENTS.get(r.intent or "", r.intent),
                    "authored": ctx.instant(r.authoredOn, "authoredOn", required=True),
                    "dosage_text": dosage.text if dosage else None,
                    "dose": _quantity(dose.doseQuantity) if dose else None,
                    "route": ctx.first_coding(dosage.route) if dosage else None,
                    "frequency": _frequency(dosage.timing) if dosage else None,
                    "quantity": _quantity(supply.quantity) if supply else None,
                    "duration_days": _days(supply.expectedSupplyDuration) if supply else None,
                    "requester": ctx.display(r.requester, "requester", PEOPLE),
                    "encounter": ctx.link(r.encounter, "Encounter", "encounter"),
                }
            ),
        )
    ]


def _medication_dispense(d: MedicationDispense, ctx: Context) -> Pairs:
    dosage = _first(d.dosageInstruction)
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient(),
                    "medication": _medication(d, ctx),
                    "status": d.status,
                    "handed_over": ctx.instant(d.whenHandedOver, "whenHandedOver"),
                    "quantity": _quantity(d.quantity),
                    "days_supply": _days(d.daysSupply),
                    "dosage_text": dosage.text if dosage else None,
                    "prescription": ctx.link(
                        _first(d.authorizingPrescription),
                        "MedicationRequest",
                        "authorizingPrescription[0]",
                    ),
                }
            ),
        )
    ]


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
                    "performed": ctx.instant(performed, where),
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
                    "occurrence": ctx.instant(
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
                    "recorded": ctx.instant(a.recordedDate, "recordedDate"),
                }
            ),
        )
    ]


def _attachment(a: Any, ctx: Context, where: str) -> dict[str, Any]:
    """Content type, SHA-256, size and (when small enough) the data of one attachment."""
    media, *params = [p.strip() for p in (a.contentType or "").split(";")]
    if not media:
        ctx.bad("fhir.required", "contentType is needed", f"{where}.contentType")
    for param in params:  # the canonical type keeps no parameters: only UTF-8 goes unsaid
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset" or value.strip('" ').lower() not in (
            "utf-8",
            "us-ascii",
        ):
            ctx.bad(
                "fhir.content_type_parameter",
                "the exchange keeps the content type without "
                "parameters; only charset=utf-8 can be dropped: send text in UTF-8",
                f"{where}.contentType",
            )
    out: dict[str, Any] = {"content_type": media}
    given = a.hash  # FHIR's hash is SHA-1; a 32-byte one can only be a SHA-256
    if a.data is not None:
        raw = bytes(a.data)
        algorithm = {20: hashlib.sha1, 32: hashlib.sha256}.get(len(given or b""))
        if given is not None and (algorithm is None or algorithm(raw).digest() != given):
            ctx.bad("fhir.attachment_hash", "hash is not the SHA-1 of data", f"{where}.hash")
        if a.size is not None and a.size != len(raw):
            ctx.bad("fhir.attachment_size", "size is not the length of data", f"{where}.size")
        data = base64.b64encode(raw).decode("ascii")
        if len(data) > MAX_DATA:  # the exchange names it by its hash; the sender keeps it
            ctx.note("data too large to send inline: the document is sent by its SHA-256", where)
        return {
            **out,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "size": len(raw),
            "data": data if len(data) <= MAX_DATA else None,
        }
    if given is not None and len(given) == 32 and a.size is not None:
        return {**out, "sha256": given.hex(), "size": a.size}
    ctx.bad(
        "fhir.document_no_sha256",
        "the exchange names a document by the SHA-256 of its "
        "content: send the content inline in data, or give hash as a SHA-256 (32 bytes, "
        "base64) together with size; a url or a SHA-1 hash alone cannot name it",
        where,
    )
    return out


def _document_reference(d: DocumentReference, ctx: Context) -> Pairs:
    patient, contents = ctx.patient(), d.content or []
    # Several contents are the same document in several formats: send one with a SHA-256.
    usable = [
        n
        for n, c in enumerate(contents)
        if c.attachment is not None
        and (c.attachment.data is not None or len(c.attachment.hash or b"") == 32)
    ] or [0]
    if len(contents) > 1:
        ctx.note(f"content[{usable[0]}] is sent; the other formats of the document are not")
    att = contents[usable[0]].attachment if contents else None
    if att is None:
        ctx.bad("fhir.required", "content is needed", "content")
        return []
    context = d.context
    period = context.period if context else None
    created = d.date or att.creation or (period.start if period else None)
    doc_type = _coded(ctx, d.type, "type")
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": patient,
                    "type": doc_type,
                    "title": att.title or d.description or _text(d.type),
                    **_attachment(att, ctx, f"content[{usable[0]}].attachment"),
                    "created": ctx.instant(created, "date", required=True),
                    "author": ctx.display(_first(d.author), "author[0]", PEOPLE),
                    "encounter": ctx.link(
                        _first(context.encounter) if context else None,
                        "Encounter",
                        "context.encounter[0]",
                    ),
                }
            ),
        )
    ]


def _diagnostic_report(r: DiagnosticReport, ctx: Context) -> Pairs:
    forms = r.presentedForm or []
    if not forms:
        ctx.note("no presentedForm: a report's results are sent as their Observations")
        return []
    if ctx.entry.path in ctx.index.documented:
        ctx.note(
            "its presentedForm is sent as the DocumentReference of this document that names it"
        )
        return []
    patient, doc_type = ctx.patient(), _coded(ctx, r.code, "code")
    created = (
        r.issued or r.effectiveDateTime or (r.effectivePeriod.start if r.effectivePeriod else None)
    )
    common = _compact(
        {
            "patient": patient,
            "type": doc_type,
            "created": ctx.instant(created, "issued", required=True),
            "author": ctx.display(_first(r.performer), "performer[0]", PEOPLE),
            "encounter": ctx.link(r.encounter, "Encounter", "encounter"),
        }
    )
    sid = ctx.entry.source_id
    return [
        (
            sid if len(forms) == 1 else f"{sid}#{n}",
            _compact(
                {
                    **common,
                    "title": form.title or _text(r.code),
                    **_attachment(form, ctx, f"presentedForm[{n}]"),
                }
            ),
        )
        for n, form in enumerate(forms)
    ]


Mapper = Callable[[Any, Context], Pairs]
MAPPERS: dict[str, tuple[str, Mapper, Any]] = {
    "Patient": ("patient", _patient, Patient),
    "Encounter": ("encounter", _encounter, Encounter),
    "Condition": ("condition", _condition, Condition),
    "Observation": ("observation", _observation, Observation),
    "MedicationRequest": ("medication_request", _medication_request, MedicationRequest),
    "MedicationDispense": ("medication_dispense", _medication_dispense, MedicationDispense),
    "Procedure": ("procedure", _procedure, Procedure),
    "Immunization": ("immunization", _immunization, Immunization),
    "AllergyIntolerance": ("allergy", _allergy, AllergyIntolerance),
    "DocumentReference": ("document", _document_reference, DocumentReference),
    "DiagnosticReport": ("document", _diagnostic_report, DiagnosticReport),
    **REFERRAL_MAPPERS,  # ServiceRequest (a referral) and Task (a step of one)
}
