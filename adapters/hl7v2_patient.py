"""HL7 v2 patient segments → canonical payloads (for adapters/hl7v2.py): PID (who, and the
patient item), AL1 (allergies) and PID/MRG pairs (ADT^A40 merges), with the helpers every HL7 v2
mapper builds items with. The visit (PV1/PV2, DG1) is adapters/hl7v2_visit.py. Pure, no IO.

Each mapper returns ``(where, item)`` pairs and reports what is wrong on the message; an item
with a problem is left out, the rest of the message still maps.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from adapters.hl7v2_fields import Msg, Segment
from domain.errors import InvalidResidentId
from domain.resident_id import parse_resident_id

Item = tuple[str, dict[str, Any]]
Ref = dict[str, str]

# PID-3 identifier types (table 0203) and assigning authorities that say "resident ID".
RESIDENT_TYPES = {"NNCHN"}  # national person identifier of China
RESIDENT_LIKE_TYPES = {"ID", "PN", "NI", "NN", "CZ"}  # a resident ID when it passes GB 11643
RESIDENT_AUTHORITIES = {"CHN", "2.16.156.10011.1.3"}
HEALTH_CARD_TYPES = {"HC", "JKK"}
MRN_TYPES = ("MR", "PI", "MRN")
# Never the sender's record number: social security, licences, passports, visit/account numbers.
NOT_MRN_TYPES = {"SS", "DL", "PPN", "VN", "AN", "BC", "HC", "JKK", "NNCHN", *RESIDENT_LIKE_TYPES}
LOOKED_FOR = (
    "a resident ID (type NNCHN, or assigning authority CHN/身份证), this institution's "
    "MRN (type MR or PI) or a health card (type HC)"
)

SEXES = {
    "M": "male",
    "F": "female",
    "O": "other",
    "A": "other",
    "U": "unknown",
    "N": "unknown",
    "男": "male",
    "女": "female",
}
ALLERGY_TYPES = {
    "DA": "medication",
    "FA": "food",
    "EA": "environment",
    "AA": "environment",
    "PA": "environment",
    "LA": "environment",
}
SEVERITIES = {"SV": "high", "MO": "low", "MI": "low", "U": "unable-to-assess"}
ID_SAFE = ":-._~@+!$*,;="


def key(text: str) -> str:
    """A value as part of a record id: no whitespace, stable, readable where it can be."""
    return quote(text, safe=ID_SAFE)


def patient_ref(msg: Msg, seg: Segment, n: int, source_id: str | None = None) -> Ref | None:
    """The PatientRef an identifier list (PID-3, MRG-1) gives, or None with a problem."""
    resident, card, fallback = None, None, None
    typed: dict[str, str] = {}
    for rep in range(1, msg.repeats(seg, n) + 1):
        value = msg.value(seg, n, 1, rep=rep)
        if value is None:
            continue
        where = f"{seg.at(n)}[{rep}]" if msg.repeats(seg, n) > 1 else seg.at(n)
        kind = (msg.value(seg, n, 5, rep=rep) or "").upper()
        authority = " ".join(
            filter(None, (msg.value(seg, n, 4, sub, rep=rep) for sub in (1, 2)))
        ).upper()
        marked = (
            kind in RESIDENT_TYPES
            or "身份证" in authority
            or bool(set(authority.split()) & RESIDENT_AUTHORITIES)
        )
        if marked or (kind in RESIDENT_LIKE_TYPES and len(value) == 18):
            try:  # marked but invalid is refused, never dropped: the sender must fix it
                resident = resident or parse_resident_id(value).value
            except InvalidResidentId as exc:
                msg.bad(exc.code, exc.message, where, source_id)
                return None
        elif kind in HEALTH_CARD_TYPES or "健康卡" in authority:
            if not (value.isascii() and value.isalnum() and 6 <= len(value) <= 32):
                msg.bad(
                    "hl7.health_card_invalid",
                    "a health card number has 6 to 32 letters or digits",
                    where,
                    source_id,
                )
                return None
            card = card or value
        elif kind in MRN_TYPES:
            typed.setdefault(kind, value)
        elif fallback is None and kind not in NOT_MRN_TYPES and not kind.startswith("NN"):
            fallback = value  # untyped or locally typed: the first is taken as the MRN
    mrn = next((typed[t] for t in MRN_TYPES if t in typed), fallback)  # MR before PI
    ref = {k: v for k, v in (("resident_id", resident), ("mrn", mrn), ("health_card", card)) if v}
    if not ref:
        empty = msg.repeats(seg, n) == 0 or all(
            msg.value(seg, n, 1, rep=r) is None for r in range(1, msg.repeats(seg, n) + 1)
        )
        what = (
            f"{seg.at(n)} is empty"
            if empty
            else f"{seg.at(n)} holds no identifier the exchange can link"
        )
        msg.bad("hl7.no_patient_identifier", f"{what}: give {LOOKED_FOR}", seg.at(n), source_id)
        return None
    return ref


def patient(msg: Msg, pid: Segment, ref: Ref) -> list[Item]:
    sid = msg.source_id(pid)
    name = msg.person_name(pid, 5)
    if name is None:
        msg.bad(
            "hl7.required",
            "PID-5 (patient name) is needed for the patient's "
            "demographics; the message's other items are sent",
            pid.at(5),
            sid,
        )
        return []
    before = len(msg.problems)
    born = msg.birth_date(pid, 7)
    sex = msg.value(pid, 8)
    gender = SEXES.get((sex or "U").upper())
    if gender is None:
        msg.notes.append(f"{pid.at(8)}: a sex code outside HL7 table 0001 is sent as unknown")
        gender = "unknown"
    if len(msg.problems) > before:
        return []
    payload = {"patient": ref, "name": name, "gender": gender, "birth_date": born}
    return [(pid.label, {"source_id": sid, "kind": "patient", "payload": _compact(payload)})]


def allergies(msg: Msg, ref: Ref) -> list[Item]:
    out: list[Item] = []
    for al1 in (s for s in msg.segments if s.kind == "AL1"):
        sid = msg.source_id(al1)
        substance = msg.coding(al1, 3)
        if substance is None:
            msg.bad(
                "hl7.required", "AL1-3 (allergen code) is needed for an allergy", al1.at(3), sid
            )
            continue
        before = len(msg.problems)
        recorded = msg.time(al1, 6, source_id=sid)
        if len(msg.problems) > before:
            continue
        # Per patient and allergen, so that a resend updates it; by MRN, never a resident ID.
        record = f"alg:{key(ref['mrn'])}/{key(substance['code'])}" if "mrn" in ref else None
        payload = {
            "patient": ref,
            "substance": substance,
            "category": ALLERGY_TYPES.get((msg.value(al1, 2) or "").upper()),
            "criticality": SEVERITIES.get((msg.value(al1, 4) or "").upper()),
            "recorded": recorded,
        }
        out.append((al1.label, _entry(sid, "allergy", record, _compact(payload))))
    return out


def merges(msg: Msg) -> list[Item]:
    """ADT^A40: each PID (the survivor) and the MRG after it (who was merged into it)."""
    out: list[Item] = []
    survivor: Ref | None = None
    pid: Segment | None = None
    for seg in msg.segments:
        if seg.kind == "PID":
            pid, survivor = seg, patient_ref(msg, seg, 3)
        elif seg.kind == "MRG":
            sid = msg.source_id(seg)
            if pid is None:
                msg.bad(
                    "hl7.required",
                    "an MRG needs the PID of the surviving patient before it",
                    seg.label,
                    sid,
                )
                continue
            merged = patient_ref(msg, seg, 1, sid)
            if survivor is None or merged is None:
                continue
            out.append(
                (
                    seg.label,
                    {
                        "source_id": sid,
                        "kind": "merge",
                        "payload": {"patient": survivor, "merged": merged},
                    },
                )
            )
    if not any(s.kind == "MRG" for s in msg.segments):
        msg.bad("hl7.required", "an ADT^A40 needs an MRG segment naming the merged patient", "MRG")
    return out


def _entry(sid: str, kind: str, record: str | None, payload: dict[str, Any]) -> dict[str, Any]:
    item = {"source_id": sid, "kind": kind, "payload": payload}
    if record:
        item["record"] = record
    return item


def _compact(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None and v != []}
