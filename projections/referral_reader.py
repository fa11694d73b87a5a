"""Read-side queries over the referral views: search, inbox and outbox, history, deadlines due,
care relationships, notifications to send, and the county's statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from domain.referral import OPEN_STATES

_COLUMNS = (
    "referral_id, reference, patient_id, direction, from_institution, to_institution, urgency, "
    "status, content, requested_at, decided_at, accepted_at, arrived_at, completed_at, "
    "back_referred_at, followed_up_at, closed_at, rejection_reason, back_referral, deadline, "
    "follow_up_due, overdue, care_from, care_until, updated"
)


class ReferralReader:
    def __init__(self, pool: asyncpg.Pool, *, timezone: str = "Asia/Shanghai") -> None:
        self.pool = pool
        self.timezone = timezone  # months of the statistics are the county's months

    async def get(self, rid: UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM referrals WHERE referral_id = $1", rid
        )

    async def history(self, rid: UUID) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT referral_id, version, action, status, institution, at, reported_at, details, "
            "position FROM referral_events WHERE referral_id = $1 ORDER BY version",
            rid,
        )
        return rows

    async def search(
        self,
        *,
        party: str,
        patients: Sequence[UUID] | None = None,
        institution: str | None = None,
        statuses: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        box: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[asyncpg.Record]]:
        """(how many match, one page of them): referrals ``party`` takes part in (as sender
        or receiver), newest first.

        ``box``: "inbox" (addressed to ``party``) or "outbox" (sent by it); ``institution``
        the other side (or either side); ``since``/``until`` bound the request time.
        """
        where = ["(from_institution = $1 OR to_institution = $1)"]
        args: list[Any] = [party]

        def add(sql: str, value: Any) -> None:
            args.append(value)
            where.append(sql.replace("?", f"${len(args)}"))

        if box == "inbox":
            where.append("to_institution = $1")
        elif box == "outbox":
            where.append("from_institution = $1")
        if patients is not None:
            add("patient_id = ANY(?)", list(patients))
        if institution is not None:
            add("(from_institution = ? OR to_institution = ?)", institution)
        if statuses is not None:
            add("status = ANY(?)", list(statuses))
        if since is not None:
            add("requested_at >= ?", since)
        if until is not None:
            add("requested_at < ?", until)
        condition = " AND ".join(where)
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(f"SELECT count(*) FROM referrals WHERE {condition}", *args)
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM referrals WHERE {condition} "
                f"ORDER BY requested_at DESC, referral_id LIMIT ${len(args) + 1} "
                f"OFFSET ${len(args) + 2}",
                *args,
                limit,
                offset,
            )
        return int(total), rows

    async def due(self, now: datetime, limit: int = 200) -> list[UUID]:
        """Referrals whose deadline has passed: open ones to expire, follow-ups to flag."""
        rows = await self.pool.fetch(
            "(SELECT referral_id FROM referrals WHERE deadline <= $1 AND status = ANY($2) "
            "ORDER BY deadline LIMIT $3) UNION ALL (SELECT referral_id FROM referrals "
            "WHERE status = 'back_referred' AND NOT overdue AND follow_up_due <= $1 "
            "ORDER BY follow_up_due LIMIT $3)",
            now,
            list(OPEN_STATES),
            limit,
        )
        return [r["referral_id"] for r in rows]

    async def next_deadline(self) -> datetime | None:
        found = await self.pool.fetchval(
            "SELECT min(d) FROM (SELECT min(deadline) d FROM referrals WHERE status = ANY($1) "
            "UNION ALL SELECT min(follow_up_due) FROM referrals WHERE status = 'back_referred' "
            "AND NOT overdue) x",
            list(OPEN_STATES),
        )
        return found if isinstance(found, datetime) else None

    async def events_after(self, position: int, limit: int = 200) -> list[asyncpg.Record]:
        """Referral steps after a ledger position, in ledger order, with their referral."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT e.position, e.version, e.action, e.status, e.institution AS actor, e.at, "
            "r.referral_id, r.reference, r.patient_id, r.direction, r.from_institution, "
            "r.to_institution, r.urgency, e.deadline, e.follow_up_due, e.overdue "
            "FROM referral_events e JOIN referrals r USING (referral_id) "
            "WHERE e.position > $1 ORDER BY e.position LIMIT $2",
            position,
            limit,
        )
        return rows

    async def statistics(
        self, since: datetime | None, until: datetime | None, now: datetime
    ) -> dict[str, Any]:
        """The county's figures for referrals requested in [since, until)."""
        window = (
            "WHERE ($1::timestamptz IS NULL OR requested_at >= $1) "
            "AND ($2::timestamptz IS NULL OR requested_at < $2)"
        )
        async with self.pool.acquire() as conn:
            monthly = await conn.fetch(
                f"SELECT to_char(requested_at AT TIME ZONE $3, 'YYYY-MM') AS month, direction, "
                f"from_institution, to_institution, count(*) AS n, "
                f"count(*) FILTER (WHERE accepted_at IS NOT NULL) AS accepted, "
                f"count(*) FILTER (WHERE status = 'rejected') AS rejected "
                f"FROM referrals {window} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
                since,
                until,
                self.timezone,
            )
            accept = await conn.fetch(
                f"SELECT to_institution, count(*) AS n, "
                f"percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
                f"accepted_at - requested_at)) / 3600 AS median_hours, "
                f"percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM "
                f"accepted_at - requested_at)) / 3600 AS p90_hours "
                f"FROM referrals {window} AND accepted_at IS NOT NULL "
                f"GROUP BY ROLLUP (to_institution) ORDER BY to_institution NULLS FIRST",
                since,
                until,
            )
            rejections = await conn.fetch(
                f"SELECT rejection_code AS reason_code, count(*) AS n FROM referrals {window} "
                f"AND status = 'rejected' GROUP BY 1 ORDER BY 2 DESC, 1",
                since,
                until,
            )
            # Rates count the follow-ups that are due (or done): one not yet due is no failure.
            follow = await conn.fetchrow(
                f"SELECT count(*) AS back_referred, "
                f"count(*) FILTER (WHERE followed_up_at IS NOT NULL OR follow_up_due <= $3) "
                f"AS due, "
                f"count(*) FILTER (WHERE followed_up_at IS NOT NULL) AS followed_up, "
                f"count(*) FILTER (WHERE followed_up_at <= follow_up_due) AS on_time, "
                f"count(*) FILTER (WHERE followed_up_at IS NULL AND follow_up_due <= $3) "
                f"AS overdue_open FROM referrals {window} AND back_referred_at IS NOT NULL",
                since,
                until,
                now,
            )
            statuses = await conn.fetch(
                f"SELECT status, count(*) AS n FROM referrals {window} GROUP BY 1 ORDER BY 1",
                since,
                until,
            )
        due = follow["due"] if follow else 0
        return {
            "by_month": [dict(r) for r in monthly],
            "by_status": {r["status"]: r["n"] for r in statuses},
            "time_to_accept_hours": [
                {
                    "to_institution": r["to_institution"] or "*",
                    "accepted": r["n"],
                    "median": _round(r["median_hours"]),
                    "p90": _round(r["p90_hours"]),
                }
                for r in accept
            ],
            "rejection_reasons": [dict(r) for r in rejections],
            "follow_up": {
                "back_referred": follow["back_referred"] if follow else 0,
                "due": due,
                "followed_up": follow["followed_up"] if follow else 0,
                "on_time": follow["on_time"] if follow else 0,
                "overdue_open": follow["overdue_open"] if follow else 0,
                "completion_rate": round(follow["followed_up"] / due, 4) if due else None,
                "on_time_rate": round(follow["on_time"] / due, 4) if due else None,
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)
