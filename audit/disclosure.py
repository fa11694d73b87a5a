"""The disclosure rule: how an audit record names what a response disclosed.

A handful of resources (up to ``LISTED``) are listed as "Type/id" lines; more (a whole record
holds hundreds) are counted, typed and digested — the log's hash (SHA-256 under the ``intl``
crypto profile, SM3 under ``gm``) of the sorted lines joined by "\\n", in the field that names
it: ``disclosed_sha256`` or ``disclosed_sm3`` (``audit.digests``). The list itself follows from
the ledger as of the record's position and decision, so ``/audit/disclosed?seq=`` can rebuild
it and check it against the digest, with the hash the record's field names, and a record stays
small on every read. The read API builds every audit record's disclosure here, from the
"Type/id" lines the record's page query returns beside the Bundle entries
(``projections.postgres.PatientRecordReader.bundle_entries``); an integration test holds
those lines to the resources the Bundle actually holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audit.digests import DISCLOSED, FOREIGN, field, hex_digest, recorded

LISTED = 20  # up to this many disclosed resources are listed; beyond, counted and digested


def digest(lines: Sequence[str], hash_name: str) -> str:
    """``hash_name``'s digest (hex) of the sorted "Type/id" lines joined by newlines
    (code-point order, the order PostgreSQL's ``COLLATE "C"`` gives UTF-8 text)."""
    return hex_digest("\n".join(sorted(lines)).encode(), hash_name)


def resource_types(lines: Sequence[str]) -> list[str]:
    """The resource types of the "Type/id" lines, sorted; a line without "/" names none."""
    return sorted({line.split("/")[0] for line in lines if "/" in line})


def summary(disclosed: Sequence[str], hash_name: str) -> dict[str, Any]:
    """The audit record's disclosure fields for the full list of what a response disclosed,
    digested (when it is more than ``LISTED``) with ``hash_name``, the audit log's hash."""
    many = len(disclosed) > LISTED
    return summary_of(
        len(disclosed),
        resource_types(disclosed),
        None if many else disclosed,
        digest(disclosed, hash_name) if many else None,
        hash_name,
    )


def summary_of(
    count: int,
    types: Sequence[str],
    lines: Sequence[str] | None,
    digested: str | None,
    hash_name: str,
) -> dict[str, Any]:
    """The same fields from a disclosure already counted, typed and (when it is more than
    ``LISTED``) digested with ``hash_name``."""
    if count <= LISTED:
        listed = list(lines or [])  # PostgreSQL lists no lines at all as NULL
        if len(listed) != count:
            raise ValueError(f"a disclosure of {count} resources lists them all")
        return {"disclosed": listed, "resource_types": list(types), "disclosed_count": count}
    if digested is None:
        raise ValueError(f"a disclosure of more than {LISTED} resources carries their digest")
    return {
        "disclosed": [],
        "disclosed_count": count,
        "resource_types": list(types),
        field(DISCLOSED, hash_name): digested,
    }


def agrees(record: Mapping[str, Any], rebuilt: Sequence[str], hash_name: str) -> bool:
    """Whether a rebuilt list of "Type/id" lines is what the audit record says was disclosed:
    its digest when it carries one (checked with the hash its field names; ``hash_name``, the
    log's, is looked for first), else the lines it lists."""
    found = recorded(record, DISCLOSED, hash_name)
    if found is not None:
        return found.matches("\n".join(sorted(rebuilt)).encode())
    return sorted(rebuilt) == sorted(record.get("disclosed") or [])


def check_rebuilt(
    record: Mapping[str, Any], rebuilt: Sequence[str], hash_name: str
) -> dict[str, Any]:
    """What ``/audit/disclosed`` says of a rebuilt list: whether it matches the record
    (``agrees``) and, when the record's digest names another hash than the log's
    (``hash_name``), that finding (code ``audit.digest_hash``)."""
    checked: dict[str, Any] = {"matches_record": agrees(record, rebuilt, hash_name)}
    found = recorded(record, DISCLOSED, hash_name)
    if found is not None and found.foreign:
        checked["finding"] = {"code": FOREIGN, "message": found.foreign_message("the record")}
    return checked
