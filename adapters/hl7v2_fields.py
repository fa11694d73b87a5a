"""Reading one parsed HL7 v2 message for the HL7 v2 adapter (adapters/hl7v2.py): fields by
position over python-hl7's tree, escapes, date/times with their precision and time zone, codes,
quantities and names, and the problems the message gives. Pure, no IO.

Problems name the place (``PID-3``, ``OBX[2]-5``) and never repeat a value from the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import hl7

from adapters.hl7v2_escapes import unescape
from domain.problems import Problem

UCUM = "http://unitsofmeasure.org"
LOCAL_SYSTEM = "urn:county-hie:local:"
V2_CODING_SYSTEM = "urn:county-hie:v2-coding-system:"
# HL7 table 0396 names (and the spellings Chinese HIS vendors use) → FHIR code system URIs.
SYSTEMS = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "ICD-10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "SCT": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://hl7.org/fhir/sid/mvx",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "UCUM": UCUM,
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NCIT": "http://ncithesaurus-stage.nci.nih.gov",
}
_V2_TABLE = re.compile(r"HL7(\d{4})")
_LOCAL = re.compile(r"L|99[A-Z0-9]{3}")  # table 0396: L and 99zzz are local codes
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_DTM = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_NULL = '""'  # HL7's explicit null: present and empty
# Segment types that occur once in a message: named without an ordinal (PID-3, not PID[1]-3).
_SINGLE = {"MSH", "EVN", "PID", "PD1", "PV1", "PV2", "MRG", "RF1"}

NEEDS = {
    "minute": (12, "a date and time to the minute (YYYYMMDDHHMM)"),
    "day": (8, "a full date (YYYYMMDD)"),
}
EARLIEST_BIRTH = date(1880, 1, 1)


def dtm_parts(text: str) -> tuple[list[int], str | None, str | None] | None:
    """An HL7 DTM's numbers as given (year, month, ... second: as many as written), its
    fraction digits and its offset (``+0800``); None when it is not one."""
    m = _DTM.fullmatch(text)
    if m is None:
        return None
    numbers = [int(g) for g in m.groups()[:6] if g is not None]
    if m.group(7) and len(numbers) < 6:  # a fraction belongs to the seconds
        return None
    offset = m.group(8) + m.group(9) + m.group(10) if m.group(8) else None
    return numbers, m.group(7), offset


def clinical_time(text: str, tz: tzinfo) -> tuple[str, bool] | tuple[str, str]:
    """An HL7 DTM as a clinical time at the precision sent, and whether an hour given without
    its minutes was dropped: an instant from the minute on (its offset, else ``tz``), else a
    FHIR date (``2016``, ``2016-08``, ``2016-08-18``); an hour alone keeps its day, as FHIR
    has no hour precision. Or the (code, message) of what is wrong with it."""
    parts = dtm_parts(text)
    if parts is not None and len(parts[0]) < 5:
        numbers = parts[0]
        try:
            date(
                numbers[0],
                numbers[1] if len(numbers) > 1 else 1,
                numbers[2] if len(numbers) > 2 else 1,
            )
            if len(numbers) > 3 and numbers[3] > 23:
                raise ValueError("hour")
        except ValueError:
            return ("hl7.invalid_datetime", "not a valid calendar date/time or offset")
        shown = numbers[:3]
        return "-".join([f"{shown[0]:04d}", *(f"{n:02d}" for n in shown[1:])]), len(numbers) > 3
    read = read_dtm(text, "minute", tz)
    return read if isinstance(read, tuple) else (read.isoformat(), False)


def read_dtm(
    text: str, need: str, tz: tzinfo, *, local: bool = False
) -> datetime | tuple[str, str]:
    """An HL7 DTM as an aware datetime (``tz`` unless it gives an offset; ``local`` ignores an
    offset, for a date), or the (code, message) of what is wrong with it."""
    parts = dtm_parts(text)
    if parts is None:
        return (
            "hl7.invalid_datetime",
            "not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])",
        )
    numbers, fraction, offset = parts
    least, says = NEEDS[need]
    if len(numbers) * 2 + 2 < least:
        return (
            "hl7.imprecise_datetime",
            f"needs at least {says}; the exchange does not guess the rest",
        )
    padded: list[int | None] = [*numbers, *([None] * (6 - len(numbers)))]
    y, mo, d, h, mi, s = padded
    try:
        zone: tzinfo = tz
        if offset and not local:
            hours, minutes = int(offset[1:3]), int(offset[3:5])
            if hours > 14 or minutes > 59:
                raise ValueError("offset")
            sign = -1 if offset[0] == "-" else 1
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        micro = int((fraction or "0").ljust(6, "0"))
        day = (y or 0, 1 if mo is None else mo, 1 if d is None else d)
        return datetime(*day, h or 0, mi or 0, s or 0, micro, tzinfo=zone)
    except ValueError:
        return ("hl7.invalid_datetime", "not a valid calendar date/time or offset")


class Segment:
    """One segment and its place: its ordinal among the message's segments of its type."""

    def __init__(self, raw: Any, kind: str, ordinal: int) -> None:
        self.raw = raw
        self.kind = kind
        self.ordinal = ordinal

    @property
    def label(self) -> str:
        single = self.kind in _SINGLE and self.ordinal == 1
        return self.kind if single else f"{self.kind}[{self.ordinal}]"

    def at(self, n: int, comp: int = 0) -> str:
        """Where field n (component comp) is, for a problem: ``OBX[2]-5`` or ``PID-3.1``."""
        return f"{self.label}-{n}" + (f".{comp}" if comp else "")

    def reps(self, n: int) -> list[list[list[str]]]:
        """Field n as the parser split it: repetitions → components → subcomponents (raw)."""
        if n >= len(self.raw):
            return []
        f = self.raw[n]
        if not any(isinstance(r, hl7.Repetition) for r in f):
            return [[["".join(map(str, f))]]]
        out = []
        for r in f:
            if any(isinstance(c, hl7.Component) for c in r):
                out.append([[str(s) for s in c] for c in r])
            else:
                out.append([["".join(map(str, r))]])
        return out


@dataclass
class Msg:
    """One message being mapped: its segments, where it stands, and what is wrong with it."""

    message: Any  # hl7.Message
    institution: str
    tz: tzinfo
    number: int  # 1-based position of the message in the input
    facilities: dict[str, str] = field(default_factory=dict)  # HL7 facility → institution
    control_id: str = ""
    type: str = ""  # e.g. "ADT^A01"
    charset: str = "utf-8"  # the codec of the message's bytes, which \X..\ escapes are in
    today: date = field(default_factory=date.today)  # the latest birth date accepted
    segments: list[Segment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    esc: str = ""
    delimiters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for raw in self.message:
            kind = self._text(raw[0]) if len(raw) else ""
            seen[kind] = seen.get(kind, 0) + 1
            self.segments.append(Segment(raw, kind, seen[kind]))
        # python-hl7's separators: segment, field, repetition, component, subcomponent.
        seps = str(self.message.separators)
        self.esc = str(self.message.esc)
        self.delimiters = dict(zip("FRST", seps[1:5], strict=False))
        msh = self.segments[0].raw if self.segments else None
        encoding = self._text(msh[2]) if msh is not None and len(msh) > 2 else ""
        if len(encoding) > 4:  # v2.7: MSH-2's fifth character truncates a value (\P\)
            self.delimiters["P"] = encoding[4]

    def _text(self, node: Any) -> str:
        return "".join(map(str, node)) if isinstance(node, list) else str(node)

    def first(self, kind: str) -> Segment | None:
        return next((s for s in self.segments if s.kind == kind), None)

    def source_id(self, seg: Segment) -> str:
        return f"{self.control_id}/{seg.kind}/{seg.ordinal}"

    def bad(self, code: str, message: str, where: str, source_id: str | None = None) -> None:
        prefix = f"message {self.number}: " if self.number > 1 else ""
        self.problems.append(Problem(code, prefix + message, where, None, source_id))

    # Values -------------------------------------------------------------------------------------

    def value(
        self, seg: Segment | None, n: int, comp: int = 1, sub: int = 1, rep: int = 1
    ) -> str | None:
        """One value, unescaped and stripped; None when absent, empty or the HL7 null."""
        if seg is None:
            return None
        reps = seg.reps(n)
        if len(reps) < rep or len(reps[rep - 1]) < comp or len(reps[rep - 1][comp - 1]) < sub:
            return None
        raw = reps[rep - 1][comp - 1][sub - 1]
        text = self.unescape(raw).strip()
        return None if text in ("", _NULL) else text

    def given(self, seg: Segment | None, n: int) -> bool:
        """Whether field n holds anything at all (in any repetition or component)."""
        return seg is not None and any(
            s.strip() not in ("", _NULL) for r in seg.reps(n) for c in r for s in c
        )

    def repeats(self, seg: Segment | None, n: int) -> int:
        return len(seg.reps(n)) if seg is not None else 0

    def unescape(self, raw: str) -> str:
        return unescape(raw, self.esc, self.delimiters, self.charset)

    # Date/times ---------------------------------------------------------------------------------

    def instant(
        self,
        seg: Segment | None,
        n: int,
        comp: int = 1,
        *,
        need: str = "minute",
        required: str | None = None,
        source_id: str | None = None,
    ) -> str | None:
        """An HL7 DTM as an ISO-8601 instant with its offset; without one, ``tz`` applies.

        ``need`` is the least precision accepted; a day-precision value (an immunization date)
        is the start of that day. ``required`` names what needs the value, when it does.
        """
        where = seg.at(n, comp if comp > 1 else 0) if seg is not None else "?"
        text = self.value(seg, n, comp)
        if text is None:
            if required:
                self.bad("hl7.required", f"{where} is needed for {required}", where, source_id)
            return None
        parsed = self.parse_dtm(text, need, where, source_id)
        return parsed.isoformat() if isinstance(parsed, datetime) else None

    def time(
        self,
        seg: Segment | None,
        n: int,
        comp: int = 1,
        *,
        required: str | None = None,
        source_id: str | None = None,
    ) -> str | None:
        """A clinical time at the precision sent (``clinical_time``): an instant, or a date of
        the year, month or day the sender gave. ``required`` names what needs it, when it
        does."""
        where = seg.at(n, comp if comp > 1 else 0) if seg is not None else "?"
        text = self.value(seg, n, comp)
        if text is None:
            if required:
                self.bad("hl7.required", f"{where} is needed for {required}", where, source_id)
            return None
        read = clinical_time(text, self.tz)
        if isinstance(read[1], str):
            self.bad(read[0], read[1], where, source_id)
            return None
        if read[1]:
            self.notes.append(f"{where}: an hour without its minutes is sent as its day")
        return read[0]

    def birth_date(self, seg: Segment, n: int) -> str | None:
        """PID-7 as a date, refused outside 1880-01-01 … ``today`` (a year typed 1013)."""
        text = self.value(seg, n)
        if text is None:
            return None
        parsed = self.parse_dtm(text, "day", seg.at(n), None, local=True)
        if parsed is None:
            return None
        if not EARLIEST_BIRTH <= parsed.date() <= self.today:
            self.bad(
                "hl7.birth_date_out_of_range",
                f"{seg.at(n)} (birth date) must lie between {EARLIEST_BIRTH.isoformat()} and "
                "today: a date outside them is a typing error to correct at the source",
                seg.at(n),
            )
            return None
        return parsed.date().isoformat()

    def parse_dtm(
        self, text: str, need: str, where: str, source_id: str | None, *, local: bool = False
    ) -> datetime | None:
        """An HL7 DTM of at least ``need`` precision, or None with the problem said."""
        read = read_dtm(text, need, self.tz, local=local)
        if isinstance(read, tuple):
            self.bad(*read, where, source_id)
            return None
        return read

    def peek_instant(self, seg: Segment | None, n: int) -> datetime | None:
        """Field n as an instant to the minute, or None; what is wrong with it is not said (the
        field's own mapper says it)."""
        text = self.value(seg, n)
        read = read_dtm(text, "minute", self.tz) if text is not None else None
        return read if isinstance(read, datetime) else None

    # Codes, quantities, names ---------------------------------------------------------------

    def system(self, name: str | None) -> str:
        if not name:
            return LOCAL_SYSTEM + self.institution
        upper = name.upper().replace(" ", "")
        if upper in SYSTEMS:
            return SYSTEMS[upper]
        if table := _V2_TABLE.fullmatch(upper):
            return f"http://terminology.hl7.org/CodeSystem/v2-{table.group(1)}"
        if _LOCAL.fullmatch(upper):
            return LOCAL_SYSTEM + self.institution
        return V2_CODING_SYSTEM + quote(name, safe="")[:90]

    def coding(
        self, seg: Segment | None, n: int, rep: int = 1, fallback_system: str | None = None
    ) -> dict[str, str] | None:
        """A CE/CWE/CNE as a Coding: the first triplet with a code, else the alternate."""
        for first, version in ((1, 7), (4, 8)):
            code = self.value(seg, n, first, rep=rep)
            if code is None:
                continue
            system = self.value(seg, n, first + 2, rep=rep) or fallback_system
            out = {
                "system": self.system(system),
                "code": code,
                "display": (self.value(seg, n, first + 1, rep=rep) or "")[:500],
                "version": self.value(seg, n, version, rep=rep),
            }
            return {k: v for k, v in out.items() if v}
        return None

    def decimal(self, text: str | None) -> Decimal | None:
        if text is None or not _NUMBER.fullmatch(text):
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            return None
        return value if value.is_finite() else None

    def quantity(self, value: Decimal, seg: Segment | None, n: int) -> dict[str, Any] | None:
        """A number with the unit of a CE/CWE field; UCUM only when the sender says so."""
        code, text = self.value(seg, n, 1), self.value(seg, n, 2)
        if not (code or text):
            return None
        ucum = (self.value(seg, n, 3) or "").upper() == "UCUM"
        return {
            "value": str(value),
            "unit": (text or code or "")[:128],
            "system": UCUM if ucum and code else None,
            "code": code if ucum else None,
        }

    def person_name(self, seg: Segment | None, n: int, *, person: bool = False) -> str | None:
        """An XPN (or, ``person``, an XCN: id^family^given) as one display name."""
        if seg is None:
            return None
        reps = range(1, self.repeats(seg, n) + 1)
        at = 1 if person else 0
        legal = next((r for r in reps if self.value(seg, n, 7 + at, rep=r) == "L"), 1)
        family = self.value(seg, n, 1 + at, rep=legal) or ""
        given = [
            g
            for g in (self.value(seg, n, 2 + at, rep=legal), self.value(seg, n, 3 + at, rep=legal))
            if g
        ]
        if _CJK.search(family + "".join(given)):  # 王 + 秀英 → 王秀英: no space in a CJK name
            name = family + "".join(given)
        else:
            name = " ".join([*given, family]).strip()
        if not name and person:
            return self.value(seg, n, 1)
        return name[:100] or None
