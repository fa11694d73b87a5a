"""Encapsulated data (OBX-2 ED) and text too long for an observation → the content of a
canonical document, for the OBX value readers (adapters/hl7v2_values.py). Pure, no IO.

ED is source^type of data^subtype^encoding^data (tables 0191, 0291, 0299): the data is decoded
(Base64, Hex, or A for text as it stands) and sent with its SHA-256 and size; its MIME type is
the subtype's where HL7 names one (PDF, JPEG, DICOM, …), else type/subtype as written, else
text/plain for text and application/octet-stream for the rest. Content past the document
limit is named by its hash and size only, and stays with the sender.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from adapters.hl7v2_fields import Msg, Segment

MAX_DOCUMENT_DATA = 700_000  # the canonical document's base64 data
# Table 0191 (type of data) and MIME top-level types as senders write them → MIME top level.
MIME_TOP = {
    "AP": "application",
    "APPLICATION": "application",
    "AU": "audio",
    "AUDIO": "audio",
    "IM": "image",
    "IMAGE": "image",
    "NS": "image",
    "SI": "image",
    "SD": "application",
    "TEXT": "text",
    "TX": "text",
    "FT": "text",
    "VIDEO": "video",
    "MULTIPART": "multipart",
}
# Table 0291 (subtype) → a MIME type when the pair alone would not say it rightly.
MIME_SUBTYPE = {
    "PDF": "application/pdf",
    "JPEG": "image/jpeg",
    "JPG": "image/jpeg",
    "GIF": "image/gif",
    "PNG": "image/png",
    "TIFF": "image/tiff",
    "PICT": "image/pict",
    "DICOM": "application/dicom",
    "RTF": "application/rtf",
    "HTML": "text/html",
    "XML": "application/xml",
    "SGML": "text/sgml",
    "POSTSCRIPT": "application/postscript",
    "OCTET-STREAM": "application/octet-stream",
    "X-HL7-CDA-LEVEL-ONE": "application/x-hl7-cda-level-one+xml",
}
_TOKEN = re.compile(r"[A-Za-z0-9][\w.+-]{0,40}")


@dataclass(frozen=True)
class Document:
    """The content of a document sent in place of the observation: MIME type and bytes."""

    content_type: str
    content: bytes


def encapsulated(msg: Msg, obx: Segment, sid: str) -> Document | None:
    """ED: source^type of data^subtype^encoding^data (tables 0191, 0291, 0299)."""
    top, sub = msg.value(obx, 5, 2), msg.value(obx, 5, 3)
    encoding = (msg.value(obx, 5, 4) or "A").upper()
    data = msg.value(obx, 5, 5)
    if data is None:
        msg.bad(
            "hl7.required",
            "OBX-5.5 (the encapsulated data) is needed for an ED result",
            obx.at(5, 5),
            sid,
        )
        return None
    try:
        if encoding == "BASE64":
            content = base64.b64decode("".join(data.split()), validate=True)
        elif encoding == "HEX":
            content = bytes.fromhex("".join(data.split()))
        elif encoding == "A":
            content = data.encode()
        else:
            raise ValueError("encoding")
    except (ValueError, binascii.Error):
        msg.bad(
            "hl7.encapsulated_data",
            "OBX-5.5 is not data in the encoding OBX-5.4 names (Base64, Hex, or A for text)",
            obx.at(5, 5),
            sid,
        )
        return None
    return Document(_mime(top, sub, encoding), content)


def _mime(top: str | None, sub: str | None, encoding: str) -> str:
    if sub and sub.upper() in MIME_SUBTYPE:
        return MIME_SUBTYPE[sub.upper()]
    main = MIME_TOP.get((top or "").upper())
    if main and sub and _TOKEN.fullmatch(sub):
        return f"{main}/{sub.lower()}"
    if main == "text" or (main is None and encoding == "A"):
        return "text/plain"
    return "application/octet-stream"


def document_fields(doc: Document) -> dict[str, Any]:
    """A canonical document's content fields; the content itself only within the limit."""
    data = base64.b64encode(doc.content).decode()
    out: dict[str, Any] = {
        "content_type": doc.content_type,
        "sha256": hashlib.sha256(doc.content).hexdigest(),
        "size": len(doc.content),
    }
    if len(data) <= MAX_DOCUMENT_DATA:
        out["data"] = data
    return out
