"""Deciding a past request again, from the ledger as it stood when it was decided.

A read's audit record keeps who asked (person, role, institution), about whom, for what
purpose, at which instant and as of which ledger position. Taking the facts as of that
position again and applying the same policy must give the recorded decision; a regulator can
ask for this on any record (``/audit/redecide?seq=``), and the property tests do it for every
read they make.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from consent.decision import (
    AccessPolicy,
    AccessRequest,
    Decision,
    Facts,
    decide,
    is_own_record,
)
from consent.postgres import ConsentState
from projections.postgres import PatientRecordReader


async def facts_for(
    consent: ConsentState,
    person: str,
    role: str,
    institution: str,
    root: UUID,
    members: Sequence[UUID],
    purpose: str,
    at: datetime,
    position: int | None = None,
) -> tuple[AccessRequest, Facts]:
    """The request and its facts (as of ``position``; None: the projection's now)."""
    taken, facts = await consent.facts(
        members, root, institution=institution, person=person, at=at, position=position
    )
    own = is_own_record(role, person, members)
    return AccessRequest(person, role, institution, root, purpose, at, taken, own), facts


async def redecide(
    record: dict[str, Any],
    consent: ConsentState,
    records: PatientRecordReader,
    policy: AccessPolicy,
) -> Decision | None:
    """The decision the audit record's request gets again; None if it is not a read."""
    if (
        record.get("action") != "read"
        or "as_of_position" not in record
        or not record.get("patient_id")
        or not record.get("decided_at")
    ):
        return None
    root = UUID(record["patient_id"])
    position = int(record["as_of_position"])
    members = await records.members(root, position)
    request, facts = await facts_for(
        consent,
        record["person"],
        record["role"],
        record["institution"],
        root,
        members,
        record["purpose"],
        datetime.fromisoformat(record["decided_at"]),
        position,
    )
    if project := record.get("research_project"):  # a research read: its project again
        facts = replace(facts, research=await consent.research.get(str(project)))
    return decide(request, facts, policy)


def summary(decision: Decision) -> dict[str, Any]:
    """What must match between a recorded decision and a re-decided one."""
    return {
        "decision": "permit" if decision.permit else "deny",
        "reasons": [r.code for r in decision.reasons],
        "legal_basis": decision.legal_basis,
        "permitted": list(decision.categories) if decision.permit else [],
    }


def recorded_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "decision": record.get("decision"),
        "reasons": [r["code"] for r in record.get("reasons", [])],
        "legal_basis": record.get("legal_basis"),
        "permitted": record.get("permitted", []),
    }


async def rebuild_disclosed(record: dict[str, Any], records: PatientRecordReader) -> list[str]:
    """The "Type/id" of every resource a permitted read disclosed (sorted), from the ledger
    as of the record's position, under the categories (and results window) its decision let
    through."""
    root = UUID(record["patient_id"])
    position = int(record.get("record_at_position") or record["as_of_position"])
    members = await records.members(root, position)
    since = record.get("results_since")
    permitted = record.get("permitted") or []
    page = await records.bundle_entries(
        root,
        members,
        position,
        categories=permitted,
        results_since=datetime.fromisoformat(since) if since else None,
        first=f"Patient/{root}" if "demographics" in permitted else None,
    )
    return page.lines
