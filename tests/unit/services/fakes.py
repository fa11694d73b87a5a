"""In-memory fakes of what the domain services read from the ledger, and a small builder of
checked submissions, shared by the service tests (like cosmicpython's FakeRepository).

``FakeLedger`` keeps copies of saved aggregates, as a store would: what a refused check did
to the identities it touched never reaches it.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.identity import PatientIdentity
from domain.institution import Institution
from domain.merge_request import MergeRequest
from domain.referral import Referral, ReferralPolicy
from domain.services.identity import Changes, Key, PatientIndex
from domain.services.referrals import ReferralPlanner
from domain.services.submissions import HeldFacts, Pending, Plan, SubmissionChecks
from domain.submission import validate_envelope

KEY = b"unit-test-pseudonym-key-32-bytes"
RECEIVED = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
LEVELS = {
    "ch-1": "county_hospital",
    "thc-1": "township_health_centre",
    "thc-2": "township_health_centre",
    "vc-1": "village_clinic",
    "mpi-steward": "mpi_steward",
}


class FakeLedger:
    """Identities, the regional index, referrals and institutions, in dictionaries."""

    def __init__(self, institutions: dict[str, str] | None = None) -> None:
        self.identities: dict[UUID, PatientIdentity] = {}
        self.index: dict[Key, UUID] = {}
        self.referrals: dict[UUID, Referral] = {}
        self.requests: dict[UUID, MergeRequest] = {}
        self.institutions = {
            code: Institution(code=code, name=f"机构 {code}", level=level, public_key="k")
            for code, level in (institutions or LEVELS).items()
        }
        self.loads = 0  # identities read from the store
        self.lookups = 0  # index rows read from the store

    # domain.services.identity.IdentityRepository
    def get(self, pid: UUID) -> PatientIdentity | None:
        self.loads += 1
        return copy.deepcopy(self.identities.get(pid))

    def holder(self, key: Key) -> UUID | None:
        self.lookups += 1
        return self.index.get(key)

    def merge_request(self, rid: UUID) -> MergeRequest | None:
        return copy.deepcopy(self.requests.get(rid))

    # domain.services.referrals.ReferralLookup, submissions.Institutions
    def referral(self, rid: UUID) -> Referral | None:
        return copy.deepcopy(self.referrals.get(rid))

    def institution(self, code: str) -> Institution | None:
        return self.institutions.get(code)

    def save(self, plan: Plan) -> None:
        """What the ledger's save does with a plan, minus the submissions."""
        for agg in plan.aggregates:
            agg.collect_events()
        self.identities.update(copy.deepcopy(plan.changes.touched))
        self.index.update(plan.changes.new_keys)
        self.referrals.update(copy.deepcopy(plan.referrals))
        self.requests.update(copy.deepcopy(plan.changes.requests))


def services(ledger: FakeLedger) -> SubmissionChecks:
    """The services wired as the ledger wires them, over the fake."""
    index = PatientIndex(ledger, KEY)
    return SubmissionChecks(index, ReferralPlanner(ledger, index, ReferralPolicy()), ledger)


def pending(institution: str, *items: dict[str, Any], submission_id: str = "s-1") -> Pending:
    """A checked submission of these items, as the gateway hands it to the ledger."""
    doc = {
        "submission_id": submission_id,
        "institution": institution,
        "sent_at": RECEIVED.isoformat(),
        "events": list(items),
        "signature": "unsigned",
    }
    valid, problems = validate_envelope(doc)
    assert valid is not None, problems
    return Pending(valid, json.dumps(doc, ensure_ascii=False), RECEIVED)


def ref(rid: str | None = None, mrn: str | None = None, card: str | None = None) -> dict[str, str]:
    return {k: v for k, v in (("resident_id", rid), ("mrn", mrn), ("health_card", card)) if v}


def patient(source_id: str, **who: str | None) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "patient",
        "payload": {"patient": ref(**who), "name": "王测试", "gender": "female"},
    }


def merge(source_id: str, survivor: dict[str, str], merged: dict[str, str]) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "merge",
        "payload": {"patient": survivor, "merged": merged},
    }


def decision(
    source_id: str, request: str, survivor: dict[str, str], decided: str = "approve"
) -> dict[str, Any]:
    """The identity steward's desk decides the merge request ``request``."""
    return {
        "source_id": source_id,
        "kind": "merge",
        "payload": {
            "patient": survivor,
            "request": request,
            "decision": decided,
            "steward": "steward-zhao",
            "reason": "核对身份证原件与两家机构的登记信息",
        },
    }


def unmerge(source_id: str, survivor: dict[str, str], away: dict[str, str]) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "unmerge",
        "payload": {"patient": survivor, "unmerged": away},
    }


def check_and_save(ledger: FakeLedger, *batch: Pending, held: HeldFacts | None = None) -> Plan:
    """Check a batch with fresh services over the fake, then save its plan there."""
    plan = services(ledger).check(batch, held or HeldFacts())
    ledger.save(plan)
    return plan


def root_of(ledger: FakeLedger, pid: str | UUID) -> UUID:
    """The identity ``pid`` is merged into now, as the store holds it."""
    index = PatientIndex(ledger, KEY)
    ident = index.identity(UUID(str(pid)), Changes())
    assert ident is not None
    return index.root(ident, Changes()).id
