"""HL7 v2 visits → canonical payloads (for adapters/hl7v2.py): the encounter of an ADT message
(PV1, PV2), its diagnoses (DG1), and the visit record every item of a message links to. Pure,
no IO.

A visit's record is ``enc:<PV1-19>`` when the sender gives its visit number. Without PV1-19 (an
outpatient registration, many an ADT^A04) it is derived, ``enc:derived:<24 hex digits>``: the
start of SHA-256 over the institution, the patient's identifier within it (the MRN, else the
resident ID, else the health card, each with its kind), the encounter class (PV1-2) and the
visit's start to the minute, in UTC. The start is PV1-44 (admit time); for an A05
pre-admission PV2-8 (expected admit time) first; and for an A01 or A04 that gives no PV1-44,
the event's own time (EVN-6, else EVN-2), since that event is the admission. Hence:

- the same visit sent again derives the same id, and so does each later message about it (an
  A08 update, the A03 discharge) that gives the admit time in PV1-44. One that gives neither
  PV1-19 nor PV1-44 is refused (``hl7.required`` PV1-44), never guessed: its own event time (a
  discharge's) is not the visit's start; one whose start is given to the day only is refused
  as ``hl7.no_visit_number``: a day does not tell a patient's visits apart;
- two visits of a patient differ in start (or class), two patients in identifier; two visits
  of one patient and class starting in the same minute would be taken as one;
- to the minute, so a discharge giving the admit time without seconds continues an admission
  that gave them; in UTC, so an offset written and one left to the sender's zone agree;
- an A06/A07 (a change of class) without PV1-19 starts a record of its own, and so does the
  A01 after an A05 (its start is the admission, not the one expected);
- a digest, not the identifiers, because record ids are shown and logged where a resident ID
  must not be (the identifiers are in the payload, under the consent gate).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from adapters.hl7v2_fields import Msg, Segment
from adapters.hl7v2_patient import Item, Ref, _compact, _entry, key

# PV1-2 (table 0004) as the HL7 v2-to-FHIR IG maps it to v3 ActEncounterCode (ConceptMap
# table-hl70004-to-v3-actcode): E EMER, I IMP, O AMB, P PRENC; the others have no v3 code.
CLASSES = {"I": "inpatient", "O": "outpatient", "E": "emergency", "P": "pre-admission"}
OTHER_CLASSES = {
    "R": "recurring patient",
    "B": "obstetrics",
    "C": "commercial account",
    "N": "not applicable",
    "U": "unknown",
}
# The encounter status each ADT event says; "" for the visit as it now stands (an update, a
# transfer, a change of class, a cancelled discharge): finished when PV1-45 is given.
VISIT_EVENTS = {
    "A01": "in-progress",
    "A03": "finished",
    "A04": "arrived",
    "A05": "planned",
    "A02": "",
    "A06": "",
    "A07": "",
    "A08": "",
    "A13": "",
}
# Events that are the visit's start: their own time stands for an admit time not given.
STARTING_EVENTS = {"A01", "A04"}
DIAGNOSIS_TYPES = {"A": "provisional", "W": "provisional", "F": "confirmed"}
IDENTIFIER_ORDER = ("mrn", "resident_id", "health_card")


def _event(msg: Msg) -> str | None:
    return msg.type[4:] if msg.type.startswith("ADT^") else None


def _start_field(msg: Msg, pv1: Segment) -> tuple[Segment | None, int]:
    """Where the visit's start is read: PV1-44, PV2-8 for a pre-admission, or the event's."""
    event = _event(msg)
    if event == "A05" and (pv2 := msg.first("PV2")) is not None:
        return pv2, 8
    if event in STARTING_EVENTS and not msg.value(pv1, 44):
        evn = msg.first("EVN")
        if msg.value(evn, 6):
            return evn, 6
        if msg.value(evn, 2):
            return evn, 2
    return pv1, 44


def derived_visit(msg: Msg, ref: Ref, klass: str, start: datetime) -> str:
    """``enc:derived:<digest>`` of the visit (see the module's docstring)."""
    kind = next(k for k in IDENTIFIER_ORDER if k in ref)
    minute = start.astimezone(UTC).strftime("%Y%m%d%H%M")
    text = "\x1f".join(("hl7v2-visit-1", msg.institution, kind, ref[kind], klass, minute))
    return "enc:derived:" + hashlib.sha256(text.encode()).hexdigest()[:24]


def visit_record(msg: Msg, ref: Ref) -> str | None:
    """The record of the message's visit (PV1), or None when it names none that can be told."""
    pv1 = msg.first("PV1")
    if pv1 is None:
        return None
    if number := msg.value(pv1, 19):
        return f"enc:{key(number)}"
    klass = CLASSES.get((msg.value(pv1, 2) or "").upper())
    seg, n = _start_field(msg, pv1)
    start = msg.peek_instant(seg, n)
    return derived_visit(msg, ref, klass, start) if klass and start else None


def encounter(msg: Msg, pv1: Segment | None, ref: Ref, event: str) -> list[Item]:
    if pv1 is None:
        msg.bad("hl7.required", f"an ADT^{event} needs a PV1 segment for its visit", "PV1")
        return []
    sid = msg.source_id(pv1)
    code = msg.value(pv1, 2)
    klass = CLASSES.get((code or "").upper())
    if klass is None:
        named = (
            f"patient class {code} ({OTHER_CLASSES[code]})"
            if code in OTHER_CLASSES
            else "a patient class outside HL7 table 0004"
            if code
            else "no patient class"
        )
        msg.bad(
            "hl7.encounter_class",
            f"{named} has no canonical encounter class: only I (inpatient), O "
            "(outpatient), E (emergency) and P (pre-admission) are mapped",
            pv1.at(2),
            sid,
        )
        return []
    before = len(msg.problems)
    status = VISIT_EVENTS[event]
    ended = msg.value(pv1, 45) is not None
    if not status:  # A08: the visit as it now stands
        status = "finished" if ended else "in-progress"
    what = f"an ADT^{event} encounter"
    needed = what if status != "planned" else None  # a pre-admission may not be dated yet
    start = msg.time(*_start_field(msg, pv1), required=needed, source_id=sid)
    end = msg.time(pv1, 45, required=what, source_id=sid) if status == "finished" else None
    pv2 = msg.first("PV2")
    reason = msg.coding(pv2, 3)
    payload = {
        "patient": ref,
        "encounter_class": klass,
        "status": status,
        "start": start,
        "end": end,
        "department": msg.value(pv1, 3) or msg.value(pv1, 10),
        "reason": [reason] if reason else [],
        "admit_source": msg.value(pv1, 14),
        "discharge_disposition": msg.value(pv1, 36) if status == "finished" else None,
        "attending": msg.person_name(pv1, 7, person=True),
    }
    if len(msg.problems) > before:
        return []
    record = visit_record(msg, ref)
    if record is None:  # no PV1-19, and a start given to the day at most (or not at all)
        msg.bad(
            "hl7.no_visit_number",
            "PV1-19 (visit number) is needed, or the admit time to the minute (PV1-44; PV2-8 "
            "for a pre-admission) to derive the visit's record from, so that later messages "
            "about the visit update the same record",
            pv1.at(19),
            sid,
        )
        return []
    return [(pv1.label, _entry(sid, "encounter", record, _compact(payload)))]


def conditions(msg: Msg, ref: Ref) -> list[Item]:
    out: list[Item] = []
    visit = visit_record(msg, ref)
    records: set[str] = set()
    for dg1 in (s for s in msg.segments if s.kind == "DG1"):
        sid = msg.source_id(dg1)
        code = msg.coding(dg1, 3, fallback_system=msg.value(dg1, 2))
        if code is None:
            msg.bad(
                "hl7.required", "DG1-3 (diagnosis code) is needed for a condition", dg1.at(3), sid
            )
            continue
        before = len(msg.problems)
        kind = (msg.value(dg1, 6) or "").upper()
        recorded = msg.time(dg1, 5, source_id=sid)
        if len(msg.problems) > before:
            continue
        identifier = msg.value(dg1, 20)
        record = (
            f"dx:{key(identifier)}"
            if identifier
            else f"dx:{visit[4:]}/{key(kind or '-')}/{key(code['code'])}"
            if visit
            else None
        )
        if record in records:  # the same diagnosis twice in one message: one record version
            msg.notes.append(f"{dg1.label}: repeats an earlier DG1 of the message; sent once")
            continue
        records.add(record or sid)
        payload = {
            "patient": ref,
            "code": code,
            "verification_status": DIAGNOSIS_TYPES.get(kind, "confirmed"),
            "recorded": recorded,
            "encounter": visit,
        }
        out.append((dg1.label, _entry(sid, "condition", record, _compact(payload))))
    return out
