"""The ledger's identity repository (exchange.ingest.mpi) under the index rules: a batch asks
the store what it needs in two queries, not one per item, and a void plan is forgotten."""

from __future__ import annotations

from uuid import UUID

from domain.identity import PatientIdentity
from domain.referral import ReferralPolicy
from domain.services.identity import Key, PatientIndex, keys_of
from domain.services.referrals import ReferralPlanner
from domain.services.submissions import HeldFacts, SubmissionChecks
from exchange.ingest.mpi import LedgerIdentities
from tests.factories import observation_item, resident
from tests.unit.services.fakes import KEY, FakeLedger, pending


class CountingStore:
    """The three reads LedgerIdentities makes of the ledger, counted."""

    def __init__(self, ledger: FakeLedger) -> None:
        self.ledger = ledger
        self.calls: list[str] = []

    def load(self, pid: UUID) -> PatientIdentity | None:
        self.calls.append("load")
        return self.ledger.get(pid)

    def lookup(self, keys: list[Key]) -> dict[Key, UUID]:
        self.calls.append("lookup")
        return {k: self.ledger.index[k] for k in keys if k in self.ledger.index}

    def load_many(self, ids: list[UUID]) -> dict[UUID, PatientIdentity]:
        self.calls.append("load_many")
        return {pid: ident for pid in ids if (ident := self.ledger.get(pid)) is not None}


def wired(store: CountingStore) -> tuple[LedgerIdentities, SubmissionChecks]:
    identities = LedgerIdentities(
        KEY, store.load, store.lookup, store.load_many, store.ledger.merge_request
    )
    index = PatientIndex(identities, KEY)
    return identities, SubmissionChecks(
        index, ReferralPlanner(store.ledger, index, ReferralPolicy()), store.ledger
    )


def batch_of(n: int, first: int = 0) -> list:  # type: ignore[type-arg]
    items = []
    for i in range(first, first + n):
        item = observation_item(resident(i), f"o{i}")
        item["payload"]["patient"]["mrn"] = f"M-{i}"
        items.append(pending("thc-1", item, submission_id=f"s-{i}"))
    return items


def test_a_batch_of_new_residents_costs_two_queries_and_no_loads() -> None:
    store = CountingStore(FakeLedger())
    identities, checks = wired(store)
    batch = batch_of(50)
    # Get: one query for the index rows, one for which residents exist.
    identities.prefetch(keys_of([p.valid for p in batch]))
    # Check: everything it needs is known by then.
    plan = checks.check(batch, HeldFacts())
    assert store.calls == ["lookup", "load_many"]
    assert len(plan.submissions) == 50 and len(plan.identifier_rows) == 50


def test_after_a_save_the_next_batch_of_the_same_patients_asks_nothing() -> None:
    store = CountingStore(FakeLedger())
    identities, checks = wired(store)
    batch = batch_of(20)
    identities.prefetch(keys_of([p.valid for p in batch]))
    plan = checks.check(batch, HeldFacts())
    store.ledger.save(plan)
    identities.committed(plan.changes)
    store.calls.clear()
    # The same residents again (a second visit): served from what the save left cached.
    again = [
        pending("thc-1", observation_item(resident(i), f"o{i}-2"), submission_id=f"t-{i}")
        for i in range(20)
    ]
    identities.prefetch(keys_of([p.valid for p in again]))
    checks.check(again, HeldFacts())
    assert store.calls == []


def test_a_batch_of_known_patients_another_writer_stored_costs_two_queries_and_no_loads() -> None:
    store = CountingStore(FakeLedger())
    _, first_checks = wired(store)
    batch = batch_of(30)
    first_plan = first_checks.check(batch, HeldFacts())
    store.ledger.save(first_plan)
    # Another gateway (its own cache, empty) takes the next visits of the same residents,
    # some named by resident ID, some by the MRN the first visit linked.
    identities, checks = wired(store)
    again = [
        pending("thc-1", observation_item(resident(i), f"o{i}-2"), submission_id=f"t-{i}")
        for i in range(15)
    ]
    for i in range(15, 30):
        item = observation_item(resident(i), f"o{i}-2")
        item["payload"]["patient"] = {"mrn": f"M-{i}"}
        again.append(pending("thc-1", item, submission_id=f"t-{i}"))
    store.calls.clear()
    identities.prefetch(keys_of([p.valid for p in again]))
    plan = checks.check(again, HeldFacts())
    assert store.calls == ["lookup", "load_many"]
    assert plan.identifier_rows == [] and len(plan.submissions) == 30
    assert [s.patient_ids for s in plan.submissions] == [
        s.patient_ids for s in first_plan.submissions
    ]


def test_forget_drops_what_a_void_plan_touched() -> None:
    store = CountingStore(FakeLedger())
    identities, checks = wired(store)
    batch = batch_of(3)
    plan = checks.check(batch, HeldFacts())
    store.ledger.save(plan)
    identities.committed(plan.changes)
    identities.forget()
    store.calls.clear()
    # Nothing is cached any more: the identity is loaded from the store again.
    pid = UUID(plan.submissions[0].patient_ids[0])
    assert identities.get(pid) is not None and store.calls == ["load"]
