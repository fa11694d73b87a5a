"""HL7 v2.3–2.8 messages → canonical submission items, with an ingest report. A pure mapper.

Parser: python-hl7 (``hl7``), not hl7apy. Both are maintained; python-hl7 is the one STYLE.md
names as a model of a pure parser. It is version-agnostic and tolerant: it splits every one of
the 139 sample messages, and what it builds is the plain tree of segments, fields,
repetitions, components and subcomponents, so that *this* module decides what a message must
hold and refuses the rest precisely (``PV1-2``, ``OBX[2]-6``). hl7apy's version-aware
validation refuses whole messages for segments the exchange never reads (a PRT in an ORU, a
PRT in a VXU) with reasons a sender cannot act on ("Invalid message"). What is done before
the parser (adapters/hl7v2_framing.py): MLLP frames, batch envelopes, byte-order marks and
every segment separator (CR, CRLF, LF) are dealt with, the input is cut into its messages, and
each is decoded in the character set its MSH-18 names or its bytes show
(adapters/hl7v2_charsets.py). The parser then splits fields with the message's own delimiters
(MSH-1, MSH-2), checked first; escape sequences are read with them (adapters/hl7v2_escapes.py).

Mapped message types (MSH-9): ADT A01/A03/A04/A08, and A02/A05/A06/A07/A13 as versions of
the same visit (patient, encounter, DG1 conditions, AL1 allergies: adapters/hl7v2_visit.py,
which also derives a visit's record when PV1-19 is not given), ADT A28/A31 (patient,
allergies), ADT A40 (merge), ORU^R01 (the report and its results, as observations or
documents by OBX-2: adapters/hl7v2_values.py), ORM^O01 and OML^O21 (each ordered test an
observation with status "registered": FHIR's "exists, no result yet", and the report that later
arrives in an ORU is a newer version of the same ``ord:<placer number>`` record; a procedure
"in preparation" would be a different record from its results and wrong for a lab test),
RDE^O11 (medication requests), VXU^V04 (immunizations), and REF^I12 / REF^I14 (a referral and
its cancellation: adapters/hl7v2_referrals.py). Every other type is refused as
``hl7.unsupported_type``.

Times without an offset are read in ``tz`` (default Asia/Shanghai, +08:00: the consortium is in
China); an offset in the message wins. Clinical times keep the precision sent: an instant from
the minute on, else a FHIR date of the year, month or day (an hour without minutes keeps its
day); a referral's times are instants, to the minute; a birth date is a date from 1880 to
today. Source ids are ``<MSH-10>/<segment>/<n>`` (the n-th segment of that type): the same for
a resent message, distinct across messages as long as the sender's control ids are. Problems
name the field and never repeat a value from the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import hl7

from adapters.hl7v2_fields import Msg
from adapters.hl7v2_framing import Piece, split
from adapters.hl7v2_orders import immunizations, orders, prescriptions, results
from adapters.hl7v2_patient import Item, Ref, allergies, key, merges, patient, patient_ref
from adapters.hl7v2_referrals import cancellation, facilities_checked, referral
from adapters.hl7v2_visit import VISIT_EVENTS, conditions, encounter
from adapters.report import IngestReport, check_item
from domain.problems import Problem

VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")
ENCODING_RULE = "MSH-1 and MSH-2 must be five distinct punctuation characters, as in MSH|^~\\&"
MAX_DELIMITERS = 200_000
_TYPE_SHAPE = re.compile(r"[A-Z0-9]{3}(\^[A-Z0-9]{3})?")
Mapper = Callable[[Msg, Ref], list[Item]]


def _visit(event: str) -> Mapper:
    def mapper(msg: Msg, ref: Ref) -> list[Item]:
        return [
            *encounter(msg, msg.first("PV1"), ref, event),
            *conditions(msg, ref),
            *allergies(msg, ref),
        ]

    return mapper


# Per message type: its mapper and the segments it reads (any other is reported as skipped).
ADT_VISIT = {"MSH", "PID", "PV1", "PV2", "DG1", "AL1"}
MAPPERS: dict[str, tuple[Mapper, set[str]]] = {
    **{f"ADT^{e}": (_visit(e), ADT_VISIT) for e in VISIT_EVENTS},
    "ADT^A28": (allergies, {"MSH", "PID", "AL1"}),
    "ADT^A31": (allergies, {"MSH", "PID", "AL1"}),
    "ADT^A40": (lambda msg, ref: merges(msg), {"MSH", "PID", "MRG"}),
    "ORU^R01": (results, {"MSH", "PID", "PV1", "ORC", "OBR", "OBX"}),
    "ORM^O01": (
        lambda m, r: [*orders(m, r), *conditions(m, r)],
        {"MSH", "PID", "PV1", "ORC", "OBR", "DG1"},
    ),
    "OML^O21": (
        lambda m, r: [*orders(m, r), *conditions(m, r)],
        {"MSH", "PID", "PV1", "ORC", "OBR", "DG1"},
    ),
    "RDE^O11": (prescriptions, {"MSH", "PID", "PV1", "ORC", "RXE", "RXO", "RXR", "TQ1"}),
    "VXU^V04": (immunizations, {"MSH", "PID", "ORC", "RXA", "RXR"}),
    "REF^I12": (referral, {"MSH", "PID", "RF1", "PRD", "DG1", "PR1", "NTE", "PV1"}),
    "REF^I14": (cancellation, {"MSH", "PID", "RF1", "PRD", "NTE"}),
}


def read_hl7v2(
    data: bytes | str,
    *,
    institution: str,
    tz: str = "Asia/Shanghai",
    facilities: Mapping[str, str] | None = None,
    today: date | None = None,
) -> IngestReport:
    """Map HL7 v2 messages (one, or a batch, file or MLLP stream of them) to canonical items.

    ``tz`` is the IANA zone of the sender's clocks, applied to every time given without an
    offset. ``facilities`` maps an HL7 facility (the namespace or universal id of MSH-6) to the
    consortium institution code a referral goes to. ``today`` (in ``tz`` unless given) is the
    latest birth date accepted. Each message maps on its own: a refused message (or item)
    leaves the others.
    """
    zone = ZoneInfo(tz)  # a wrong zone name is the caller's error: it raises
    known = facilities_checked(facilities)  # so is a facility mapped to no institution code
    latest = today or datetime.now(zone).date()
    report = IngestReport()
    pieces, report.problems = split(data)
    control_ids: set[str] = set()
    skipped: set[str] = set()
    for number, piece in enumerate(pieces, 1):
        prefix = f"message {number}: " if number > 1 else ""
        parsed = _parse(piece)
        if isinstance(parsed, Problem):
            report.problems.append(replace(parsed, message=prefix + parsed.message))
            continue
        msg = Msg(parsed, institution, zone, number, facilities=known)
        msg.charset, msg.today = piece.charset, latest
        if piece.note:
            msg.notes.append(piece.note + (f" (message {number})" if number > 1 else ""))
        items = _message(msg, control_ids)
        for where, item in items:
            found = check_item(item, where=where, source_id=item["source_id"])
            if found:
                msg.problems += found
            else:
                report.items.append(item)
        report.problems += msg.problems
        if msg.type in MAPPERS:
            reads = MAPPERS[msg.type][1]
            for seg in msg.segments:
                line = f"{msg.type} {seg.kind}: segment not mapped"
                if (
                    seg.kind not in reads
                    and line not in skipped
                    and _TYPE_SHAPE.fullmatch(seg.kind)
                ):
                    skipped.add(line)
                    report.skipped.append(line)
        report.skipped += [n for n in msg.notes if n not in report.skipped]
    return report


def _parse(piece: Piece) -> Any:
    """One message's text as python-hl7's tree, its delimiters checked first (the parser
    trusts them); or the problem."""
    if piece.text is None:
        return piece.problem
    text = piece.text
    separator = text[3:4]
    end = text.find(separator, 4) if separator else -1
    if end == -1:
        return Problem(
            "hl7.structure",
            "the MSH segment ends at its encoding characters: MSH-9 (type), MSH-10 (control "
            "id) and MSH-12 (version) are needed",
            "MSH",
        )
    if not _encoding_ok(separator, text[4:end]):
        return Problem("hl7.encoding_characters", ENCODING_RULE, "MSH-2")
    # The parser builds an object per field, repetition, component and subcomponent (some
    # 10 us each): a message of nothing but delimiters would take minutes. No real one nears
    # the limit (a 500-result lab report holds some 20,000); a large ED is one field.
    if sum(text.count(c) for c in "\r" + text[3:end]) > MAX_DELIMITERS:
        return Problem(
            "hl7.message_too_large",
            f"the message holds more than {MAX_DELIMITERS:,} segments, fields, components "
            "and repetitions; send its results in several messages",
            "MSH",
        )
    try:
        return hl7.parse(text)
    except (hl7.HL7Exception, ValueError, IndexError, KeyError, AssertionError, TypeError):
        # The parser's messages quote the offending segment: they are not passed on.
        return Problem("hl7.structure", "not readable as an HL7 v2 message", "MSH")


def _encoding_ok(separator: str, encoding: str) -> bool:
    """MSH-1 and MSH-2: distinct punctuation (a fifth, the v2.7 truncation character, may be
    given)."""
    chars = separator + encoding
    return (
        len(separator) == 1
        and len(encoding) in (4, 5)
        and len(set(chars)) == len(chars)
        and not any(c.isalnum() or c.isspace() for c in chars)
    )


def _message(msg: Msg, control_ids: set[str]) -> list[Item]:
    if not _header(msg, control_ids):
        return []
    pid = msg.first("PID")
    if pid is None:
        msg.bad("hl7.no_pid", f"a {msg.type} message needs a PID segment naming its patient", "PID")
        return []
    ref = patient_ref(msg, pid, 3, msg.source_id(pid))
    if ref is None:
        return []
    mapper = MAPPERS[msg.type][0]
    demographics = patient(msg, pid, ref) if msg.type != "ADT^A40" else []
    return [*demographics, *mapper(msg, ref)]


def _header(msg: Msg, control_ids: set[str]) -> bool:
    """MSH: encoding characters, type, version and control id, or a problem saying which."""
    msh = msg.segments[0] if msg.segments and msg.segments[0].kind == "MSH" else None
    if msh is None:
        msg.bad("hl7.structure", "a message must start with its MSH segment", "MSH")
        return False
    separator = "".join(map(str, msh.raw[1])) if len(msh.raw) > 1 else ""
    encoding = "".join(map(str, msh.raw[2])) if len(msh.raw) > 2 else ""
    if not _encoding_ok(separator, encoding):
        msg.bad("hl7.encoding_characters", ENCODING_RULE, "MSH-2")
        return False
    kind, event = msg.value(msh, 9, 1), msg.value(msh, 9, 2)
    if kind is None:
        msg.bad("hl7.message_type", "MSH-9 (message type) is needed", "MSH-9")
        return False
    msg.type = f"{kind}^{event}" if event else kind
    if msg.type not in MAPPERS:
        named = msg.type if _TYPE_SHAPE.fullmatch(msg.type) else "this message type"
        msg.bad(
            "hl7.unsupported_type",
            f"{named} is not mapped; the adapter maps {', '.join(MAPPERS)}",
            "MSH-9",
        )
        return False
    version = msg.value(msh, 12)
    if version not in VERSIONS:
        msg.bad(
            "hl7.unsupported_version",
            "MSH-12 must give an HL7 version from 2.3 to 2.8"
            if version
            else "MSH-12 (version) is needed",
            "MSH-12",
        )
        return False
    control = msg.value(msh, 10)
    if control is None or len(key(control)) > 150:
        msg.bad(
            "hl7.control_id",
            "MSH-10 (message control id) is needed, at most 150 "
            "characters: the items' source ids derive from it",
            "MSH-10",
        )
        return False
    msg.control_id = key(control)
    if msg.control_id in control_ids:
        msg.bad(
            "hl7.duplicate_control_id",
            "MSH-10 repeats the control id of an earlier "
            "message of this input; each message needs its own",
            "MSH-10",
        )
        return False
    control_ids.add(msg.control_id)
    return True
