"""HL7 v2 ORU results (OBR/OBX) → canonical payloads (for adapters/hl7v2.py), with the
order id and the diagnostic-service categories the order mappers (adapters/hl7v2_orders.py)
share. Pure, no IO.

Each result is ``obs:<order>/<code>/<sub-id>``, so a preliminary result is superseded by its
final one and a corrected result (OBX-11 C) amends it; the ORU report (the OBR) is a newer
version of its order ``ord:<placer number>``. A result is an observation, or a document under
the same record when its value is one (an ED, or text longer than an observation holds:
adapters/hl7v2_values.py says how each OBX-2 value type is sent). Consecutive text OBX of one
order with the same OBX-3 and OBX-4 are the lines of one text (a report written line by
line), sent as one result.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2_documents import Document, document_fields
from adapters.hl7v2_fields import Msg, Segment
from adapters.hl7v2_patient import Item, Ref, _compact, _entry, key
from adapters.hl7v2_values import LeftOut, Read, as_text, read_value, text_of
from adapters.hl7v2_visit import visit_record

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


TEXT_LINES = {"ST", "TX", "FT"}  # value types whose OBX may continue the one before


def _order(msg: Msg, orc: Segment | None, obr: Segment | None) -> str | None:
    """The order number results are filed under: the placer's, else the filler's."""
    for seg, n in ((orc, 2), (obr, 2), (orc, 3), (obr, 3)):
        if number := msg.value(seg, n):
            return key(number)
    return None


def results(msg: Msg, ref: Ref) -> list[Item]:
    out: list[Item] = []
    orc = obr = None
    lines = _lines(msg)
    for seg in msg.segments:
        if seg.kind == "ORC":
            orc, obr = seg, None
        elif seg.kind == "OBR":
            obr = seg
            out += _report(msg, orc, seg, ref)
        elif seg.kind == "OBX" and lines.get(id(seg)) != []:
            out += _result(msg, orc, obr, seg, ref, lines.get(id(seg)))
    return out


def _lines(msg: Msg) -> dict[int, list[Segment]]:
    """Per text OBX that later ones continue, its continuations; [] for each continuation."""
    runs: dict[int, list[Segment]] = {}
    head: Segment | None = None
    last: tuple[str | None, str | None] | None = None
    for seg in msg.segments:
        if seg.kind != "OBX":
            head = last = None
            continue
        kind = (msg.value(seg, 2) or "").upper()
        this = (msg.value(seg, 3), msg.value(seg, 4))
        if head is not None and kind in TEXT_LINES and this == last and this[0]:
            runs.setdefault(id(head), []).append(seg)
            runs[id(seg)] = []
        else:
            head, last = (seg, this) if kind in TEXT_LINES else (None, None)
    return runs


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
    msg: Msg,
    orc: Segment | None,
    obr: Segment | None,
    obx: Segment,
    ref: Ref,
    more: list[Segment] | None,
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
    if more:
        msg.notes.append(
            f"{obx.label}: the {len(more)} OBX after it with the same OBX-3 and OBX-4 are "
            "lines of its text: sent as one result"
        )
    return _observation(
        msg, obx, 3, status, order, "obs", ref, obr, sid, record=record, more=more or []
    )


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
    more: list[Segment] | None = None,
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
    effective = msg.time(seg, 14, source_id=sid) if seg.kind == "OBX" else None
    if effective is None and len(msg.problems) == before:
        effective = msg.time(obr, 7, source_id=sid)
    # OBR-22, when the report was released: FHIR's issued, an instant.
    issued = msg.peek_instant(obr, 22)
    if effective is None and issued is None and len(msg.problems) == before:
        at = seg.at(14) if seg.kind == "OBX" else seg.at(7)
        msg.bad(
            "hl7.required",
            f"{at} or OBR-7 (observation time), or OBR-22 (when the results were reported) "
            "is needed for an observation",
            at,
            sid,
        )
    record = record or (f"{prefix}:{order}" if order else None)
    encounter = visit_record(msg, ref)
    value: Read = {}
    if seg.kind == "OBX":
        value = (
            as_text("\n".join(text_of(msg, s) for s in [seg, *more]).strip())
            if more
            else read_value(msg, seg, sid)
        )
    if len(msg.problems) > before or value is None:
        return []
    if isinstance(value, LeftOut):
        msg.notes.append(f"{seg.label}: left out: {value.reason}")
        return []
    if isinstance(value, Document):
        created = effective or (issued.isoformat() if issued else None)
        item = _document(msg, seg, ref, code, created, encounter, value, sid, record)
    else:
        payload: dict[str, Any] = {
            "patient": ref,
            "code": code,
            "status": RESULT_STATUSES[status],
            "category": CATEGORIES.get((msg.value(obr, 24) or "").upper()),
            "effective": effective,
            "issued": issued.isoformat() if issued else None,
            "encounter": encounter,
            **value,
        }
        if seg.kind == "OBX" and (interpretation := msg.value(seg, 8)):
            payload["interpretation"] = {
                "system": "http://terminology.hl7.org/CodeSystem/v2-0078",
                "code": interpretation,
            }
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


def _document(
    msg: Msg,
    obx: Segment,
    ref: Ref,
    code: dict[str, str],
    created: str | None,
    encounter: str | None,
    doc: Document,
    sid: str,
    record: str | None,
) -> dict[str, Any]:
    """A result whose value is a document: typed by OBX-3, authored by OBX-16."""
    fields = document_fields(doc)
    if "data" not in fields:
        msg.notes.append(
            f"{obx.label}: the document is past the exchange's size limit: sent as its "
            "SHA-256 and size, its content stays with the sender"
        )
    payload = {
        "patient": ref,
        "type": code,
        "title": code.get("display") or code["code"],
        "created": created,
        **fields,
        "author": msg.person_name(obx, 16, person=True),
        "encounter": encounter,
    }
    return _entry(sid, "document", record, _compact(payload))
