"""Hypothesis: whatever the interleaving of submissions, repeats, amendments, retractions,
merges and unmerges (and of the projection's catching up), the projection equals a rebuild
from the ledger, and every accepted source record is in the ledger and the record once."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapters.envelope import build_envelope, new_private_key, public_key_b64
from domain.submission import validate_envelope
from exchange.bootstrap import Endpoints, Runtime, open_runtime
from exchange.ingest.ledger import IntegrityError, Pending
from exchange.settings import Settings
from projections.postgres import PatientRecordProjection
from tests.factories import observation_item, resident
from tests.integration.test_projection import snapshot

PATIENTS = 4
ops = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, PATIENTS - 1), st.integers(1, 3)),
        st.tuples(st.just("repeat"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("amend"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("retract"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("link"), st.integers(0, PATIENTS - 1), st.just(0)),
        st.tuples(st.just("merge"), st.integers(0, PATIENTS - 1), st.integers(0, PATIENTS - 1)),
        st.tuples(st.just("unmerge"), st.integers(0, PATIENTS - 1), st.integers(0, 2 * PATIENTS)),
        st.tuples(st.just("project"), st.integers(1, 7), st.just(0)),
        # A version of a record named apart from its source id (``record``), and a plain
        # entry whose source id is such a name: both continue a record sent earlier.
        st.tuples(st.just("name"), st.integers(0, PATIENTS - 1), st.integers(0, 2)),
        st.tuples(st.just("claim"), st.integers(0, PATIENTS - 1), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=25,
)


class Story:
    """One example: its own institution in the shared database, and what it sent."""

    counter = itertools.count()

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.code = f"p{next(self.counter)}"
        self.key = new_private_key(rt.settings.profile)
        self.sent: list[Pending] = []
        self.records: list[str] = []  # entry records sent, for amend / retract to aim at
        self.merges: list[tuple[int, int]] = []
        self.n = 0

    async def begin(self) -> PatientRecordProjection:
        """Register the story's institution; a projection of the shared database."""
        rt = self.rt
        await rt.sync(
            rt.ledger.register_institution,
            self.code,
            "测试卫生院",
            "township_health_centre",
            public_key_b64(self.key),
        )
        return PatientRecordProjection(
            rt.pool, lambda after, limit: rt.sync(rt.ledger.read, after, limit), fields=rt.fields
        )

    def ref(self, i: int) -> dict[str, str]:
        return {"mrn": f"{self.code}-M{i}"}

    def pending(self, items: list[dict[str, Any]]) -> Pending:
        env = build_envelope(
            institution=self.code, key=self.key, sent_at=datetime.now(UTC), items=items
        )
        valid, problems = validate_envelope(env)
        assert valid is not None, problems
        return Pending(valid, json.dumps(env, ensure_ascii=False), datetime.now(UTC))

    def sid(self) -> str:
        self.n += 1
        return f"s{self.n}"

    def obs(self, i: int, source_id: str | None = None, **extra: Any) -> dict[str, Any]:
        item = observation_item("x", source_id or self.sid(), str(self.n))
        item["payload"]["patient"] = self.ref(i)
        return {**item, **extra}

    async def send(self, items: list[dict[str, Any]]) -> bool:
        pending = self.pending(items)
        appended = await self.rt.sync(self.rt.ledger.append, [pending])
        if pending.key in appended.refused:
            return False
        self.sent.append(pending)
        return True

    async def step(self, op: str, a: int, b: int, projection: PatientRecordProjection) -> None:
        if op == "submit":
            items = [self.obs(a) for _ in range(b)]
            if await self.send(items):
                self.records += [i["source_id"] for i in items]
        elif op == "repeat" and self.sent:
            with pytest.raises(IntegrityError):  # the ledger itself refuses a resend
                await self.rt.sync(self.rt.ledger.append, [self.sent[a % len(self.sent)]])
        elif op == "amend" and self.records:
            await self.send([self.obs(a % PATIENTS, amends=self.records[a % len(self.records)])])
        elif op == "retract" and self.records:
            await self.send(
                [
                    {
                        "source_id": self.sid(),
                        "kind": "retract",
                        "payload": {
                            "patient": self.ref(0),
                            "record": self.records[a % len(self.records)],
                            "reason": "录入错误",
                        },
                    }
                ]
            )
        elif op == "link":  # a resident ID arrives for a (maybe temporary) registration
            item = self.obs(a)
            item["payload"]["patient"] = {**self.ref(a), "resident_id": resident(a)}
            await self.send([item])
        elif op in ("merge", "unmerge"):
            if op == "unmerge" and self.merges and b % 2:  # most often, undo an earlier merge
                a, b = self.merges[a % len(self.merges)]
            other = "merged" if op == "merge" else "unmerged"
            done = await self.send(
                [
                    {
                        "source_id": self.sid(),
                        "kind": op,
                        "payload": {"patient": self.ref(a), other: self.ref(b)},
                    }
                ]
            )
            if done and op == "merge":
                self.merges.append((a, b))
            event(f"{op} {'accepted' if done else 'refused'}")
        elif op == "name":
            if await self.send([self.obs(a, record=f"r{b}")]):
                self.records.append(f"r{b}")
        elif op == "claim":
            try:
                if await self.send([self.obs(a, source_id=f"r{b}")]):
                    self.records.append(f"r{b}")
            except IntegrityError:  # a source id already sent: the ledger holds it once
                assert (self.code, f"r{b}") in {
                    (self.code, i.source_id) for p in self.sent for i in p.valid.items
                }
        elif op == "project":
            projection.batch = a
            await projection.catch_up_once()


@pytest.fixture
async def runtime(settings: Settings) -> Any:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        yield rt


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(story=ops)
async def test_projection_equals_rebuild_and_holds_each_record_once(
    runtime: Runtime, story: list[tuple[str, int, int]]
) -> None:
    rt = runtime
    s = Story(rt)
    live = await s.begin()
    for op, a, b in story:
        await s.step(op, a, b, live)
    live.batch = 500
    while await live.catch_up_once():
        pass
    incremental = await snapshot(rt)

    # Rebuilt in one go from the ledger: the same, row for row.
    await live.rebuild()
    while await live.catch_up_once():
        pass
    assert await snapshot(rt) == incremental

    # Every accepted source record: once in the ledger's index, once as an entry version.
    accepted = [(s.code, i.source_id) for p in s.sent for i in p.valid.items]
    async with rt.pool.acquire() as conn:
        held = await conn.fetch(
            "SELECT source_id FROM ledger_source_records WHERE institution = $1", s.code
        )
        versions = await conn.fetch(
            "SELECT source_id FROM record_entries WHERE institution = $1", s.code
        )
        current = await conn.fetchval(
            "SELECT count(*) FROM record_entries WHERE institution = $1 AND valid_to IS NULL "
            "GROUP BY entry_id ORDER BY 1 DESC LIMIT 1",
            s.code,
        )
    assert sorted(r["source_id"] for r in held) == sorted(sid for _, sid in accepted)
    entry_sources = sorted(
        i.source_id for p in s.sent for i in p.valid.items if i.kind == "observation"
    )
    assert sorted(r["source_id"] for r in versions) == entry_sources
    assert current in (None, 1)  # never two current versions of one entry


async def test_an_entry_that_continues_a_record_ends_its_version_from_an_earlier_batch(
    runtime: Runtime,
) -> None:
    """Each way an entry can continue a record sent in an earlier batch of the projection:
    a version naming the record, a plain entry whose source id an earlier entry named, and
    a version naming a record first sent plainly. One current version each, every time."""
    s = Story(runtime)
    live = await s.begin()
    sends = [
        [s.obs(0, record="visit-1"), s.obs(1, source_id="plain-1")],
        [s.obs(0, record="visit-1"), s.obs(1, record="plain-1")],
        [s.obs(0, source_id="visit-1")],
    ]
    for items in sends:
        assert await s.send(items)
        while await live.catch_up_once():
            pass
    rows = await runtime.pool.fetch(
        "SELECT record, source_id, ended_by FROM record_entries WHERE institution = $1 "
        "ORDER BY record, valid_from",
        s.code,
    )
    assert [tuple(r) for r in rows] == [
        ("plain-1", "plain-1", "superseded"),
        ("plain-1", "s3", None),
        ("visit-1", "s1", "superseded"),
        ("visit-1", "s2", "superseded"),
        ("visit-1", "visit-1", None),
    ]
