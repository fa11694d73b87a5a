"""What each institution sent, day by day: the figures of the regulator's data-quality view,
what a consortium's information centre checks every morning — submissions and items accepted
(by kind), submissions refused and why, and how long since each institution last sent.

The accepted side is a read model like the others: the runner counts each batch of ledger
events into ``intake_days`` and ``intake_kinds`` (``Intake``, written with the batch, so a
rebuild makes them again), keyed by the county's day (Asia/Shanghai) first, so that a window of
days reads only its own rows however many years the exchange has run. The refused side is the
ledger's own record of final refusals (``ledger_rejected_submissions``: institution, submission
id, when, problem codes; no clinical data), which the gateway keeps in the commit that refuses
(exchange/ingest/recorder.py) and indexes by institution and time for these reads. Beside them,
each institution's edge clock as the gateways last measured it (``ledger_edge_clocks``, a row
per institution that sends through a village clinic's edge node): in step, or ahead of the
exchange's clock by more than 5 minutes since when, and whether it was flagged in the window.

Only authenticated senders are counted against an institution: a submission whose signature
fails, or that names an institution the ledger does not know, is not its doing (the gateway's
``/metrics`` count those apart, as "unauthenticated").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

COUNTY_ZONE = ZoneInfo("Asia/Shanghai")
# The ledger's table of final refusals (exchange/ingest/recorder.py names it).
REJECTED = "ledger_rejected_submissions"
# The gateways' latest measurement of each institution's edge clock (the same file names it).
EDGE_CLOCKS = "ledger_edge_clocks"

SCHEMA = """
CREATE TABLE IF NOT EXISTS intake_days (
    day date NOT NULL, institution text NOT NULL, submissions bigint NOT NULL,
    items bigint NOT NULL, last_at timestamptz NOT NULL, PRIMARY KEY (day, institution));
CREATE TABLE IF NOT EXISTS intake_kinds (
    day date NOT NULL, institution text NOT NULL, kind text NOT NULL, items bigint NOT NULL,
    PRIMARY KEY (day, institution, kind));
ALTER TABLE institutions ADD COLUMN IF NOT EXISTS last_submission_at timestamptz;
"""
TABLES = ("intake_days", "intake_kinds")

_ADD_DAYS = (
    "INSERT INTO intake_days AS d (day, institution, submissions, items, last_at) "
    "SELECT * FROM unnest($1::date[], $2::text[], $3::bigint[], $4::bigint[], "
    "$5::timestamptz[]) ON CONFLICT (day, institution) DO UPDATE SET "
    "submissions = d.submissions + excluded.submissions, items = d.items + excluded.items, "
    "last_at = greatest(d.last_at, excluded.last_at)"
)
_ADD_KINDS = (
    "INSERT INTO intake_kinds AS k (day, institution, kind, items) "
    "SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[]) "
    "ON CONFLICT (day, institution, kind) DO UPDATE SET items = k.items + excluded.items"
)
_LAST = (
    "UPDATE institutions i SET last_submission_at = greatest(i.last_submission_at, v.at) "
    "FROM unnest($1::text[], $2::timestamptz[]) AS v(code, at) WHERE i.code = v.code"
)


def county_day(at: datetime) -> date:
    return at.astimezone(COUNTY_ZONE).date()


@dataclass
class Intake:
    """One batch's accepted submissions, counted (it travels from a replay's worker process
    with the batch's other changes, so it holds plain values)."""

    submissions: Counter[tuple[date, str]] = field(default_factory=Counter)
    items: Counter[tuple[date, str, str]] = field(default_factory=Counter)
    last: dict[tuple[date, str], datetime] = field(default_factory=dict)

    def accepted(self, institution: str, at: datetime, kinds: list[str]) -> None:
        day = county_day(at)
        self.submissions[(day, institution)] += 1
        for kind in kinds:
            self.items[(day, institution, kind)] += 1
        key = (day, institution)
        if key not in self.last or at > self.last[key]:
            self.last[key] = at

    def __bool__(self) -> bool:
        return bool(self.submissions)

    async def flush(self, conn: asyncpg.Connection) -> None:
        if not self.submissions:
            return
        days = sorted(self.submissions)  # one order for every writer: no deadlock between them
        per_day: Counter[tuple[date, str]] = Counter()
        for (day, inst, _), n in self.items.items():
            per_day[(day, inst)] += n
        await conn.execute(
            _ADD_DAYS,
            [d for d, _ in days],
            [i for _, i in days],
            [self.submissions[k] for k in days],
            [per_day[k] for k in days],
            [self.last[k] for k in days],
        )
        kinds = sorted(self.items)
        await conn.execute(
            _ADD_KINDS,
            [k[0] for k in kinds],
            [k[1] for k in kinds],
            [k[2] for k in kinds],
            [self.items[k] for k in kinds],
        )
        latest: dict[str, datetime] = {}
        for (_, inst), at in self.last.items():
            latest[inst] = max(at, latest.get(inst, at))
        codes = sorted(latest)
        await conn.execute(_LAST, codes, [latest[c] for c in codes])


# Reading ---------------------------------------------------------------------------------------
# Every window is bounded on both sides: a prepared statement's generic plan, which the read
# pool forces, guesses a third of the table for one bound and a sliver for two, and so keeps
# to the index that a window of days reads.

_INSTITUTIONS = (
    "SELECT i.code, i.name, i.level, i.last_submission_at, "
    f"(SELECT max(r.rejected_at) FROM {REJECTED} r WHERE r.institution = i.code) "
    "AS last_rejected_at FROM institutions i ORDER BY i.code"
)
_ACCEPTED = (
    "SELECT institution, sum(submissions)::bigint AS submissions, sum(items)::bigint AS items "
    "FROM intake_days WHERE day BETWEEN $1 AND $2 GROUP BY institution"
)
_KINDS = (
    "SELECT institution, kind, sum(items)::bigint AS items FROM intake_kinds "
    "WHERE day BETWEEN $1 AND $2 GROUP BY institution, kind"
)
_DAILY = (
    "SELECT day, sum(submissions)::bigint AS submissions FROM intake_days "
    "WHERE day BETWEEN $1 AND $2 GROUP BY day"
)
_REFUSED = (
    f"SELECT institution, count(*) AS submissions FROM {REJECTED} "
    "WHERE institution = ANY($3) AND rejected_at >= $1 AND rejected_at < $2 GROUP BY institution"
)
_CODES = (
    f"SELECT r.institution, c.code, count(*) AS submissions FROM {REJECTED} r, "
    "unnest(r.codes) AS c(code) WHERE r.institution = ANY($3) AND r.rejected_at >= $1 "
    "AND r.rejected_at < $2 "
    "GROUP BY r.institution, c.code"
)
_EDGE_CLOCKS = (
    "SELECT institution, stamp, received_at, ahead_s, flagged_since, last_flagged_at "
    f"FROM {EDGE_CLOCKS} WHERE institution = ANY($1)"
)
_REFUSED_DAILY = (
    f"SELECT (rejected_at AT TIME ZONE '{COUNTY_ZONE.key}')::date AS day, count(*) AS submissions "
    f"FROM {REJECTED} WHERE institution = ANY($3) AND rejected_at >= $1 AND rejected_at < $2 "
    "GROUP BY 1"
)


def window_start(today: date, days: int) -> tuple[date, datetime]:
    """The first day of a window of ``days`` ending today (the county's days), and the instant
    it begins."""
    first = today - timedelta(days=days - 1)
    return first, datetime.combine(first, datetime.min.time(), COUNTY_ZONE)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _edge_clock(row: asyncpg.Record | None, since: datetime) -> dict[str, Any] | None:
    """An institution's edge clock at the gateways' last measurement (None: it never sent
    through an edge node): when the edge took its latest submission (``edge_received_at``,
    the clinic's clock) and the exchange received it (``measured_at``); ``clock_skew_s`` how
    far the first was ahead, when flagged (null: in step), since when; whether it was flagged
    at any time in the window."""
    if row is None:
        return None
    flagged = row["flagged_since"] is not None
    last = row["last_flagged_at"]
    return {
        "edge_received_at": _iso(row["stamp"]),
        "measured_at": _iso(row["received_at"]),
        "clock_skew_s": row["ahead_s"] if flagged else None,
        "flagged_since": _iso(row["flagged_since"]),
        "last_flagged_at": _iso(last),
        "flagged_in_window": last is not None and last >= since,
    }


class IntakeReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def quality(self, days: int, now: datetime) -> dict[str, Any]:
        """Every institution's figures over the last ``days`` days (today included), and the
        county's day by day. Counts and codes: no patient, no submission id."""
        today = county_day(now)
        first, since = window_start(today, days)
        until = window_start(today + timedelta(days=1), 1)[1]  # the next midnight
        async with self.pool.acquire() as conn:
            institutions = await conn.fetch(_INSTITUTIONS)
            # Refusals are read institution by institution, by the (institution, time) index.
            senders = [i["code"] for i in institutions]
            accepted = {r["institution"]: r for r in await conn.fetch(_ACCEPTED, first, today)}
            kinds = await conn.fetch(_KINDS, first, today)
            refused = {
                r["institution"]: r["submissions"]
                for r in await conn.fetch(_REFUSED, since, until, senders)
            }
            codes = await conn.fetch(_CODES, since, until, senders)
            daily = {r["day"]: r["submissions"] for r in await conn.fetch(_DAILY, first, today)}
            refused_daily = {
                r["day"]: r["submissions"]
                for r in await conn.fetch(_REFUSED_DAILY, since, until, senders)
            }
            clocks = {r["institution"]: r for r in await conn.fetch(_EDGE_CLOCKS, senders)}
        by_kind: dict[str, dict[str, int]] = {}
        for r in kinds:
            by_kind.setdefault(r["institution"], {})[r["kind"]] = r["items"]
        by_code: dict[str, list[tuple[str, int]]] = {}
        for r in codes:
            by_code.setdefault(r["institution"], []).append((r["code"], r["submissions"]))
        rows = []
        for i in institutions:
            code = i["code"]
            took = accepted.get(code)
            last = [t for t in (i["last_submission_at"], i["last_rejected_at"]) if t is not None]
            rows.append(
                {
                    "institution": code,
                    "name": i["name"],
                    "level": i["level"],
                    "accepted": took["submissions"] if took else 0,
                    "items": took["items"] if took else 0,
                    "rejected": refused.get(code, 0),
                    "items_by_kind": dict(sorted(by_kind.get(code, {}).items())),
                    "rejection_codes": [
                        {"code": c, "submissions": n}
                        for c, n in sorted(by_code.get(code, []), key=lambda cn: (-cn[1], cn[0]))
                    ],
                    "last_accepted_at": _iso(i["last_submission_at"]),
                    "last_rejected_at": _iso(i["last_rejected_at"]),
                    "last_submission_at": _iso(max(last)) if last else None,
                    "edge_clock": _edge_clock(clocks.get(code), since),
                }
            )
        span = [first + timedelta(days=n) for n in range(days)]
        return {
            "days": days,
            "from": first.isoformat(),
            "institutions": rows,
            "daily": [
                {
                    "day": d.isoformat(),
                    "accepted": daily.get(d, 0),
                    "rejected": refused_daily.get(d, 0),
                }
                for d in span
            ],
        }
