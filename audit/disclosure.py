"""The disclosure rule: how an audit record names what a response disclosed.

A handful of resources (up to ``LISTED``) are listed as "Type/id" lines; more (a whole record
holds hundreds) are counted, typed and digested — SHA-256 of the sorted lines joined by "\\n".
The list itself follows from the ledger as of the record's position and decision, so
``/audit/disclosed?seq=`` can rebuild it and check it against the digest, and a record stays
small on every read. The read API builds every audit record's disclosure here, from the
"Type/id" lines the record's page query returns beside the Bundle entries
(``projections.postgres.PatientRecordReader.bundle_entries``); an integration test holds
those lines to the resources the Bundle actually holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

LISTED = 20  # up to this many disclosed resources are listed; beyond, counted and digested


def digest(lines: Sequence[str]) -> str:
    """SHA-256 (hex) of the sorted "Type/id" lines joined by newlines (code-point order, the
    order PostgreSQL's ``COLLATE "C"`` gives UTF-8 text)."""
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def resource_types(lines: Sequence[str]) -> list[str]:
    """The resource types of the "Type/id" lines, sorted; a line without "/" names none."""
    return sorted({line.split("/")[0] for line in lines if "/" in line})


def summary(disclosed: Sequence[str]) -> dict[str, Any]:
    """The audit record's disclosure fields for the full list of what a response disclosed."""
    many = len(disclosed) > LISTED
    return summary_of(
        len(disclosed),
        resource_types(disclosed),
        None if many else disclosed,
        digest(disclosed) if many else None,
    )


def summary_of(
    count: int, types: Sequence[str], lines: Sequence[str] | None, sha256: str | None
) -> dict[str, Any]:
    """The same fields from a disclosure already counted, typed and (when it is more than
    ``LISTED``) digested."""
    if count <= LISTED:
        listed = list(lines or [])  # PostgreSQL lists no lines at all as NULL
        if len(listed) != count:
            raise ValueError(f"a disclosure of {count} resources lists them all")
        return {"disclosed": listed, "resource_types": list(types), "disclosed_count": count}
    if sha256 is None:
        raise ValueError(f"a disclosure of more than {LISTED} resources carries their digest")
    return {
        "disclosed": [],
        "disclosed_count": count,
        "resource_types": list(types),
        "disclosed_sha256": sha256,
    }


def agrees(record: Mapping[str, Any], rebuilt: Sequence[str]) -> bool:
    """Whether a rebuilt list of "Type/id" lines is what the audit record says was disclosed:
    its digest when it carries one, else the lines it lists."""
    recorded: str | None = record.get("disclosed_sha256")
    if recorded:
        return digest(rebuilt) == recorded
    return sorted(rebuilt) == sorted(record.get("disclosed") or [])
