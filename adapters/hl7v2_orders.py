"""HL7 v2 order segments → canonical payloads (for adapters/hl7v2.py): ORM/OML orders (OBR),
RDE prescriptions (RXE/RXO/RXR/TQ1) and VXU immunizations (RXA/RXR); ORU results (OBR/OBX) are
mapped in adapters/hl7v2_results.py and re-exported here. Pure, no IO.

Record ids follow the order: an order is ``ord:<placer number>`` and its ORU report (the OBR) is
a newer version of it; each result is ``obs:<order>/<code>/<sub-id>``, so a preliminary result
is superseded by its final one and a corrected result (OBX-11 C) amends it.
"""

from __future__ import annotations

from adapters.hl7v2_fields import Msg, Segment
from adapters.hl7v2_patient import Item, Ref, _compact, _entry, key
from adapters.hl7v2_results import CATEGORIES, _order, results
from adapters.hl7v2_visit import visit_record

__all__ = ["immunizations", "orders", "prescriptions", "results"]


CANCEL = {"CA", "OC", "CR", "DC", "OD", "DR"}
HOLD = {"HD", "OH"}
REQUEST_STATUS = {
    **dict.fromkeys(("CA", "OC", "CR", "DR"), "cancelled"),
    **dict.fromkeys(("DC", "OD"), "stopped"),
    **dict.fromkeys(HOLD, "on-hold"),
}
IMMUNIZATION_NOT_DONE = {"RE", "NA"}


def orders(msg: Msg, ref: Ref) -> list[Item]:
    """ORM^O01 / OML^O21: each OBR an observation ordered, not yet resulted ("registered")."""
    out: list[Item] = []
    orc = None
    for seg in msg.segments:
        if seg.kind == "ORC":
            orc = seg
        elif seg.kind == "OBR":
            sid = msg.source_id(seg)
            control = (msg.value(orc, 1) or "").upper()
            if control in CANCEL or control in HOLD:
                what = "cancels or discontinues" if control in CANCEL else "holds"
                msg.bad(
                    "hl7.order_control",
                    f"ORC-1 {control} {what} an order: the canonical "
                    "record has no cancelled or held observation order (a retract "
                    "withdraws one sent in error)",
                    orc.at(1) if orc else "ORC-1",
                    sid,
                )
                continue
            # When the test is to be done: collection time, else requested, else ordered.
            at = (
                (seg, 7)
                if msg.value(seg, 7)
                else (seg, 6)
                if msg.value(seg, 6)
                else (orc, 9)
                if orc
                else (seg, 7)
            )
            before = len(msg.problems)
            effective = msg.time(*at, required="an order (OBR-7, OBR-6 or ORC-9)", source_id=sid)
            code = msg.coding(seg, 4)
            if code is None:
                msg.bad(
                    "hl7.required",
                    "OBR-4 (universal service identifier) is needed for an order",
                    seg.at(4),
                    sid,
                )
            if len(msg.problems) > before:
                continue
            order = _order(msg, orc, seg)
            payload = {
                "patient": ref,
                "code": code,
                "status": "registered",
                "category": CATEGORIES.get((msg.value(seg, 24) or "").upper()),
                "effective": effective,
                "encounter": visit_record(msg, ref),
            }
            payload = _compact(payload)
            payload.setdefault("category", None)
            out.append(
                (seg.label, _entry(sid, "observation", f"ord:{order}" if order else None, payload))
            )
    return out


def _groups(msg: Msg) -> list[list[Segment]]:
    """The segments of each ORC, in order (segments before the first ORC are their own)."""
    groups: list[list[Segment]] = [[]]
    for seg in msg.segments:
        if seg.kind == "ORC":
            groups.append([])
        groups[-1].append(seg)
    return [g for g in groups if g]


def prescriptions(msg: Msg, ref: Ref) -> list[Item]:
    """RDE^O11: each ORC group with an RXE (or RXO) is one medication request."""
    out: list[Item] = []
    for group in _groups(msg):
        orc = next((s for s in group if s.kind == "ORC"), None)
        rxe = next((s for s in group if s.kind == "RXE"), None)
        rxo = next((s for s in group if s.kind == "RXO"), None)
        main = rxe or rxo
        if main is None:
            continue
        sid = msg.source_id(main)
        after = group[group.index(main) :]
        rxr = next((s for s in after if s.kind == "RXR"), None) or next(
            (s for s in group if s.kind == "RXR"), None
        )
        tq1 = next((s for s in after if s.kind == "TQ1"), None) or next(
            (s for s in group if s.kind == "TQ1"), None
        )
        medication = msg.coding(rxe, 2) or msg.coding(rxo, 1)
        before = len(msg.problems)
        if medication is None:
            msg.bad(
                "hl7.required",
                "RXE-2 (give code) or RXO-1 (requested give code) is needed for a prescription",
                main.at(2 if rxe else 1),
                sid,
            )
        authored = (
            msg.time(orc, 9, required="a prescription (ORC-9, when it was ordered)", source_id=sid)
            if orc
            else None
        )
        if orc is None:
            msg.bad(
                "hl7.required", "a prescription needs its ORC (order common) segment", "ORC", sid
            )
        dose = msg.decimal(msg.value(rxe, 3)) if rxe else msg.decimal(msg.value(rxo, 2))
        amount = msg.decimal(msg.value(rxe, 10))
        if len(msg.problems) > before:
            continue
        control = (msg.value(orc, 1) or "").upper()
        order = _order(msg, orc, None)
        payload = {
            "patient": ref,
            "medication": medication,
            "status": REQUEST_STATUS.get(control, "active"),
            "authored": authored,
            "dosage_text": (msg.value(rxe, 7, 2) or msg.value(rxe, 7) or "")[:500] or None,
            "dose": msg.quantity(dose, rxe, 5)
            if rxe and dose is not None
            else msg.quantity(dose, rxo, 4)
            if dose is not None
            else None,
            "route": msg.coding(rxr, 1),
            "frequency": (msg.value(tq1, 3) or msg.value(rxe, 1, 2) or "")[:128] or None,
            "quantity": msg.quantity(amount, rxe, 11) if amount is not None else None,
            "requester": msg.person_name(orc, 12, person=True),
            "encounter": visit_record(msg, ref),
        }
        out.append(
            (
                main.label,
                _entry(
                    sid, "medication_request", f"rx:{order}" if order else None, _compact(payload)
                ),
            )
        )
    return out


def immunizations(msg: Msg, ref: Ref) -> list[Item]:
    """VXU^V04: each RXA an immunization given (or not), with its RXR route and site."""
    out: list[Item] = []
    for group in _groups(msg):
        orc = next((s for s in group if s.kind == "ORC"), None)
        for rxa in (s for s in group if s.kind == "RXA"):
            sid = msg.source_id(rxa)
            after = group[group.index(rxa) + 1 :]
            rxr = next((s for s in after if s.kind == "RXR"), None)
            if rxr is not None and any(s.kind == "RXA" for s in after[: after.index(rxr)]):
                rxr = None  # it belongs to a later RXA
            order = msg.value(orc, 3) or msg.value(orc, 2)
            record = f"imm:{key(order)}" if order else None
            if (msg.value(rxa, 21) or "").upper() == "D":  # action code: delete
                if record is None:
                    msg.bad(
                        "hl7.retract_unlinked",
                        "a deleted immunization (RXA-21 D) needs "
                        "ORC-3 to name the record it withdraws",
                        rxa.at(21),
                        sid,
                    )
                    continue
                out.append(
                    (
                        rxa.label,
                        {
                            "source_id": sid,
                            "kind": "retract",
                            "payload": {
                                "patient": ref,
                                "record": record,
                                "reason": "HL7 RXA-21 action D: the sender deleted the immunization",
                            },
                        },
                    )
                )
                continue
            before = len(msg.problems)
            vaccine = msg.coding(rxa, 5)
            if vaccine is None:
                msg.bad(
                    "hl7.required",
                    "RXA-5 (administered code) is needed for an immunization",
                    rxa.at(5),
                    sid,
                )
            occurrence = msg.time(rxa, 3, required="an immunization", source_id=sid)
            if len(msg.problems) > before:
                continue
            payload = {
                "patient": ref,
                "vaccine": vaccine,
                "status": "not-done"
                if (msg.value(rxa, 20) or "").upper() in IMMUNIZATION_NOT_DONE
                else "completed",
                "occurrence": occurrence,
                "lot_number": (msg.value(rxa, 15) or "")[:128] or None,
                "site": msg.coding(rxr, 2),
                "route": msg.coding(rxr, 1),
                "manufacturer": msg.value(rxa, 17, 2) or msg.value(rxa, 17),
            }
            out.append((rxa.label, _entry(sid, "immunization", record, _compact(payload))))
    return out
