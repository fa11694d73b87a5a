"""The read path's query plans do not grow with the county.

Every statement the reading routes run is captured from real traffic (read_plans_traffic.py:
the app as the exchange composes it, its pools logging what they run), on a database seeded
with a county's worth of rows (read_plans_seed.py), and EXPLAINed as the application prepares
it, under a generic plan (what the read pool forces) and a custom one, first as the tables
stand when the projection has just filled them (no statistics yet: autovacuum is kept off)
and again after ANALYZE. A plan that reads a
growing table whole, or a range of it not keyed by the patient, the person or the record
asked for, fails (read_plans_capture.full_reads), unless the query is county-wide by what it
answers (``COUNTY_WIDE``, each with why).

``REGISTRY`` names each read-path query by a fingerprint of its SQL (whitespace-normalized):
a query added to the read path without a line here fails the suite, as an undeclared route
does; so does a line whose query the traffic no longer runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from exchange.settings import Settings
from tests.integration.conftest import Running, running
from tests.integration.read_plans_capture import Captured, explain, logging_pools
from tests.integration.read_plans_seed import no_statistics, seed_county
from tests.integration.read_plans_traffic import drive, story

REGISTRY: dict[str, str] = {
    # The gate: every request's token check, and a patient route's facts (consent/postgres.py)
    "revocations.load": "21fac9e4d334",
    "gate.view": "847d95941ff2",
    "gate.facts": "f58eb471d491",
    "gate.position_at": "8832895c3031",
    # The record (projections/postgres.py)
    "records.find_patient": "166a133c4cd3",
    "records.root": "f8621ce20361",
    "records.root_at": "371581c840ac",
    "records.members": "cb6c1aee3628",
    "records.members_at": "1f7eea09febc",
    "records.bundle_entries": "78983917f3df",
    "records.bundle_entries_as_it_stood": "c40119064af8",
    "records.resident_id": "f61b1bbc62a5",
    "records.projection_position": "d27295e6e1fb",
    "records.institutions": "408b5918b481",  # the record page's names and levels
    "consents.of_patient": "db27675b9b5d",
    "break_glass.grant": "322ff0bdf9a2",
    "break_glass.lock": "17aa751285d6",  # one person's grants counted and granted in turn
    "break_glass.rate": "8e2fb473cb45",
    "transaction.begin": "09d5c7e48297",  # (the break-glass grant's)
    "transaction.commit": "2db35aa37c40",
    # Referrals (projections/referral_reader.py)
    "referrals.get": "1f64d1c108fe",
    "referrals.history": "ee108e45a204",
    "referrals.search_patient.count": "255f372ab600",
    "referrals.search_patient.page": "6a77db02d32d",
    "referrals.inbox.count": "a3c85f91fa92",
    "referrals.inbox.page": "ba14c5f0a11c",
    "referrals.outbox.count": "4a28ff802a09",
    "referrals.outbox.page": "39d9f8668913",
    "referrals.statistics.monthly": "43ee9a2c82c6",
    "referrals.statistics.accept": "4f8bcc80b57f",
    "referrals.statistics.rejections": "7fefdd4cf6c0",
    "referrals.statistics.follow_up": "be53054def47",
    "referrals.statistics.statuses": "580a671699df",
    # The consortium's data quality (projections/intake.py)
    "quality.institutions": "e2715937e45e",
    "quality.accepted": "11d2313ada58",
    "quality.kinds": "9329f46b4291",
    "quality.daily": "c20f9763e872",
    "quality.refused": "574045003361",
    "quality.codes": "7e66bb2f2ae6",
    "quality.refused_daily": "82c7a9c759cc",
    "quality.edge_clocks": "062ac54d9cd0",  # a row per institution (FIXED_TABLES)
    # The audit log (audit/postgres.py)
    "audit.load_state": "5d1390c48629",
    "audit.append": "e0687e357d16",
    "audit.last_head": "3f49f43722d0",
    "audit.record": "90343dad75c5",
    "audit.leaf": "74e99f6e9330",
    "audit.proof_leaves": "e57919714726",
    "audit.proof_nodes": "b803ee828ace",
    "audit.search_patient.count": "f4dac73b8ef0",
    "audit.search_patient.page": "d946bb481509",
    "audit.search_own.count": "09c36d29eb0b",
    "audit.search_own.page": "49ac2ac73633",
    "audit.records_of": "a4cf932ed06f",
    "audit.alerts": "aa4a724b7243",
    "audit.unreviewed_break_glass": "c0812441b419",
    # The patient's notices (exchange/api/notices.py over the audit search)
    "notices.count": "1a616ce0f1bc",
    "notices.page": "38bd7cae0d9d",
    # Research projects (consent/research.py)
    "research.get": "2781f78027ef",
    "research.register": "3a1536ca8879",
    "research.list": "9d5b60c5a29d",
    # Seals in force (exchange/api/seals.py over projections/postgres.py)
    "seals.active": "ea2e9e0656da",
    # The identity steward's queue (projections/merge_requests.py)
    "mpi.requests": "faf5610ed44b",
    "mpi.identities": "00f61abbcd8f",
    "mpi.identifiers": "f55ba82c1e59",
}
COUNTY_WIDE: dict[str, str] = {
    "records.institutions": "every registered institution: tens in a county, one row each",
    "referrals.statistics.monthly": "the county's figures: every referral of the window",
    "referrals.statistics.accept": "the county's figures: every referral of the window",
    "referrals.statistics.rejections": "the county's figures: every referral of the window",
    "referrals.statistics.follow_up": "the county's figures: every referral of the window",
    "referrals.statistics.statuses": "the county's figures: every referral of the window",
    # Regulator queues over the whole log, left as they are (see the report of this change):
    # they want partial indexes on audit_log, a versioned step of the audit schema.
    "audit.alerts": "newest records with an alert, scanning back through the log",
    "audit.unreviewed_break_glass": "every break-glass grant ever, less those reviewed",
    "research.list": "the register of research projects (a few a year), all of it",
    "seals.active": "every seal in force in the county (at most 500), by the partial index "
    "of those in force",
}
# Range reads whose every row is part of the answer: what can still matter in a time window.
WINDOWS: dict[str, str] = {
    "revocations.load": "revocations of the last token lifetime (13 h)",
    "quality.accepted": "the window's days of every institution (a row a day each)",
    "quality.kinds": "the window's days of every institution, by kind",
    "quality.daily": "the window's days of every institution",
    "quality.refused": "the window's refusals",
    "quality.codes": "the window's refusals",
    "quality.refused_daily": "the window's refusals",
}


@pytest.fixture
async def traffic(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Running, list[Captured]]]:
    monkeypatch.setattr(asyncpg, "create_pool", logging_pools(asyncpg.create_pool))
    async with running(settings) as ex:
        # Seeded and planned as the owner (it may write the audit tables and ANALYZE them);
        # the traffic runs as the application, as in service.
        owner = await asyncpg.create_pool(ex.rt.endpoints.database_url, min_size=1, max_size=2)
        try:
            await no_statistics(owner)
            await story(ex)
            await seed_county(owner, ex.rt.fields)
            seen = await drive(ex)
            ex.owner_pool = owner  # type: ignore[attr-defined]
            yield ex, seen
        finally:
            await owner.close()


def _listing(queries: dict[str, Captured]) -> str:
    return "\n".join(f"  {fp}: {c.text[:400]}" for fp, c in sorted(queries.items()))


async def test_every_read_path_query_is_registered_and_none_reads_the_county(
    traffic: tuple[Running, list[Captured]],
) -> None:
    ex, seen = traffic
    queries = {c.fingerprint: c for c in seen}
    names = {fp: name for name, fp in REGISTRY.items()}
    unregistered = {fp: c for fp, c in queries.items() if fp not in names}
    assert not unregistered, "read-path queries with no line in REGISTRY:\n" + _listing(
        unregistered
    )
    unseen = sorted(name for name, fp in REGISTRY.items() if fp not in queries)
    assert not unseen, f"REGISTRY lines no traffic ran (remove them): {unseen}"
    assert set(COUNTY_WIDE) | set(WINDOWS) <= set(REGISTRY)

    # Planned twice: as a table filled in one go stands until autovacuum analyzes it (sizes
    # known, no statistics), then with statistics.
    bad = []
    async with ex.owner_pool.acquire() as conn:  # type: ignore[attr-defined]
        unanalyzed = (
            "SELECT count(*) FROM pg_stats WHERE tablename IN ('patients', 'record_entries')"
        )
        assert await conn.fetchval(unanalyzed) == 0
        for statistics in ("no statistics", "analyzed"):
            if statistics == "analyzed":
                await conn.execute("ANALYZE")
            for fp, captured in sorted(queries.items()):
                plans = await explain(conn, captured)
                if plans is None or names[fp] in COUNTY_WIDE:
                    continue
                for plan in plans:
                    violations = plan.violations
                    if names[fp] in WINDOWS:  # a range, but every scan still by an index
                        violations = [v for v in violations if v.startswith("Seq")]
                    bad += [f"{names[fp]} ({plan.mode}, {statistics}): {v}" for v in violations]
    assert not bad, "plans that read a growing table whole:\n" + "\n".join(bad)
