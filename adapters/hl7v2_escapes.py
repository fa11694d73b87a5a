"""HL7 v2 escape sequences (v2.5 section 2.7) → plain text, for the HL7 v2 adapter. Pure, no IO.

``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and v2.7's ``\\P\\``) are the message's own delimiters, as
its MSH-1 and MSH-2 define them; ``\\Xhhhh\\`` is bytes in the message's character set
(``\\XB0A1\\`` is 啊 in GB 18030, ``\\XE5958A\\`` in UTF-8), of which line breaks and tabs are
kept and other control characters dropped; formatting (``\\.br\\``, ``\\.sp n\\``, ``\\.ce\\``)
becomes line breaks and ``\\.sk n\\``, ``\\.in n\\``, ``\\.ti n\\`` spaces (at most 100 of
either, so a count cannot blow a value up); highlighting (``\\H\\ \\N\\``) and fill mode
(``\\.fi\\ \\.nf\\``) are dropped. What cannot be read is kept as written: a sequence left open,
hex that is not valid in the character set, a sender's own ``\\Zxx\\``, and the character set
switches ``\\Cxxyy\\``, ``\\Mxxyyzz\\`` the adapter does not follow. Nothing is lost, nothing
invented, and unlike python-hl7's own unescape nothing is logged (a field's text may be
patient data).
"""

from __future__ import annotations

import re
import unicodedata

_FORMAT = re.compile(r"\.(br|sp|ce|sk|in|ti|fi|nf)([+-]?\d{0,6})")
_HEX = re.compile(r"X((?:[0-9A-Fa-f]{2})+)")
_MAX_REPEAT = 100
_KEPT_CONTROLS = {"\n", "\t"}


def unescape(raw: str, esc: str, delimiters: dict[str, str], charset: str) -> str:
    """``raw`` with its escape sequences replaced. ``delimiters`` maps F, S, T, R (and P when
    MSH-2 gives a truncation character) to the characters the message uses."""
    if not esc or esc not in raw:
        return raw
    out: list[str] = []
    at = 0
    while (start := raw.find(esc, at)) != -1:
        end = raw.find(esc, start + 1)
        if end == -1:
            break  # left open: the rest is kept as written
        out.append(raw[at:start])
        body = raw[start + 1 : end]
        replaced = _sequence(body, esc, delimiters, charset)
        out.append(raw[start : end + 1] if replaced is None else replaced)
        at = end + 1
    out.append(raw[at:])
    return "".join(out)


def _sequence(body: str, esc: str, delimiters: dict[str, str], charset: str) -> str | None:
    """The text one sequence stands for; None to keep it as written."""
    if body == "E":
        return esc
    if body in delimiters:
        return delimiters[body]
    if body in ("H", "N"):
        return ""
    if m := _FORMAT.fullmatch(body):
        kind, count = m.group(1), m.group(2)
        times = min(abs(int(count)) if count.lstrip("+-") else 1, _MAX_REPEAT)
        if kind in ("br", "ce"):
            return "\n"
        if kind == "sp":
            return "\n" * max(times, 1)
        if kind in ("fi", "nf"):
            return ""
        return " " * times  # sk, in, ti: spaces
    if m := _HEX.fullmatch(body):
        try:
            text = bytes.fromhex(m.group(1)).decode(charset)
        except (UnicodeDecodeError, LookupError):
            return None
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return "".join(c for c in text if c in _KEPT_CONTROLS or unicodedata.category(c) != "Cc")
    return None
