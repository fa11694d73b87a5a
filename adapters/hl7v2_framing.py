"""The HL7 v2 messages in a file or stream, each as text in its own character set, for the
HL7 v2 adapter (adapters/hl7v2.py). Pure, no IO.

What the input may hold: one message; several (each starting at its MSH); FHS/BHS batches;
MLLP frames (0x0B, the message, 0x1C 0x0D) as an interface engine logs them, several in a row;
any mix of CR, CRLF and LF between segments; and a byte-order mark before any message (files
concatenated into one). The framing bytes and the batch envelope (FHS, BHS, BTS, FTS) are
dropped; segments outside any message are reported once as ``hl7.structure``. Each message is
decoded on its own, in the character set its MSH-18 names or the bytes show
(adapters/hl7v2_charsets.py), because each may come from a different system.

Cutting bytes before decoding them is safe: VT, FS, CR and LF never occur inside a multi-byte
character of the sets read (every byte after the first of a UTF-8, GB 18030, Big5 or EUC-KR
character is 0x30 or above). UTF-16 and UTF-32 are recognised by their byte-order mark or by
the zero bytes in ``MSH`` and decoded whole first.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.hl7v2_charsets import UTF8, codec_for, declared, decode
from domain.problems import Problem

BOM = b"\xef\xbb\xbf"
# The 16- and 32-bit forms, by their byte-order mark or by how their first "M" (or an MLLP
# start byte) looks. The 32-bit ones come first: UTF-32-LE's mark begins like UTF-16-LE's.
WIDE = ("utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be")
ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
_LEADING = b" \t\x00\x0c"


@dataclass(frozen=True)
class Piece:
    """One message of the input: its text (segments separated by CR) and the codec its bytes,
    and its ``\\X..\\`` escapes, are read in; or the problem that kept it from being read."""

    text: str | None
    charset: str = UTF8
    problem: Problem | None = None
    note: str | None = None  # what the report should say about how it was read


def split(data: bytes | str) -> tuple[list[Piece], list[Problem]]:
    """The messages in ``data`` and the problems of the input as a whole.

    Text given as ``str`` is taken as decoded already (MSH-18 then only names the set its
    ``\\X..\\`` escapes are in)."""
    raw, given = _bytes(data)
    if isinstance(given, Problem):
        return [], [given]
    lines = [_clean(line) for line in _segments(raw)]
    lines = [line for line in lines if line]
    if not lines or lines[0][:3] not in (b"MSH", *ENVELOPE[:2]):
        return [], [
            Problem(
                "hl7.not_hl7",
                "not an HL7 v2 message: it must start with an MSH segment (or FHS/BHS for a batch)",
                "MSH",
            )
        ]
    messages: list[list[bytes]] = []
    stray = False
    current: list[bytes] | None = None
    for line in lines:
        head = line[:3]
        if head == b"MSH":
            current = [line]
            messages.append(current)
        elif head in ENVELOPE:
            current = None  # a batch's header or trailer ends the message before it
        elif current is None:
            stray = True
        else:
            current.append(line)
    problems = []
    if stray or not messages:
        problems.append(
            Problem(
                "hl7.structure",
                "segments outside any message: every segment must follow its message's MSH "
                "(FHS, BHS, BTS and FTS only wrap messages)"
                if messages
                else "a batch with no message in it: each message starts with MSH",
                "MSH",
            )
        )
    return [_piece(b"\r".join(m), given) for m in messages], problems


def _bytes(data: bytes | str) -> tuple[bytes, str | Problem | None]:
    """The input as bytes, and the codec it was already decoded from (None: each message is
    decoded by its own MSH-18)."""
    if isinstance(data, str):
        return data.encode(UTF8, "replace"), UTF8
    raw = bytes(data)
    for codec in WIDE:
        if any(raw.startswith(c.encode(codec)) for c in ("\ufeff", "M", "\x0b")):
            try:
                return raw.decode(codec).encode(UTF8, "replace"), codec
            except UnicodeDecodeError:
                return b"", Problem(
                    "hl7.encoding",
                    f"the input starts as {codec.upper()} but is not valid {codec.upper()}",
                    "MSH-18",
                )
    return raw, None


def _segments(raw: bytes) -> list[bytes]:
    # MLLP: the start byte goes, the end byte ends a segment like the CR after it.
    raw = raw.replace(b"\x0b", b"").replace(b"\x1c", b"\r")
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")


def _clean(line: bytes) -> bytes:
    """A segment without the byte-order marks and blanks a concatenation left before it."""
    while True:
        stripped = line.lstrip(_LEADING).removeprefix(BOM)
        if stripped == line:
            return line.rstrip(b" \t")
        line = stripped


def _piece(raw: bytes, given: str | None) -> Piece:
    if given is not None:
        text = raw.decode(UTF8, "replace")
        return Piece(text, given if given != UTF8 else _hex_codec(raw))
    decoded = decode(raw)
    if isinstance(decoded, Problem):
        return Piece(None, problem=decoded)
    text, charset, note = decoded
    return Piece(text, charset, note=note)


def _hex_codec(raw: bytes) -> str:
    """For text given decoded: the set MSH-18 names, which its ``\\X..\\`` escapes are in."""
    name = declared(raw)
    return (codec_for(name) if name else None) or UTF8
