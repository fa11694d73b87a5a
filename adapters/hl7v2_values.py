"""OBX-5 by its value type (OBX-2: HL7 table 0125 of v2.5, and the types v2.3-2.8 add or
renamed) → what a canonical observation holds, a document, or a named reason to leave the
result out; for the ORU mapper (adapters/hl7v2_results.py). Pure, no IO.

``VALUE_TYPES`` says how each type is sent:

- NM, SN, CQ, MO, CP: a quantity (with OBX-6's unit when given; money in its ISO 4217
  currency). An SN with a comparator other than ``=``, or a ratio or range, is its text
  (``<5``, ``1:128``, ``2-5``): no single quantity says it;
- CE, CWE, CNE, CF: a coding (text only when there is no code);
- ST, TX, FT, ID, IS: text, repetitions one line each, formatting escapes as line breaks;
  text longer than an observation holds (500 characters: a report's findings) is sent as a
  text/plain document under the same record;
- DT, TM, TS, DTM, DR: ISO 8601 text at the precision sent (a date range as ``start/end``);
- NA: the numbers, comma-separated, with OBX-6's unit;
- AD, XAD, PN, XPN, FN, CN, XCN, XON, TN, XTN, CX, CK, EI, HD: their parts as text (names as
  adapters/hl7v2_fields.py writes them, CJK without a space);
- RP: the pointer (and the application holding it) as text: the exchange does not fetch it;
- ED: a document: the decoded content with its SHA-256 and size, and its MIME type from the
  type of data and subtype (tables 0191, 0291); content past the document limit is named by
  hash and size only, and stays with the sender;
- MA (multiplexed array: waveform samples): left out, said in the report; the record holds no
  waveforms.

Any other OBX-2 is refused (``hl7.value_type``). Each reader returns the observation's value
fields, a ``Document``, a ``LeftOut``, or None once it said on the message what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.hl7v2_documents import Document, encapsulated
from adapters.hl7v2_fields import Msg, Segment, clinical_time, dtm_parts

MAX_VALUE_TEXT = 500  # the canonical observation's value_string
UCUM = "http://unitsofmeasure.org"
ISO_4217 = "urn:iso:std:iso:4217"
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?")


@dataclass(frozen=True)
class LeftOut:
    """A result deliberately not sent, and why (a note in the report, not a problem)."""

    reason: str


Read = dict[str, Any] | Document | LeftOut | None
Reader = Callable[[Msg, Segment, str], Read]


def read_value(msg: Msg, obx: Segment, sid: str) -> Read:
    """OBX-5 as its OBX-2 says; an empty OBX-5 is no value ({})."""
    kind = (msg.value(obx, 2) or "").upper()
    if not msg.given(obx, 5):
        return {}
    entry = VALUE_TYPES.get(kind)
    if entry is None:
        msg.bad(
            "hl7.value_type",
            f"OBX-2 value type {kind} is not one of HL7 table 0125 ({', '.join(VALUE_TYPES)})"
            if kind.isalnum() and len(kind) <= 3
            else "OBX-2 (value type) is needed for a result with a value",
            obx.at(2),
            sid,
        )
        return None
    reader, repeats = entry
    if msg.repeats(obx, 5) > 1 and not repeats:
        msg.bad(
            "hl7.value_repeats",
            f"OBX-5 repeats, which a {kind} value cannot: send each value in its own OBX",
            obx.at(5),
            sid,
        )
        return None
    before = len(msg.problems)
    read = reader(msg, obx, sid)
    if read is None and len(msg.problems) == before:  # never left out without a word
        msg.bad(
            "hl7.value_unreadable", f"OBX-5 cannot be read as OBX-2 {kind} says", obx.at(5), sid
        )
    return read


# Numbers ---------------------------------------------------------------------------------------


def _number(msg: Msg, obx: Segment, sid: str, text: str | None) -> Any:
    value = msg.decimal(text)
    if value is None:
        kind = msg.value(obx, 2)
        msg.bad(
            "hl7.value_not_numeric", f"OBX-5 is not a number, as OBX-2 {kind} says", obx.at(5), sid
        )
    return value


def _with_unit(msg: Msg, obx: Segment, value: Any) -> dict[str, Any]:
    quantity = msg.quantity(value, obx, 6) or {"value": str(value)}
    out: dict[str, Any] = {"value_quantity": quantity}
    if rng := _range(msg, obx, quantity):
        out["reference_range"] = rng
    return out


def _nm(msg: Msg, obx: Segment, sid: str) -> Read:
    value = _number(msg, obx, sid, msg.value(obx, 5))
    return None if value is None else _with_unit(msg, obx, value)


def _sn(msg: Msg, obx: Segment, sid: str) -> Read:
    comparator, number = msg.value(obx, 5, 1), msg.value(obx, 5, 2)
    if comparator not in (None, "=") or msg.value(obx, 5, 3):
        parts = [msg.value(obx, 5, c) or "" for c in range(1, 5)]
        return as_text("".join(parts))  # <5, 1:128, 2-5: no single quantity
    value = _number(msg, obx, sid, number)
    return None if value is None else _with_unit(msg, obx, value)


def _cq(msg: Msg, obx: Segment, sid: str) -> Read:
    """CQ: quantity^units, the units a CE in subcomponents (code&text&system)."""
    value = _number(msg, obx, sid, msg.value(obx, 5, 1))
    if value is None:
        return None
    code, text = msg.value(obx, 5, 2, 1), msg.value(obx, 5, 2, 2)
    if not (code or text):
        return _with_unit(msg, obx, value)
    ucum = (msg.value(obx, 5, 2, 3) or "").upper() == "UCUM" and code is not None
    quantity = {
        "value": str(value),
        "unit": (text or code or "")[:128],
        "system": UCUM if ucum else None,
        "code": code if ucum else None,
    }
    return {"value_quantity": quantity}


def _money(msg: Msg, obx: Segment, sid: str, *, price: bool) -> Read:
    """MO (quantity^denomination), or CP, whose price is an MO in its first component's
    subcomponents (quantity&denomination)."""
    if price:
        amount, currency = msg.value(obx, 5, 1, 1), msg.value(obx, 5, 1, 2)
    else:
        amount, currency = msg.value(obx, 5, 1), msg.value(obx, 5, 2)
    value = _number(msg, obx, sid, amount)
    if value is None:
        return None
    if currency is None:
        return {"value_quantity": {"value": str(value), "system": None}}
    unit = currency[:128]
    return {"value_quantity": {"value": str(value), "unit": unit, "system": ISO_4217, "code": unit}}


def _na(msg: Msg, obx: Segment, sid: str) -> Read:
    """NA: numbers as components; sent as their text with the unit."""
    numbers = [msg.value(obx, 5, c) for c in range(1, _components(obx) + 1)]
    given = [n for n in numbers if n is not None]
    if any(msg.decimal(n) is None for n in given):
        msg.bad(
            "hl7.value_not_numeric",
            "OBX-5 holds a part that is not a number, as OBX-2 NA says",
            obx.at(5),
            sid,
        )
        return None
    unit = msg.value(obx, 6, 2) or msg.value(obx, 6, 1)
    return as_text(", ".join(given) + (f" {unit}" if unit else ""))


def _components(obx: Segment) -> int:
    return max((len(r) for r in obx.reps(5)), default=0)


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
    return {"text": text[:MAX_VALUE_TEXT]}


# Codes and text --------------------------------------------------------------------------------


def _coded(msg: Msg, obx: Segment, sid: str) -> Read:
    coding = msg.coding(obx, 5)
    if coding:
        return {"value_coding": coding}
    label = msg.value(obx, 5, 2) or msg.value(obx, 5, 9)  # text only, no code
    return as_text(label or "")


def as_text(text: str) -> Read:
    """Text as an observation's value, or as a text/plain document when longer than one."""
    if not text:
        return {}
    if len(text) > MAX_VALUE_TEXT:
        return Document("text/plain", text.encode())
    return {"value_string": text}


def _lines(msg: Msg, obx: Segment, sid: str) -> Read:
    return as_text(text_of(msg, obx))


def text_of(msg: Msg, obx: Segment) -> str:
    """OBX-5 as text: its repetitions one line each."""
    reps = range(1, msg.repeats(obx, 5) + 1)
    return "\n".join(v for r in reps if (v := _whole(msg, obx, r)))


def _whole(msg: Msg, obx: Segment, rep: int) -> str | None:
    """A text value whole: a ^ or & in text is text (senders rarely escape them as \\S\\ and
    \\T\\), so the parts the parser split it into are joined back."""
    comp, sub = msg.delimiters.get("S", "^"), msg.delimiters.get("T", "&")
    raw = comp.join(sub.join(c) for c in obx.reps(5)[rep - 1]).rstrip(comp + sub)
    text = msg.unescape(raw).strip()
    return None if text in ("", '""') else text


def _parts(*comps: int, sep: str = " ") -> Reader:
    """A composite as the text of the components named, in that order."""

    def read(msg: Msg, obx: Segment, sid: str) -> Read:
        out = []
        for rep in range(1, msg.repeats(obx, 5) + 1):
            got = [v for c in comps if (v := msg.value(obx, 5, c, rep=rep))]
            if got:
                out.append(sep.join(got))
        return as_text("; ".join(out))

    return read


def _name(person: bool) -> Reader:
    def read(msg: Msg, obx: Segment, sid: str) -> Read:
        return as_text(msg.person_name(obx, 5, person=person) or "")

    return read


def _phone(msg: Msg, obx: Segment, sid: str) -> Read:
    """XTN: the old-style number, else the e-mail, else +country (area) local ext, else the
    unformatted number (v2.7)."""
    out = []
    for rep in range(1, msg.repeats(obx, 5) + 1):
        parts = [msg.value(obx, 5, c, rep=rep) for c in (5, 6, 7, 8)]
        built = " ".join(
            p
            for p in (
                f"+{parts[0]}" if parts[0] else None,
                *parts[1:3],
                f"ext. {parts[3]}" if parts[3] else None,
            )
            if p
        )
        text = (
            msg.value(obx, 5, 1, rep=rep)
            or msg.value(obx, 5, 4, rep=rep)
            or built
            or msg.value(obx, 5, 12, rep=rep)
        )
        if text:
            out.append(text)
    return as_text("; ".join(out))


def _pointer(msg: Msg, obx: Segment, sid: str) -> Read:
    """RP: pointer^application id^type^subtype; the pointer, and who holds it."""
    out = []
    for rep in range(1, msg.repeats(obx, 5) + 1):
        pointer = msg.value(obx, 5, 1, rep=rep)
        holder = msg.value(obx, 5, 2, rep=rep)
        if pointer:
            out.append(pointer + (f" ({holder})" if holder else ""))
    return as_text("; ".join(out))


# Times -----------------------------------------------------------------------------------------


def _time_text(msg: Msg, obx: Segment, sid: str, text: str | None) -> str | None:
    if text is None:
        return None
    read = clinical_time(text, msg.tz)
    if isinstance(read[1], str):
        msg.bad(read[0], read[1], obx.at(5), sid)
        return None
    return read[0]


def _datetime(msg: Msg, obx: Segment, sid: str) -> Read:
    shown = _time_text(msg, obx, sid, msg.value(obx, 5))
    return None if shown is None else as_text(shown)


def _date(msg: Msg, obx: Segment, sid: str) -> Read:
    text = msg.value(obx, 5) or ""
    parts = dtm_parts(text)
    if parts is None or len(parts[0]) > 3 or parts[1] or parts[2]:
        msg.bad("hl7.invalid_datetime", "not an HL7 date (YYYY[MM[DD]])", obx.at(5), sid)
        return None
    return _datetime(msg, obx, sid)


def _tm(msg: Msg, obx: Segment, sid: str) -> Read:
    """TM: HH[MM[SS[.S]]][+/-ZZZZ] as hh:mm[:ss[.s]][+zz:zz]."""
    m = _TM.fullmatch(msg.value(obx, 5) or "")
    h, mi, s = (int(g) if g else 0 for g in m.groups()[:3]) if m else (99, 0, 0)
    if m is None or h > 23 or mi > 59 or s > 59:
        msg.bad("hl7.invalid_time", "not an HL7 time (HH[MM[SS[.S]]][+/-ZZZZ])", obx.at(5), sid)
        return None
    text = f"{h:02d}:{mi:02d}" + (f":{s:02d}" if m.group(3) else "")
    text += f".{m.group(4)}" if m.group(4) else ""
    text += f"{m.group(5)}{m.group(6)}:{m.group(7)}" if m.group(5) else ""
    return as_text(text)


def _period(msg: Msg, obx: Segment, sid: str) -> Read:
    """DR: start^end, as ISO 8601's start/end (``..`` for an open end)."""
    start = _time_text(msg, obx, sid, msg.value(obx, 5, 1))
    end = _time_text(msg, obx, sid, msg.value(obx, 5, 2))
    if start is None and end is None:
        return None if msg.value(obx, 5, 1) or msg.value(obx, 5, 2) else {}
    return as_text(f"{start or '..'}/{end or '..'}")


def _left_out(reason: str) -> Reader:
    return lambda msg, obx, sid: LeftOut(reason)


# Per type: its reader, and whether OBX-5 may repeat for it.
VALUE_TYPES: dict[str, tuple[Reader, bool]] = {
    "NM": (_nm, False),
    "SN": (_sn, False),
    "CQ": (_cq, False),
    "MO": (lambda m, o, s: _money(m, o, s, price=False), False),
    "CP": (lambda m, o, s: _money(m, o, s, price=True), False),
    "NA": (_na, False),
    "CE": (_coded, False),
    "CWE": (_coded, False),
    "CNE": (_coded, False),
    "CF": (_coded, False),
    "ST": (_lines, True),
    "TX": (_lines, True),
    "FT": (_lines, True),
    "ID": (_lines, True),
    "IS": (_lines, True),
    "DT": (_date, False),
    "TM": (_tm, False),
    "TS": (_datetime, False),
    "DTM": (_datetime, False),
    "DR": (_period, False),
    "AD": (_parts(1, 2, 3, 4, 5, 6, sep=", "), True),
    "XAD": (_parts(1, 2, 3, 4, 5, 6, sep=", "), True),
    "PN": (_name(False), True),
    "XPN": (_name(False), True),
    "FN": (_parts(1), True),  # the surname whole; its other parts repeat pieces of it
    "CN": (_name(True), True),
    "XCN": (_name(True), True),
    "XON": (_parts(1), True),
    "TN": (_lines, True),
    "XTN": (_phone, True),
    "CX": (_parts(1), True),
    "CK": (_parts(1), True),
    "EI": (_parts(1, 2), True),
    "HD": (_parts(1, 2), True),
    "RP": (_pointer, True),
    "ED": (encapsulated, False),
    "MA": (
        _left_out("a multiplexed array (waveform samples): the shared record holds no waveforms"),
        True,
    ),
}
