"""HL7 v2 referral messages → canonical referral items (for adapters/hl7v2.py): REF^I12 (a
patient referral, 转诊申请) and REF^I14 (its cancellation by the referring institution). Pure,
no IO.

A REF^I12 is one ``referral``, named by its originating referral identifier (RF1-6), so that
the REF^I14 that cancels it names it too: ``<institution>/<RF1-6>``. The receiving institution
is the receiving facility (MSH-6), through the caller's ``facilities`` map (HL7 facility →
consortium institution code); a facility the map does not name is taken as the code itself
when it is one. Each mapper reports what is wrong on the message and leaves the item out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from adapters.hl7v2_fields import Msg, Segment
from adapters.hl7v2_patient import Item, Ref, _compact, key

CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
# HL7 table 0280 (referral priority), and the words senders spell them with.
PRIORITIES = {
    "S": "emergency",
    "STAT": "emergency",
    "A": "urgent",
    "ASAP": "urgent",
    "R": "routine",
    "ROUTINE": "routine",
}
# Segments a message note (NTE) may follow that make it a note on a result, not the referral.
RESULT_GROUP = {"OBR", "OBX", "ORC", "SPM", "TQ1", "PRT"}
CANCELLED = "cancelled by the referring institution (REF^I14)"
MAX_TEXT = 4000  # the canonical limit on a referral's free text
MAX_CODES = 20


def referral(msg: Msg, ref: Ref) -> list[Item]:
    """REF^I12: the referral request, from RF1, the providers (PRD), DG1, PR1 and NTE."""
    rf1 = _rf1(msg)
    if rf1 is None:
        return []
    number = msg.value(rf1, 6)
    if number is None:
        msg.bad(
            "hl7.required",
            "RF1-6 (originating referral identifier) is needed: it names "
            "the referral, and a later REF^I14 or action names it by the same number",
            rf1.at(6),
            msg.source_id(rf1),
        )
        return []
    sid = key(number)
    before = len(msg.problems)
    urgency = _urgency(msg, rf1, sid)
    to_institution = _receiving_institution(msg, sid)
    doctor = _referring_doctor(msg, sid)
    reason = _reason(msg, rf1, sid)
    requested_at = _requested_at(msg, rf1, sid)
    if len(msg.problems) > before:
        return []
    payload = {
        "patient": ref,
        "to_institution": to_institution,
        "from_department": _department(msg, _provider(msg, "RP")),
        "to_department": _department(msg, _provider(msg, "RT")),
        "referring_doctor": doctor,
        "urgency": urgency,
        "reason": reason,
        "impression": _impression(msg),
        "history": _notes(msg),
        "treatment": _treatment(msg),
        "requested_at": requested_at,
    }
    return [(rf1.label, {"source_id": sid, "kind": "referral", "payload": _compact(payload)})]


def cancellation(msg: Msg, ref: Ref) -> list[Item]:
    """REF^I14: the referring institution cancels the referral RF1-6 names.

    RF1 has no field for why a referral is cancelled, and a message note may say anything
    (often something about the results): the reason is a fixed text, the notes go as
    ``notes``.
    """
    rf1 = _rf1(msg)
    if rf1 is None:
        return []
    number = msg.value(rf1, 6)
    if number is None:
        msg.bad(
            "hl7.required",
            "RF1-6 (originating referral identifier) is needed to name the "
            "referral a REF^I14 cancels",
            rf1.at(6),
            msg.source_id(rf1),
        )
        return []
    sid = f"{key(number)}/cancel"  # a referral is cancelled once: a resend is the same item
    msh = msg.segments[0]
    at = msg.instant(msh, 7, required="a cancellation (when it was cancelled)", source_id=sid)
    if at is None:
        return []
    by = _provider(msg, "RP")
    payload = {
        "patient": ref,
        "referral": f"{msg.institution}/{key(number)}",
        "action": "cancel",
        "at": at,
        "by": msg.person_name(by, 2) if by else None,
        "reason": CANCELLED,
        "notes": _notes(msg),
    }
    return [
        (rf1.label, {"source_id": sid, "kind": "referral_action", "payload": _compact(payload)})
    ]


def _rf1(msg: Msg) -> Segment | None:
    rf1 = msg.first("RF1")
    if rf1 is None:
        msg.bad("hl7.required", f"a {msg.type} needs an RF1 segment (the referral)", "RF1")
    return rf1


def _urgency(msg: Msg, rf1: Segment, sid: str) -> str:
    """RF1-2; an unknown priority is refused, not taken as routine: it may be an emergency."""
    code = msg.value(rf1, 2)
    if code is None:
        return "routine"
    urgency = PRIORITIES.get(code.upper())
    if urgency is None:
        msg.bad(
            "hl7.referral_priority",
            "RF1-2 is not a referral priority of HL7 table 0280 "
            "(S stat → emergency, A ASAP → urgent, R routine); the exchange does not guess "
            "how urgent a referral is",
            rf1.at(2),
            sid,
        )
        return "routine"
    return urgency


def _receiving_institution(msg: Msg, sid: str) -> str | None:
    """MSH-6: its namespace id (or universal id) through ``facilities``, else the id itself."""
    msh = msg.segments[0]
    names = [n for n in (msg.value(msh, 6, 1), msg.value(msh, 6, 2)) if n]
    for name in names:
        if name in msg.facilities:
            return msg.facilities[name]
    if names and CODE.fullmatch(names[0]):
        return names[0]
    what = "names no consortium institution" if names else "is empty"
    msg.bad(
        "hl7.referral_institution",
        f"MSH-6 (receiving facility) {what}: the referral's "
        "receiving institution is read from it; map the facility to an institution code in "
        "the adapter's facilities, or send the institution code (letters, digits, _ or -, "
        "up to 32) as MSH-6.1",
        msh.at(6),
        sid,
    )
    return None


def _provider(msg: Msg, role: str) -> Segment | None:
    """The first PRD whose PRD-1 (provider role, table 0286) is ``role``: RP refers, RT
    receives."""
    for prd in (s for s in msg.segments if s.kind == "PRD"):
        roles = {
            (msg.value(prd, 1, rep=r) or "").upper() for r in range(1, msg.repeats(prd, 1) + 1)
        }
        if role in roles:
            return prd
    return None


def _referring_doctor(msg: Msg, sid: str) -> str | None:
    prd = _provider(msg, "RP")
    name = msg.person_name(prd, 2) if prd else None
    name = name or msg.person_name(msg.first("PV1"), 8, person=True)  # PV1-8 referring doctor
    if name is None:
        msg.bad(
            "hl7.required",
            "the referring doctor is needed: a PRD with PRD-1 RP "
            "(referring provider) and PRD-2 (name), or PV1-8",
            "PRD-2",
            sid,
        )
    return name


def _department(msg: Msg, prd: Segment | None) -> str | None:
    """PRD-4 (provider location): its point of care, else its facility."""
    if prd is None:
        return None
    return msg.value(prd, 4, 1) or msg.value(prd, 4, 4)


def _reason(msg: Msg, rf1: Segment, sid: str) -> str | None:
    """RF1-14 (reason text) and RF1-24 (comment), qualified by RF1-3 (type) and RF1-10
    (reason, table 0336): "Referral to Specialist (referral type: Medical; ...)"."""
    said = [t for t in (msg.value(rf1, 14), msg.value(rf1, 24)) if t]
    coded = [
        f"{label}: {text}"
        for label, n in (("referral type", 3), ("referral reason", 10))
        if (text := msg.value(rf1, n, 2) or msg.value(rf1, n, 1))
    ]
    if not said and not coded:
        msg.bad(
            "hl7.required",
            "a referral's reason is needed: RF1-14 (referral reason text), "
            "RF1-10 (referral reason) or RF1-24 (comment)",
            rf1.at(14),
            sid,
        )
        return None
    text = "; ".join(said) + (f" ({'; '.join(coded)})" if said and coded else "; ".join(coded))
    return text[:MAX_TEXT]


def _requested_at(msg: Msg, rf1: Segment, sid: str) -> str | None:
    """RF1-7 (effective date) when it gives the time; a date alone is not an instant, so the
    message's time (MSH-7) stands for when the referral was requested."""
    effective = msg.value(rf1, 7)
    if effective is not None and not re.fullmatch(r"\d{8}", effective):
        return msg.instant(rf1, 7, source_id=sid)
    return msg.instant(
        msg.segments[0], 7, required="a referral (when it was requested)", source_id=sid
    )


def _impression(msg: Msg) -> list[dict[str, str]]:
    """DG1-3 of every DG1: the initial impression (初步诊断), ICD-10 with its system."""
    found: list[dict[str, str]] = []
    for dg1 in (s for s in msg.segments if s.kind == "DG1"):
        code = msg.coding(dg1, 3, fallback_system=msg.value(dg1, 2))
        if code is None:
            msg.notes.append(f"{msg.type} {dg1.label}: no DG1-3 code; left out of the impression")
        elif code not in found:
            found.append(code)
    if len(found) > MAX_CODES:
        msg.notes.append(f"{msg.type} DG1: the impression keeps the first {MAX_CODES} codes")
    return found[:MAX_CODES]


def _treatment(msg: Msg) -> str | None:
    """PR1: the procedures done so far, each by its description and date."""
    done = []
    for pr1 in (s for s in msg.segments if s.kind == "PR1"):
        what = msg.value(pr1, 4) or msg.value(pr1, 3, 2) or msg.value(pr1, 3, 1)
        when = msg.value(pr1, 5) or ""
        if what:
            day = f" ({when[:4]}-{when[4:6]}-{when[6:8]})" if re.match(r"\d{8}", when) else ""
            done.append(what + day)
    return "; ".join(done)[:MAX_TEXT] or None


def _notes(msg: Msg) -> str | None:
    """NTE-3 of the message's own notes: those not on a result (after an OBR or OBX)."""
    texts: list[str] = []
    owner = ""
    for seg in msg.segments:
        if seg.kind != "NTE":
            owner = seg.kind
        elif owner not in RESULT_GROUP:
            texts += [
                t for r in range(1, msg.repeats(seg, 3) + 1) if (t := msg.value(seg, 3, rep=r))
            ]
    return "\n".join(texts)[:MAX_TEXT] or None


def facilities_checked(facilities: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's facility map, refused loudly when it maps to something not a code."""
    out = dict(facilities or {})
    wrong = [name for name, code in out.items() if not CODE.fullmatch(str(code))]
    if wrong:
        raise ValueError(
            f"facilities must map to institution codes (letters, digits, _ or -, "
            f"up to 32); not for {', '.join(sorted(wrong))}"
        )
    return out
