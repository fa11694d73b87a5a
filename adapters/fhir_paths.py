"""Problems in FHIR's terms (for adapters/fhir.py): where a canonical field came from in the
resource (``MedicationRequest.dosageInstruction[0].doseAndRate[0].doseQuantity``, not
``dose``), and the rule it broke in the exchange's words with a stable code, never a
validation library's wording. Pure.

Codes: a rule of the exchange keeps its own (``time.invalid``, ``encounter.start_missing``,
``resident_id.check_digit``); a generic rule is ``value.<rule>`` (``value.required``,
``value.not_allowed``, ``value.too_long``, ...), prefixed ``fhir.`` when the resource broke
FHIR's own structure (``fhir.value.not_list``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from domain.clinical import Item, parse_payload
from domain.intake import item_problems as intake_problems
from domain.problems import Problem

# Where each canonical field of a kind comes from in its FHIR resource. A path marked "cc"
# is a CodeableConcept: a Coding's own fields sit under its first coding.
_SUBJECT = {"patient": "subject"}
FHIR_PATHS: dict[str, dict[str, str]] = {
    "patient": {
        "patient": "identifier",
        "name": "name",
        "gender": "gender",
        "birth_date": "birthDate",
    },
    "encounter": {
        **_SUBJECT,
        "encounter_class": "class",
        "start": "period.start",
        "end": "period.end",
        "department": "serviceType",
        "reason": "reasonCode cc",
        "admit_source": "hospitalization.admitSource",
        "discharge_disposition": "hospitalization.dischargeDisposition",
        "attending": "participant",
    },
    "condition": {
        **_SUBJECT,
        "code": "code cc",
        "clinical_status": "clinicalStatus",
        "verification_status": "verificationStatus",
        "onset": "onset[x]",
        "recorded": "recordedDate",
    },
    "observation": {
        **_SUBJECT,
        "code": "code cc",
        "effective": "effective[x]",
        "effective_end": "effectivePeriod.end",
        "value_quantity": "valueQuantity",
        "value_string": "valueString",
        "value_coding": "valueCodeableConcept cc",
        "reference_range": "referenceRange[0]",
        "interpretation": "interpretation[0] cc",
    },
    "medication_request": {
        **_SUBJECT,
        "medication": "medication[x] cc",
        "authored": "authoredOn",
        "dosage_text": "dosageInstruction[0].text",
        "dose": "dosageInstruction[0].doseAndRate[0].doseQuantity",
        "route": "dosageInstruction[0].route cc",
        "frequency": "dosageInstruction[0].timing",
        "quantity": "dispenseRequest.quantity",
        "duration_days": "dispenseRequest.expectedSupplyDuration",
    },
    "medication_dispense": {
        **_SUBJECT,
        "medication": "medication[x] cc",
        "handed_over": "whenHandedOver",
        "days_supply": "daysSupply",
        "dosage_text": "dosageInstruction[0].text",
        "prescription": "authorizingPrescription[0]",
    },
    "procedure": {
        **_SUBJECT,
        "code": "code cc",
        "performed": "performed[x]",
        "body_site": "bodySite[0] cc",
        "performer": "performer[0].actor",
    },
    "immunization": {
        "patient": "patient",
        "vaccine": "vaccineCode cc",
        "occurrence": "occurrenceDateTime",
        "lot_number": "lotNumber",
        "dose_number": "protocolApplied[0].doseNumberPositiveInt",
        "site": "site cc",
        "route": "route cc",
    },
    "allergy": {
        "patient": "patient",
        "substance": "code cc",
        "clinical_status": "clinicalStatus",
        "verification_status": "verificationStatus",
        "reactions": "reaction[0].manifestation cc",
        "recorded": "recordedDate",
    },
    "document": {
        **_SUBJECT,
        "type": "type cc",
        "title": "content[0].attachment.title",
        "created": "date",
        "content_type": "content[0].attachment.contentType",
        "sha256": "content[0].attachment.hash",
        "size": "content[0].attachment.size",
        "data": "content[0].attachment.data",
        "author": "author[0]",
    },
    "consent": {
        "patient": "patient",
        "consent_type": "category",
        "scope": "provision.actor",
        "purposes": "provision.purpose",
        "categories": "provision.securityLabel",
        "valid_from": "provision.period.start",
        "valid_to": "provision.period.end",
        "notice_sha256": "policy",
        "signed_by": "performer",
        "guardian": "performer",
        "signed_document": "sourceAttachment",
    },
    "referral": {
        **_SUBJECT,
        "to_institution": "performer",
        "referring_doctor": "requester",
        "urgency": "priority",
        "reason": "reasonCode",
        "impression": "reasonCode cc",
        "history": "note",
        "requested_at": "authoredOn",
    },
    "referral_action": {
        "patient": "for",
        "referral": "focus",
        "action": "status",
        "at": "lastModified",
        "by": "owner",
        "reason": "statusReason",
        "department": "location",
        "notes": "note",
    },
}
# Rules of a whole item, by their code: the element they are about.
_ABOUT = {
    "encounter.start_missing": "period.start",
    "encounter.end_before_start": "period",
    "observation.no_time": "effective[x]",
    "observation.values": "value[x]",
    "observation.period": "effectivePeriod",
    "patient.no_identifier": "identifier",
    "consent.period": "provision.period",
    "consent.guardian": "performer",
}
_ITEM_FIELDS = {"source_id": "id", "record": "id", "amends": "id"}
_CODING = frozenset({"system", "code", "display", "version"})


def rule_words(err: Any) -> tuple[str, str] | None:
    ctx: dict[str, Any] = err.get("ctx") or {}
    rules: dict[str, tuple[str, Callable[[], str]]] = {
        "missing": ("required", lambda: "is required"),
        "string_type": ("not_text", lambda: "must be text"),
        "string_too_short": ("empty", lambda: "must not be empty"),
        "string_too_long": (
            "too_long",
            lambda: f"must be at most {ctx.get('max_length')} characters",
        ),
        "string_pattern_mismatch": ("format", lambda: "does not have the form the exchange takes"),
        "literal_error": ("not_allowed", lambda: f"must be one of {ctx.get('expected')}"),
        "enum": ("not_allowed", lambda: f"must be one of {ctx.get('expected')}"),
        "decimal_parsing": ("not_number", lambda: "must be a number"),
        "decimal_type": ("not_number", lambda: "must be a number"),
        "float_parsing": ("not_number", lambda: "must be a number"),
        "float_type": ("not_number", lambda: "must be a number"),
        "int_parsing": ("not_integer", lambda: "must be a whole number"),
        "int_type": ("not_integer", lambda: "must be a whole number"),
        "int_from_float": ("not_integer", lambda: "must be a whole number"),
        "greater_than_equal": ("out_of_range", lambda: f"must be at least {ctx.get('ge')}"),
        "less_than_equal": ("out_of_range", lambda: f"must be at most {ctx.get('le')}"),
        "greater_than": ("out_of_range", lambda: f"must be more than {ctx.get('gt')}"),
        "less_than": ("out_of_range", lambda: f"must be less than {ctx.get('lt')}"),
        "too_short": ("too_few", lambda: f"must have at least {ctx.get('min_length')} entries"),
        "too_long": ("too_many", lambda: f"must have at most {ctx.get('max_length')} entries"),
        "list_type": ("not_list", lambda: "must be a list (an array)"),
        "dict_type": ("not_object", lambda: "must be an element with fields (a JSON object)"),
        "model_type": ("not_object", lambda: "must be an element with fields (a JSON object)"),
        "model_attributes_type": ("not_object", lambda: "must be an element with fields"),
        "extra_forbidden": ("unexpected", lambda: "is not an element FHIR defines here"),
        "bool_type": ("not_boolean", lambda: "must be true or false"),
        "bool_parsing": ("not_boolean", lambda: "must be true or false"),
        "value_error": ("invalid", lambda: str(err["msg"]).removeprefix("Value error, ")),
        "model_validation_format": ("not_object", lambda: "must be an element with fields"),
    }
    found = rules.get(err["type"])
    return None if found is None else (f"value.{found[0]}", found[1]())


def _fhir_type_words(message: str) -> str:
    """fhir.resources says a primitive's regex failed; say which FHIR type it must be."""
    for name, words in (
        (
            "DateTime",
            "a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or a date and time with its offset)",
        ),
        ("Instant", "a FHIR instant (a date and time with seconds and its offset)"),
        ("Date", "a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
        ("Time", "a FHIR time (hh:mm:ss)"),
        ("Uri", "a URI"),
        ("Url", "a URL"),
        ("Code", "a code (no leading or trailing spaces)"),
        ("Id", "an id (letters, digits, '-' and '.', at most 64)"),
        ("Base64", "base64 data"),
    ):
        if message.startswith(f"{name} value"):
            return f"must be {words}"
    return "is not valid here"


def item_problems(item: dict[str, Any], *, where: str, source_id: str) -> list[Problem]:
    """The gateway's own checks on one mapped item, as problems in the FHIR resource's terms."""
    try:
        parsed = Item.model_validate(item)
    except ValidationError as exc:  # the item's own fields (its id): loc starts at the item
        return [
            _problem(err, where, source_id, {}, _ITEM_FIELDS)
            for err in exc.errors(include_url=False, include_input=False)
        ]
    paths = FHIR_PATHS.get(parsed.kind, {})
    try:
        payload = parse_payload(parsed.kind, parsed.payload)
    except ValidationError as exc:
        return [
            _problem(err, where, source_id, paths, None)
            for err in exc.errors(include_url=False, include_input=False)
        ]
    # The rules of what comes in (a resident ID's division), at their FHIR element.
    return [
        Problem(
            p.code,
            p.message,
            f"{where}.{_element(p.field.strip('.').split('.'), paths)}",
            None,
            source_id,
        )
        for p in intake_problems(payload, prefix="", source_id=source_id)
    ]


def structure_problems(exc: ValidationError, prefix: str) -> list[Problem]:
    """What the FHIR models say of a resource's structure; its paths are FHIR's already."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [p for p in err["loc"] if p != "root"]  # the models' own wrapper, not FHIR's
        field = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        said = None if err["type"] == "value_error" else rule_words(err)
        if said is None:  # the FHIR models' own checks of a primitive's form
            said = ("value.invalid", _fhir_type_words(err["msg"].removeprefix("Value error, ")))
        problems.append(Problem(f"fhir.{said[0]}", said[1], field))
    return problems


def _problem(
    err: Any,
    where: str,
    source_id: str,
    paths: dict[str, str],
    item_fields: dict[str, str] | None,
) -> Problem:
    loc = list(err["loc"])
    if item_fields is not None:
        element = item_fields.get(str(loc[0]), "") if loc else ""
    else:
        element = _element(loc, paths) if loc else _ABOUT.get(err["type"], "")
    said = rule_words(err) or (err["type"], err["msg"].removeprefix("Value error, "))
    field = f"{where}.{element}" if element else where
    return Problem(said[0], said[1], field, None, source_id)


def _element(loc: list[Any], paths: dict[str, str]) -> str:
    """The FHIR path of a canonical field's location (its first step mapped, the rest kept
    where FHIR's names are the same: a quantity's value and unit, a coding's code)."""
    head, *rest = loc
    mapped = paths.get(str(head), str(head))
    path, _, concept = mapped.partition(" ")
    for step in rest:
        if isinstance(step, int):
            path = path.removesuffix("[0]") + f"[{step}]"
        elif concept and step in _CODING:
            path += f".coding[0].{step}"
        elif step in ("resident_id", "mrn", "health_card"):
            break  # the patient's identifiers
        else:
            path += f".{step}"
    return path
