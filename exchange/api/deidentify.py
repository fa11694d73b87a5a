"""What a research project is given of a patient's record: de-identified resources.

A research read (purpose HRESCH, under a project the regulator registered) gets the same
entries a care read would, less what names the person: no names, identifiers (resident ID,
MRN, health card), telecom, address, contacts or photo, no narrative or free-text notes (a
note can name anyone). Every id and reference is replaced by a pseudonym keyed by the
project's salt, and every date is shifted by a number of days keyed by the project and the
patient: intervals within one patient's record stay true (age at diagnosis, days between
visits), and two projects' extracts cannot be joined on ids or dates.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

# FHIR elements of type date, dateTime or instant that the rendered resources carry.
DATE_KEYS = frozenset(
    {
        "birthDate",
        "deceasedDateTime",
        "effectiveDateTime",
        "effectiveInstant",
        "issued",
        "recordedDate",
        "onsetDateTime",
        "abatementDateTime",
        "authoredOn",
        "occurrenceDateTime",
        "performedDateTime",
        "whenHandedOver",
        "whenPrepared",
        "dateAsserted",
        "lastUpdated",
        "valueDateTime",
        "created",
        "date",
        "start",
        "end",
    }
)
# Elements that name or reach the person, or may (free text), wherever they occur.
DROPPED = frozenset({"identifier", "name", "telecom", "address", "contact", "photo", "note"})
_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([^/\s]+)$")
_URN = "urn:uuid:"


class Deidentifier:
    """De-identifies one patient's resources for one project."""

    def __init__(self, salt: bytes, patient_id: UUID) -> None:
        self._salt = salt
        digest = self._mac(f"shift:{patient_id}")
        days = int.from_bytes(digest[:4], "big") % 730 - 365  # a year either way
        self.shift = timedelta(days=days or 1)  # never the true date

    def _mac(self, text: str) -> bytes:
        return hmac.new(self._salt, text.encode(), hashlib.sha256).digest()

    def pseudonym(self, value: str) -> str:
        """The project's stand-in for an id (the same id gives the same stand-in)."""
        return str(UUID(bytes=self._mac(f"id:{value}")[:16], version=4))

    def resource(self, res: Any, key: str = "") -> Any:
        if isinstance(res, dict):
            if "div" in res and key == "text":  # narrative
                return None
            out = {}
            for k, v in res.items():
                if k in DROPPED:
                    continue
                if k == "text" and isinstance(v, dict):
                    continue
                if k == "id" and isinstance(v, str):
                    out[k] = self.pseudonym(v)
                elif k == "reference" and isinstance(v, str):
                    out[k] = self._reference(v)
                elif k in DATE_KEYS and isinstance(v, str):
                    out[k] = self._date(v)
                elif k == "display" and str(res.get("reference", "")).startswith("Patient/"):
                    continue
                else:
                    out[k] = self.resource(v, k)
            return out
        if isinstance(res, list):
            return [self.resource(v, key) for v in res]
        return res

    def _reference(self, ref: str) -> str:
        if ref.startswith(_URN):
            return _URN + self.pseudonym(ref.removeprefix(_URN))
        found = _REFERENCE.match(ref)
        return f"{found.group(1)}/{self.pseudonym(found.group(2))}" if found else "redacted"

    def _date(self, value: str) -> str:
        """The date moved by the patient's shift, at the precision it was given."""
        try:
            if len(value) == 4:  # YYYY
                return str((date(int(value), 7, 1) + self.shift).year)
            if len(value) == 7:  # YYYY-MM
                return (date.fromisoformat(value + "-15") + self.shift).isoformat()[:7]
            if len(value) == 10:
                return (date.fromisoformat(value) + self.shift).isoformat()
            moved = datetime.fromisoformat(value.replace("Z", "+00:00")) + self.shift
            return moved.isoformat()
        except ValueError:
            return "redacted"

    def entries(self, joined: bytes) -> bytes:
        """Bundle entries as the record reader joins them (comma-separated JSON)."""
        if not joined:
            return joined
        parts = orjson.loads(b"[" + joined + b"]")
        out = []
        for entry in parts:
            entry["fullUrl"] = self._reference(entry["fullUrl"])
            entry["resource"] = self.resource(entry["resource"])
            out.append(orjson.dumps(entry))
        return b",".join(out)
