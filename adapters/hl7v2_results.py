"""HL7 v2 ORU results (OBR/OBX) → canonical payloads (for adapters/hl7v2.py), with the
order id and the diagnostic-service categories the order mappers (adapters/hl7v2_orders.py)
share. Pure, no IO.

Each result is ``obs:<order>/<code>/<sub-id>``, so a preliminary result is superseded by its
final one and a corrected result (OBX-11 C) amends it; the ORU report (the OBR) is a newer
version of its order ``ord:<placer number>``.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2_fields import Msg, Segment
from adapters.hl7v2_patient import Item, Ref, _compact, _entry, key, visit_number

RESULT_STATUSES = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "A": "amended",
}
NO_RESULT = {
    "I": "results pending",
    "X": "results cannot be obtained",
    "N": "not asked",
    "O": "order detail only, no result",
}
DELETED = {"D", "W"}  # OBX-11: delete the result / it was wrong: a retract of the record
CATEGORIES = {
    **dict.fromkeys(
        (
            "LAB",
            "HM",
            "CH",
            "MB",
            "SR",
            "BG",
            "BLB",
            "CP",
            "CG",
            "HM",
            "IMM",
            "MCB",
            "MYC",
            "PAR",
            "PAT",
            "SP",
            "TX",
            "VR",
            "URN",
            "CUS",
            "SC",
        ),
        "laboratory",
    ),
    **dict.fromkeys(
        ("RAD", "CT", "MR", "NMR", "US", "RX", "XRC", "NMS", "VUS", "OUS", "CTH"), "imaging"
    ),
}


# OBX-2 value types and how each is sent.
NUMERIC, CODED = {"NM", "SN"}, {"CE", "CWE", "CNE", "CF"}
TEXT, TIMES = {"ST", "TX", "FT", "ID", "IS"}, {"DT", "DTM", "TS", "TM"}


def _order(msg: Msg, orc: Segment | None, obr: Segment | None) -> str | None:
    """The order number results are filed under: the placer's, else the filler's."""
    for seg, n in ((orc, 2), (obr, 2), (orc, 3), (obr, 3)):
        if number := msg.value(seg, n):
            return key(number)
    return None


def results(msg: Msg, ref: Ref) -> list[Item]:
    out: list[Item] = []
    orc = obr = None
    for seg in msg.segments:
        if seg.kind == "ORC":
            orc, obr = seg, None
        elif seg.kind == "OBR":
            obr = seg
            out += _report(msg, orc, seg, ref)
        elif seg.kind == "OBX":
            out += _result(msg, orc, obr, seg, ref)
    return out


def _report(msg: Msg, orc: Segment | None, obr: Segment, ref: Ref) -> list[Item]:
    """The OBR of a result: the order's panel, now with its result status."""
    sid, status = msg.source_id(obr), (msg.value(obr, 25) or "").upper()
    if not status or status in NO_RESULT or status not in RESULT_STATUSES:
        if status and status not in NO_RESULT:
            msg.bad(
                "hl7.result_status",
                "OBR-25 is not a result status of HL7 table 0123 (F, C, P, R, S, I, X, O)",
                obr.at(25),
                sid,
            )
        else:
            msg.notes.append(
                f"{obr.label}: no final or preliminary OBR-25 status: the order "
                "is not updated, its results are sent"
            )
        return []
    return _observation(msg, obr, 4, status, _order(msg, orc, obr), "ord", ref, obr, sid)


def _result(
    msg: Msg, orc: Segment | None, obr: Segment | None, obx: Segment, ref: Ref
) -> list[Item]:
    sid, status = msg.source_id(obx), (msg.value(obx, 11) or "").upper()
    order = _order(msg, orc, obr)
    code = msg.value(obx, 3) or msg.value(obx, 3, 4)
    record = f"obs:{order}/{key(code)}/{key(msg.value(obx, 4) or '-')}" if order and code else None
    if status in NO_RESULT:
        msg.notes.append(f"{obx.label}: OBX-11 says {NO_RESULT[status]}; nothing to send")
        return []
    if status in DELETED:
        if record is None:
            msg.bad(
                "hl7.retract_unlinked",
                "a deleted result (OBX-11 D or W) needs its order "
                "number (ORC-2/OBR-2) and OBX-3 to name the record it withdraws",
                obx.at(11),
                sid,
            )
            return []
        return [
            (
                obx.label,
                {
                    "source_id": sid,
                    "kind": "retract",
                    "payload": {
                        "patient": ref,
                        "record": record,
                        "reason": "HL7 OBX-11 status D/W: the sender withdrew the result",
                    },
                },
            )
        ]
    if status not in RESULT_STATUSES:
        msg.bad(
            "hl7.result_status",
            "OBX-11 is not a result status of HL7 table 0085 (F, C, P, R, S, D, W, I, X)"
            if status
            else "OBX-11 (result status) is needed",
            obx.at(11),
            sid,
        )
        return []
    out = _observation(msg, obx, 3, status, order, "obs", ref, obr, sid, record=record)
    return out


def _observation(
    msg: Msg,
    seg: Segment,
    code_at: int,
    status: str,
    order: str | None,
    prefix: str,
    ref: Ref,
    obr: Segment | None,
    sid: str,
    *,
    record: str | None = None,
) -> list[Item]:
    code = msg.coding(seg, code_at)
    if code is None:
        msg.bad(
            "hl7.required",
            f"{seg.at(code_at)} (the observation code) is needed",
            seg.at(code_at),
            sid,
        )
        return []
    before = len(msg.problems)
    what = "an observation"
    effective = msg.instant(seg, 14, source_id=sid) if seg.kind == "OBX" else None
    if effective is None and len(msg.problems) == before:
        effective = msg.instant(obr, 7, required=what, source_id=sid)
    if effective is None and len(msg.problems) == before:
        msg.bad(
            "hl7.required",
            f"{seg.at(14)} or OBR-7 (observation time) is needed for {what}",
            seg.at(14),
            sid,
        )
    record = record or (f"{prefix}:{order}" if order else None)
    payload: dict[str, Any] = {
        "patient": ref,
        "code": code,
        "status": RESULT_STATUSES[status],
        "category": CATEGORIES.get((msg.value(obr, 24) or "").upper()),
        "effective": effective,
        "encounter": visit_number(msg, msg.first("PV1")),
    }
    if seg.kind == "OBX":
        payload.update(_value(msg, seg, sid))
        interpretation = msg.value(seg, 8)
        if interpretation:
            payload["interpretation"] = {
                "system": "http://terminology.hl7.org/CodeSystem/v2-0078",
                "code": interpretation,
            }
    if len(msg.problems) > before:
        return []
    payload = _compact(payload)
    payload.setdefault("category", None)  # the canonical model wants it said, even as none
    item = _entry(sid, "observation", record, payload)
    if status == "C":  # a correction of a result sent before
        if record is None:
            msg.bad(
                "hl7.correction_unlinked",
                "a corrected result needs its order number "
                "(ORC-2/OBR-2) to name the record it corrects",
                seg.at(11),
                sid,
            )
            return []
        item["amends"] = item.pop("record")
    return [(seg.label, item)]


def _value(msg: Msg, obx: Segment, sid: str) -> dict[str, Any]:
    kind = (msg.value(obx, 2) or "").upper()
    text = msg.value(obx, 5) or ""
    if not msg.given(obx, 5):
        return {}
    if msg.repeats(obx, 5) > 1 and kind not in TEXT:
        msg.bad(
            "hl7.value_repeats",
            "OBX-5 repeats: one observation holds one value; send each value in its own OBX",
            obx.at(5),
            sid,
        )
        return {}
    if kind in NUMERIC:
        comparator, number = msg.value(obx, 5, 1), msg.value(obx, 5, 2)
        if kind == "NM":
            comparator, number = None, text
        value = msg.decimal(number)
        if kind == "SN" and (comparator not in (None, "=") or msg.value(obx, 5, 3)):
            parts = [msg.value(obx, 5, c) or "" for c in range(1, 5)]
            return {"value_string": "".join(parts)}  # <5, 1:128, 2-5: no single quantity
        if value is None:
            msg.bad(
                "hl7.value_not_numeric",
                f"OBX-5 is not a number, as OBX-2 {kind} says",
                obx.at(5),
                sid,
            )
            return {}
        quantity = msg.quantity(value, obx, 6)
        if quantity is None:
            msg.bad("hl7.unit_missing", "a numeric result needs its unit in OBX-6", obx.at(6), sid)
            return {}
        out: dict[str, Any] = {"value_quantity": quantity}
        if rng := _range(msg, obx, quantity):
            out["reference_range"] = rng
        return out
    if kind in CODED:
        coding = msg.coding(obx, 5)
        label = msg.value(obx, 5, 2) or msg.value(obx, 5, 9)  # text only, no code
        return (
            {"value_coding": coding} if coding else {"value_string": label[:500]} if label else {}
        )
    if kind in TEXT:
        reps = range(1, msg.repeats(obx, 5) + 1)
        joined = "\n".join(v for r in reps if (v := msg.value(obx, 5, rep=r)))
        return {"value_string": joined} if joined else {}
    if kind in TIMES:
        parsed = msg.parse_dtm(text, "day", obx.at(5), sid)
        return {"value_string": parsed.isoformat()} if parsed else {}
    msg.bad(
        "hl7.value_type",
        f"OBX-2 value type {kind} is not mapped (numbers, codes, text and times are)"
        if kind.isalnum() and len(kind) <= 3
        else "OBX-2 (value type) is needed for a result with a value",
        obx.at(2),
        sid,
    )
    return {}


def _range(msg: Msg, obx: Segment, quantity: dict[str, Any]) -> dict[str, Any] | None:
    text = msg.value(obx, 7)
    if text is None:
        return None
    for sep in (" to ", "-", "~", "_", "–"):
        low, found, high = text.partition(sep)
        if found and low.strip():
            a, b = msg.decimal(low.strip()), msg.decimal(high.strip())
            if a is not None and b is not None:
                unit = {k: v for k, v in quantity.items() if k != "value"}
                return {"low": {**unit, "value": str(a)}, "high": {**unit, "value": str(b)}}
    return {"text": text[:500]}
