"""Character sets of HL7 v2 messages, for the HL7 v2 adapter: the one MSH-18 names (HL7 table
0211, and the spellings Chinese HIS and Windows systems write there) or, when MSH-18 is empty,
the one the bytes are in. Pure, no IO.

MSH-18 is honoured: a message naming a character set is decoded in it, strictly, and refused
(``hl7.encoding``) when its bytes are not valid in it, with one exception: a message that says
UTF-8 (or ASCII) but is not valid in it is read as if MSH-18 were empty, with a note, because
Chinese HIS templates often say UTF-8 while the system writes GBK, and the strict decoding
proved the name wrong. A name the adapter does not read is refused as
``hl7.charset_unknown`` unless every byte is ASCII, which every set read here agrees on. Only the first repetition counts (later ones name the sets an ISO 2022 escape
switches to, which the adapter does not read).

Detection, when MSH-18 is empty: bytes that decode as UTF-8 are UTF-8; only bytes UTF-8
refuses are decoded as GB 18030 (a superset of GBK and GB 2312: what a Chinese HIS exports
without saying so); bytes neither reads are refused. Both decodings are strict, and UTF-8 is
tried first, so valid UTF-8 can never be mis-decoded: GB 18030 never sees it. The other way
round is possible in principle and rare in practice: a GBK text is valid UTF-8 only if every
one of its characters happens to form a valid UTF-8 sequence (lead byte C2-DF and trail
80-BF, or a whole three-byte sequence), which Chinese text beyond a few characters does not. A
sender writing Latin-1 must say so (``8859/1``): its accented letters followed by ASCII are
valid GB 18030 pairs, so detection would read them as Chinese.
"""

from __future__ import annotations

import re

from domain.problems import Problem

UTF8 = "utf-8"
GB18030 = "gb18030"
# HL7 table 0211 (v2.5-2.8) and the names systems write instead, keyed by ``_key`` (upper case,
# no spaces, hyphens or underscores). GBK, GB 2312 and code page 936 are read as GB 18030, their
# superset. "UNICODE" (ISO/IEC 10646 without a form) is read as UTF-8, the only 8-bit form.
CODECS = {
    "ASCII": "ascii",
    "USASCII": "ascii",
    "GB180302000": GB18030,
    "GB180302005": GB18030,
    "GB18030": GB18030,
    "GBK": GB18030,
    "GB2312": GB18030,
    "GB231280": GB18030,
    "EUCCN": GB18030,
    "CP936": GB18030,
    "WINDOWS936": GB18030,
    "KSX1001": "euc_kr",
    "EUCKR": "euc_kr",
    "BIG5": "big5",
    "CP950": "cp950",
    "UNICODE": UTF8,
    "UNICODEUTF8": UTF8,
    "UTF8": UTF8,
    "LATIN1": "iso8859-1",
    "CP1252": "cp1252",
    "WINDOWS1252": "cp1252",
}
# UTF-16 and UTF-32 are read from their byte-order mark or their zero bytes (hl7v2_framing.py);
# a message whose MSH-18 could be read byte by byte is in neither, whatever it says.
WIDE = {"UNICODEUTF16", "UNICODEUTF32", "UTF16", "UTF32"}
# ISO 8859 parts Python reads (8859/12 was never published).
_ISO8859 = re.compile(r"(?:ISO)?8859/?(1[0-6]|[1-9])")
_SAFE_NAME = re.compile(r"[A-Za-z0-9 /._-]{1,30}")
READ = "UNICODE UTF-8, GB 18030-2000 (and GBK, GB 2312), ASCII, 8859/1-16, BIG-5, KS X 1001, CP1252"


def _key(name: str) -> str:
    return re.sub(r"[\s_-]", "", name.upper())


def codec_for(name: str) -> str | None:
    """The Python codec for a character set name, or None when the adapter does not read it."""
    key = _key(name)
    if key in CODECS:
        return CODECS[key]
    if m := _ISO8859.fullmatch(key):
        return f"iso8859-{m.group(1)}" if m.group(1) != "12" else None
    return None


def declared(raw: bytes) -> str | None:
    """MSH-18's first repetition, read from the header's bytes (every byte up to it is taken
    as one character: the delimiters are ASCII); None when empty or absent."""
    line = raw.split(b"\r", 1)[0].decode("latin-1")
    if len(line) < 5 or line[:3] != "MSH":
        return None
    fields = line.split(line[3])
    if len(fields) < 18:  # fields[0] is "MSH", fields[1] MSH-2, fields[17] MSH-18
        return None
    repetition = fields[1][1:2]
    value = (fields[17].split(repetition)[0] if repetition else fields[17]).strip()
    return value if value not in ("", '""') else None


def decode(raw: bytes) -> tuple[str, str, str | None] | Problem:
    """One message's bytes as text, with the codec they were read in and a note when MSH-18
    proved wrong; or why they cannot be read."""
    name = declared(raw)
    if raw.isascii():
        return raw.decode("ascii"), codec_for(name or "") or UTF8, None
    wrong = None  # the codec MSH-18 names when the bytes proved it wrong
    if name is not None and _key(name) not in WIDE:
        codec = codec_for(name)
        said = f" ({name})" if _SAFE_NAME.fullmatch(name) else ""
        if codec is None:
            return Problem(
                "hl7.charset_unknown",
                f"MSH-18 names a character set{said} the adapter does not read; it reads {READ} "
                "(HL7 table 0211), and a message without MSH-18 as UTF-8 or GB 18030",
                "MSH-18",
            )
        if _valid(raw, codec):
            return raw.decode(codec), codec, None
        if codec not in (UTF8, "ascii"):
            return Problem(
                "hl7.encoding",
                f"the message's bytes are not valid in the character set MSH-18 names{said}; "
                "name the one it is written in",
                "MSH-18",
            )
        wrong = codec
    for codec in (UTF8, GB18030):
        if _valid(raw, codec):
            note = (
                f"MSH-18: names {wrong.upper()}, which the message is not; read as {codec.upper()}"
                if wrong
                else None
            )
            return raw.decode(codec), codec, note
    said = "names a character set the message is not in" if wrong else "is empty"
    return Problem(
        "hl7.encoding",
        f"the message is neither UTF-8 nor GB 18030 (GBK) and MSH-18 {said}; name its "
        f"character set in MSH-18 ({READ})",
        "MSH-18",
    )


def _valid(raw: bytes, codec: str) -> bool:
    try:
        raw.decode(codec)
    except UnicodeDecodeError:
        return False
    return True
