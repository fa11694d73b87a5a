"""FHIR R4 referrals → canonical referral items (for adapters/fhir.py): a ServiceRequest that is
a referral (转诊申请) becomes a ``referral``, a Task about one a ``referral_action``. Pure, no IO.

A ServiceRequest is a referral when its category or code is SNOMED CT 3457005 (patient
referral) or 306206005 (referral to service), or when its intent is order or plan and a
performer is an Organization, unless its category says it is a laboratory, imaging,
counselling, education or surgical order or its code is a LOINC test; any other
ServiceRequest is reported as not mapped, and so is a Task about one. The
receiving institution is that performer, resolved like any Organization reference
(adapters/fhir_context.py), or named directly by an identifier of system
urn:county-hie:institution.

A Task names its referral by ``focus``: a ServiceRequest of the document, one sent before
(``ServiceRequest/<id>``), or the exchange's own reference as an identifier of system
urn:county-hie:referral (``<sending institution>/<source_id>``). The sending institution is
the Task's requester when that is an Organization of the consortium, else the institution
submitting. Task.status says the step: accepted → accept, rejected → reject, in-progress →
arrive, completed → complete, cancelled → cancel (statusReason is the reason, and a rejection
or cancellation must give one); draft, requested, received and ready say nothing yet. A
completed Task whose code or businessStatus has code ``back_refer`` or ``follow_up`` of system
urn:county-hie:referral-action is that step instead (any other action code given there
must agree with the status). Its content comes from Task.output,
by output type, a code of system urn:county-hie:referral-output or the type's text:
``diagnosis`` (a CodeableConcept, or a Condition of the document), ``results``,
``treatment``, ``follow-up-plan`` and ``department`` (text), ``appointment`` (a date and time
with its offset); Task.note becomes the action's notes, Task.location its department.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from adapters.fhir_context import _NOT_HERE, INSTITUTION_SYSTEM, Context, Entry, _identifiers
from domain.referral_items import ACTIONS

Pairs = list[tuple[str, dict[str, Any]]]

SNOMED = "http://snomed.info/sct"
REFERRAL_CODES = {(SNOMED, "3457005"), (SNOMED, "306206005")}
# Orders that go to another organisation without being a referral of the patient: a lab test
# sent to the regional laboratory, an imaging study, counselling, education, surgery (the
# FHIR servicerequest-category examples), or any order coded as a LOINC test.
NOT_REFERRALS = {
    (SNOMED, "108252007"),
    (SNOMED, "363679005"),
    (SNOMED, "409063005"),
    (SNOMED, "409073007"),
    (SNOMED, "387713003"),
}
LOINC = "http://loinc.org"
REFERRAL_SYSTEM = "urn:county-hie:referral"
ACTION_SYSTEM = "urn:county-hie:referral-action"
OUTPUT_SYSTEM = "urn:county-hie:referral-output"
OUTPUTS = ("diagnosis", "results", "treatment", "follow-up-plan", "department", "appointment")
PRIORITIES = {"routine": "routine", "urgent": "urgent", "asap": "urgent", "stat": "emergency"}
TASK_ACTIONS = {
    "accepted": "accept",
    "rejected": "reject",
    "in-progress": "arrive",
    "completed": "complete",
    "cancelled": "cancel",
}
NOT_YET = ("draft", "requested", "received", "ready")
DOCTORS = ("Practitioner", "PractitionerRole")
ACTORS = ("Practitioner", "PractitionerRole", "Organization")
REASONS = ("Condition", "Observation", "DiagnosticReport", "DocumentReference")
CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,32}/\S{1,200}")
MAX_TEXT = 4000
MAX_CODES = 20


def _compact(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None and v != []}


def _text(concept: Any) -> str | None:
    if concept is None:
        return None
    return concept.text or next((c.display for c in concept.coding or [] if c.display), None)


def _joined(texts: list[str], sep: str = "; ") -> str | None:
    unique = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    return sep.join(unique)[:MAX_TEXT] or None


# ServiceRequest → referral ---------------------------------------------------------------------


def is_referral(sr: ServiceRequest, ctx: Context) -> bool:
    concepts = [*(sr.category or []), *([sr.code] if sr.code else [])]
    codings = [(c.system, c.code) for cc in concepts for c in cc.coding or []]
    if any(pair in REFERRAL_CODES for pair in codings):
        return True
    if any(pair in NOT_REFERRALS or pair[0] == LOINC for pair in codings):
        return False  # a lab or imaging order to another organisation is not a referral
    return sr.intent in ("order", "plan") and any(
        _institution(ctx, p)[0] is not None
        or p.type == "Organization"
        or (p.reference or "").startswith("Organization/")
        or ctx.follow(p, ("Organization",))[0] is not None
        for p in sr.performer or []
    )


def _service_request(sr: ServiceRequest, ctx: Context) -> Pairs:
    if not is_referral(sr, ctx):
        ctx.note(
            "a ServiceRequest that is not a referral (category or code SNOMED CT 3457005 "
            "or 306206005, or intent order or plan to a performer Organization) is not "
            "mapped"
        )
        return []
    if sr.status == "draft":
        ctx.note("a draft referral is not sent; send it when it is active", "status")
        return []
    if sr.status != "active" or sr.doNotPerform:
        ctx.bad(
            "fhir.referral_status",
            "a referral is sent as an active ServiceRequest (and "
            "not doNotPerform); to cancel one sent before, send a Task with status "
            "cancelled whose focus is it",
            "doNotPerform" if sr.doNotPerform else "status",
        )
        return []
    patient = ctx.patient()
    to_institution = _performer(ctx, sr)
    doctor = ctx.display(sr.requester, "requester", DOCTORS)
    if doctor is None:
        ctx.bad(
            "fhir.required",
            "requester is needed: the referring doctor, a Practitioner or "
            "PractitionerRole with a name (or a display)",
            "requester",
        )
    reason, impression = _reasons(ctx, sr)
    urgency = PRIORITIES.get(sr.priority or "routine")
    if urgency is None:  # never taken as routine: it may be an emergency
        ctx.bad(
            "fhir.referral_priority", f"priority must be one of {', '.join(PRIORITIES)}", "priority"
        )
    location = sr.locationReference[0] if sr.locationReference else None
    department = (
        ctx.display(location, "locationReference[0]", ("Location",))
        or _text(sr.locationCode[0] if sr.locationCode else None)
        or _text(sr.performerType)
    )
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": patient,
                    "to_institution": to_institution,
                    "to_department": department,
                    "referring_doctor": doctor,
                    "urgency": urgency,
                    "reason": reason,
                    "impression": impression,
                    "history": _joined([n.text for n in sr.note or [] if n.text], "\n"),
                    "requested_at": ctx.instant(sr.authoredOn, "authoredOn", required=True),
                }
            ),
        )
    ]


def _institution(ctx: Context, ref: Any) -> tuple[str | None, str | None]:
    """The consortium institution an Organization reference names: (code, None) or (None,
    why not)."""
    ident = ref.identifier if ref is not None else None
    if (
        ident is not None
        and ident.system == INSTITUTION_SYSTEM
        and ident.value
        and CODE.fullmatch(ident.value)
    ):
        return ident.value, None
    target, why = ctx.follow(ref, ("Organization",))
    if target is None:
        return None, why or "is empty"
    if target.institution is not None:
        return target.institution, None
    entry: Entry = target.entry  # type: ignore[assignment]
    raw = entry.raw or (entry.resource.model_dump(mode="json") if entry.resource else {})
    for system, value in _identifiers(raw):
        code = ctx.index.institution_for(system, value) or (
            value if system == INSTITUTION_SYSTEM and CODE.fullmatch(value) else None
        )
        if code is not None:
            return code, None
    return None, "refers to an Organization with no identifier of a consortium institution"


def _performer(ctx: Context, sr: ServiceRequest) -> str | None:
    """The first performer that names a consortium institution: where the patient goes."""
    whys = []
    for n, ref in enumerate(sr.performer or []):
        code, why = _institution(ctx, ref)
        if code is not None:
            return code
        whys.append(f"performer[{n}] {why}")
    ctx.bad(
        "fhir.referral_institution",
        f"{'; '.join(whys) or 'performer is missing'}: a "
        "referral needs the receiving institution, an Organization the exchange knows (an "
        f"identifier mapped in institutions, or one of system {INSTITUTION_SYSTEM})",
        "performer",
    )
    return None


def _reasons(ctx: Context, sr: ServiceRequest) -> tuple[str | None, list[dict[str, str]]]:
    """reasonCode and reasonReference: their text is the reason, a Condition's code or a coded
    reason the initial impression (初步诊断)."""
    texts, codes = [], []
    for cc in sr.reasonCode or []:
        texts.append(_text(cc) or "")
        codes.append(ctx.first_coding(cc))
    for n, ref in enumerate(sr.reasonReference or []):
        target, why = ctx.follow(ref, REASONS)
        found = target.entry.resource if target is not None and target.entry else None
        if found is None:
            if why is not None:
                ctx.note(
                    f"{why}; its display text is used" if ref.display else f"{why}; it is left out",
                    f"reasonReference[{n}]",
                )
            texts.append(ref.display or "")
            continue
        concept = getattr(found, "code", None) or getattr(found, "type", None)
        texts.append(_text(concept) or ref.display or "")
        if target.entry.rtype == "Condition":  # type: ignore[union-attr]
            codes.append(ctx.first_coding(concept))
    impression = list({str(sorted(c.items())): c for c in codes if c}.values())
    if len(impression) > MAX_CODES:
        ctx.note(f"the impression keeps the first {MAX_CODES} codes", "reasonCode")
    reason = _joined(texts) or _joined([c.get("display") or c["code"] for c in impression])
    if reason is None:
        ctx.bad(
            "fhir.required",
            "reasonCode or reasonReference is needed: the reason for the referral",
            "reasonCode",
        )
    return reason, impression[:MAX_CODES]


# Task → referral_action ------------------------------------------------------------------------


def _task(t: Task, ctx: Context) -> Pairs:
    found = _referral_of(ctx, t)
    if found is None:
        return []
    reference, request = found
    action = _action(ctx, t)
    if action is None:
        return []
    patient = ctx.patient("for") if t.for_fhir is not None else _patient_of(ctx, request)
    reason = _text(t.statusReason)
    if action in ("reject", "cancel") and reason is None:
        ctx.bad(
            "fhir.required",
            "statusReason is needed: a rejection or cancellation must give its reason",
            "statusReason",
        )
    content = _outputs(ctx, t)
    if action == "back_refer" and not ("diagnosis" in content and "follow_up_plan" in content):
        ctx.bad(
            "fhir.referral_back_referral",
            "a back-referral needs Task.output of type "
            f"diagnosis and follow-up-plan (system {OUTPUT_SYSTEM})",
            "output",
        )
    sender_side = action in ("cancel", "follow_up")
    by = ctx.display(
        t.requester if sender_side else t.owner, "requester" if sender_side else "owner", ACTORS
    )
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": patient,
                    "referral": reference,
                    "action": action,
                    "at": ctx.instant(
                        t.lastModified or t.authoredOn, "lastModified", required=True
                    ),
                    "by": by,
                    "reason": reason,
                    "department": ctx.display(t.location, "location", ("Location",)),
                    **{k: v for k, v in content.items() if v is not None},
                    "notes": _joined([n.text for n in t.note or [] if n.text], "\n"),
                }
            ),
        )
    ]


def _referral_of(ctx: Context, t: Task) -> tuple[str, Entry | None] | None:
    """The referral a Task is a step of, and its ServiceRequest when in the document."""
    focus = t.focus
    ident = focus.identifier if focus is not None else None
    if ident is not None and ident.system == REFERRAL_SYSTEM and ident.value:
        if REFERENCE.fullmatch(ident.value):
            return ident.value, None
        ctx.bad(
            "fhir.referral_reference",
            f"focus.identifier of system {REFERRAL_SYSTEM} "
            "must be <sending institution>/<source_id of the request>",
            "focus.identifier",
        )
        return None
    target, why = ctx.follow(focus, ("ServiceRequest",))
    text = (focus.reference or "") if focus is not None else ""
    if target is not None and target.entry is not None and target.entry.resource is not None:
        request: Entry | None = target.entry
        sid = target.entry.source_id
        if text.startswith("#"):
            ctx.bad(
                "fhir.referral_unresolved",
                "focus is a contained ServiceRequest, which "
                "was never sent as a referral: refer to the ServiceRequest sent",
                "focus",
            )
            return None
        if not is_referral(target.entry.resource, Context(target.entry, ctx.index)):
            ctx.note("its focus is a ServiceRequest that is not a referral; not mapped", "focus")
            return None
    elif why == _NOT_HERE and re.fullmatch(r"ServiceRequest/[A-Za-z0-9\-.]{1,64}", text):
        request, sid = None, text  # sent before: the adapter named it by the same Type/id
    elif why is not None and (
        text.startswith("ServiceRequest") or getattr(focus, "type", None) == "ServiceRequest"
    ):
        ctx.bad(
            "fhir.referral_unresolved",
            f"focus {why}; name the referral by a "
            f"ServiceRequest or an identifier of system {REFERRAL_SYSTEM}",
            "focus",
        )
        return None
    else:
        ctx.note(
            "a Task whose focus is not a ServiceRequest is not a referral step; not mapped", "focus"
        )
        return None
    sender = _institution(ctx, t.requester)[0] if t.requester is not None else None
    return f"{sender or ctx.institution}/{sid}", request


def _action(ctx: Context, t: Task) -> str | None:
    """The step: from Task.status, or back_refer / follow_up from the Task's code or
    businessStatus (any other action code given there must agree with the status)."""
    said = {
        c.code
        for cc in (t.code, t.businessStatus)
        if cc is not None
        for c in cc.coding or []
        if c.system == ACTION_SYSTEM and c.code
    }
    code = said.pop() if len(said) == 1 else None
    if len(said) > 0 or (code is not None and code not in ACTIONS):
        ctx.bad(
            "fhir.referral_action",
            f"a Task gives at most one code of system {ACTION_SYSTEM}, one of {', '.join(ACTIONS)}",
            "code",
        )
        return None
    if code in ("back_refer", "follow_up"):
        if t.status != "completed":
            ctx.bad(
                "fhir.referral_task_status",
                "a back-referral or follow-up is sent as a completed Task",
                "status",
            )
            return None
        return code
    if t.status in NOT_YET and code is None:
        ctx.note(
            f"Task.status {t.status} is not a step of the referral yet (its request is "
            "the ServiceRequest); nothing is sent",
            "status",
        )
        return None
    action = TASK_ACTIONS.get(t.status or "")
    if action is None:
        ctx.bad(
            "fhir.referral_task_status",
            f"Task.status is no step of a referral: {', '.join(TASK_ACTIONS)} are mapped",
            "status",
        )
    elif code is not None and code != action:
        ctx.bad(
            "fhir.referral_action",
            f"the code of system {ACTION_SYSTEM} names another step than Task.status does",
            "code",
        )
        return None
    return action


def _patient_of(ctx: Context, request: Entry | None) -> dict[str, str] | None:
    if request is None:
        ctx.bad(
            "fhir.required",
            "for is needed: the patient (or the referral's ServiceRequest in the document)",
            "for",
        )
        return None
    inner = Context(request, ctx.index)
    found = inner.patient()
    ctx.problems += inner.problems
    return found


def _output_kind(out: Any) -> str | None:
    """An output's type: a code of system urn:county-hie:referral-output, or its text
    ("follow-up plan" reads as follow-up-plan)."""
    concept = out.type
    codes = (
        [c.code for c in concept.coding or [] if c.system == OUTPUT_SYSTEM]
        if concept is not None
        else []
    )
    text = (concept.text or "").strip().lower().replace(" ", "-") if concept is not None else ""
    return next((k for k in [*codes, text] if k in OUTPUTS), None)


def _outputs(ctx: Context, t: Task) -> dict[str, Any]:
    """Task.output by type → the action's content (see the module's docstring)."""
    texts: dict[str, list[str]] = {}
    content: dict[str, Any] = {}
    diagnosis: list[dict[str, str]] = []
    for n, out in enumerate(t.output or []):
        kind, where = _output_kind(out), f"output[{n}]"
        if kind is None:
            ctx.note(
                f"an output whose type is none of {', '.join(OUTPUTS)} (system "
                f"{OUTPUT_SYSTEM}) is not sent",
                where,
            )
        elif kind == "diagnosis":
            diagnosis += _diagnosis(ctx, out, where)
        elif kind == "appointment":
            when = out.valueDateTime or out.valueString
            if isinstance(when, str):
                try:
                    when = datetime.fromisoformat(when)
                except ValueError:
                    when = None
            content["appointment"] = ctx.instant(when, f"{where}.valueDateTime", required=True)
        elif out.valueString or out.valueMarkdown:
            texts.setdefault(kind, []).append(str(out.valueString or out.valueMarkdown))
        else:
            ctx.bad(
                "fhir.referral_output",
                f"an output of type {kind} gives its text as valueString or valueMarkdown",
                where,
            )
    content |= {k.replace("-", "_"): _joined(v, "\n") for k, v in texts.items()}
    if "department" in content:
        content["department"] = content["department"][:500]
    if diagnosis:
        content["diagnosis"] = list({str(sorted(c.items())): c for c in diagnosis}.values())
    return content


def _diagnosis(ctx: Context, out: Any, where: str) -> list[dict[str, str]]:
    if out.valueCodeableConcept is not None:
        found = ctx.first_coding(out.valueCodeableConcept)
        return [found] if found else []
    target, why = ctx.follow(out.valueReference, ("Condition",))
    if target is not None and target.entry is not None and target.entry.resource is not None:
        found = ctx.first_coding(target.entry.resource.code)
        return [found] if found else []
    ctx.bad(
        "fhir.referral_output",
        f"a diagnosis output is a coded valueCodeableConcept or a "
        f"valueReference to a Condition of the document{'; it ' + why if why else ''}",
        where,
    )
    return []


REFERRAL_MAPPERS: dict[str, tuple[str, Any, Any]] = {
    "ServiceRequest": ("referral", _service_request, ServiceRequest),
    "Task": ("referral_action", _task, Task),
}
