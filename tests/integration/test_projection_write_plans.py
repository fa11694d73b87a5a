"""The projection's writes by key stay key lookups however stale the statistics.

A connection keeps a prepared statement's generic plan from the moment PostgreSQL chose it
(after five executions) until the table is next analyzed. Chosen while the table was a page
or two, that plan is a scan, and it reads the whole table on every later call. The
projection's per-patient UPDATE was found doing so: a cost that grew with the county. Here
the projection writes through one connection, so that the statement's cached plan is the one
its later batches use, and the table grows under it with autovacuum off (no ANALYZE comes to
replan it).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from adapters.envelope import build_envelope
from domain.submission import validate_envelope
from exchange.bootstrap import Endpoints, Runtime, open_runtime
from exchange.ingest.ledger import Pending
from exchange.settings import Settings
from projections.postgres import PatientRecordProjection
from tests.factories import patient_item, resident
from tests.integration.conftest import registered_sender


async def send_demographics(rt: Runtime, key: Any, residents: range, tag: str) -> None:
    """One submission carrying a Patient item (its demographics) for each resident."""
    items = [patient_item(resident(n), f"{tag}-{n}", mrn=f"M{n}") for n in residents]
    env = build_envelope(institution="thc-w", key=key, sent_at=datetime.now(UTC), items=items)
    valid, problems = validate_envelope(env)
    assert valid and not problems
    await rt.sync(rt.ledger.append, [Pending(valid, json.dumps(env), datetime.now(UTC))])


async def scans(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """The table's sequential and index scans so far, as the statistics have them."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    row = await conn.fetchrow(
        "SELECT seq_scan, coalesce(idx_scan, 0) AS idx_scan FROM pg_stat_user_tables "
        "WHERE relname = $1",
        table,
    )
    assert row is not None
    return int(row["seq_scan"]), int(row["idx_scan"])


async def test_a_patients_demographics_stay_a_key_lookup_as_the_patients_table_grows(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await registered_sender(rt, "thc-w")
        one = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        observer = await asyncpg.connect(settings.database_url)
        try:
            await observer.execute("ALTER TABLE patients SET (autovacuum_enabled = false)")

            async def read(after: int, limit: int) -> list[tuple[int, Any]]:
                return await rt.sync(rt.ledger.read, after, limit)

            projection = PatientRecordProjection(one, read, fields=rt.fields)

            async def projected(residents: range, tag: str) -> None:
                await send_demographics(rt, key, residents, tag)
                while await projection.catch_up_once():
                    pass

            await projected(range(10), "first")
            # Analyzed while it is a page (as autovacuum does a young table), then ten new
            # demographics: one statement run ten times on the one connection, long enough
            # for PostgreSQL to keep a generic plan made on those statistics.
            await observer.execute("VACUUM ANALYZE patients")
            await projected(range(10), "second")
            # The county grows under that plan: thousands of patients, never analyzed.
            await observer.execute(
                "INSERT INTO patients (patient_id, temporary, position) "
                "SELECT p, true, 0 FROM unnest($1::uuid[]) p",
                [uuid.uuid4() for _ in range(5000)],
            )
            before = await scans(observer, "patients")

            # Three of the residents send new demographics again.
            await projected(range(3), "third")
            await one.execute("SELECT pg_stat_force_next_flush()")  # its counts, reported now
            for _ in range(50):
                after = await scans(observer, "patients")
                if after[1] >= before[1] + 3:
                    break
                await asyncio.sleep(0.1)
            assert after[1] >= before[1] + 3, (before, after)  # the updates ran, by the key
            assert after[0] == before[0], (before, after)  # and none read the table whole
            stored = await observer.fetchval(
                "SELECT count(*) FROM patients WHERE demographics IS NOT NULL"
            )
            assert stored == 10
        finally:
            await observer.close()
            await one.close()
