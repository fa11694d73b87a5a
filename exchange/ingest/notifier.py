"""Notifications on ``hie.<c>.notify.<i>``: each referral step, to the institutions it concerns,
and each step of a merge request, to the institution that asked for the merge.

The notifier follows the referral history (``referral_events``, in ledger order) from its own
tracked position and publishes to the JetStream stream NOTIFY, whose per-institution durable
consumers keep what an institution missed while it was offline, in order. Each message's
``Nats-Msg-Id`` is (ledger position, institution): a notifier that crashed between publishing
and moving its position publishes the same ids again, and the stream drops the repeats.

A notification says what happened and where the referral stands, and names the patient only
by the regional id; the referral's clinical content is read over HTTP, through the consent
gate and the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from domain.referral import EXCHANGE, RECEIVER, SENDER
from exchange.servers.nats import ensure_notify_consumer, notify_subject
from projections.merge_requests import steps_after
from projections.referral_reader import ReferralReader
from projections.runner import first_set

log = logging.getLogger(__name__)
NAME = "referral_notifier"


def recipients(row: Any) -> list[str]:
    """Who is told of a step: the other party; both when the exchange took it."""
    actor = row["actor"]
    if row["action"] == "request":
        return [row["to_institution"]]
    if actor is None:
        return [row["from_institution"], row["to_institution"]]
    return [row["to_institution"] if actor == row["from_institution"] else row["from_institution"]]


def message(row: Any) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    party = {row["from_institution"]: SENDER, row["to_institution"]: RECEIVER}
    return {
        "type": "referral",
        "event": row["action"],
        "status": row["status"],
        "referral": row["reference"],
        "referral_id": str(row["referral_id"]),
        "service_request": f"ServiceRequest/{row['referral_id']}",
        "patient_id": str(row["patient_id"]),
        "direction": row["direction"],
        "urgency": row["urgency"],
        "from_institution": row["from_institution"],
        "to_institution": row["to_institution"],
        "by": party.get(row["actor"], EXCHANGE) if row["actor"] else EXCHANGE,
        "at": iso(row["at"]),
        "deadline": iso(row["deadline"]),
        "follow_up_due": iso(row["follow_up_due"]),
        "follow_up_overdue": row["overdue"],
        "position": row["position"],
    }


def merge_message(row: Any) -> dict[str, Any]:
    """A merge request's step, to the institution that asked for the merge: it waits for the
    identity steward, or the steward approved, rejected or undid it. Patients by regional id."""
    return {
        "type": "merge_request",
        "event": row["action"],
        "status": row["status"],
        "request": row["reference"],
        "request_id": str(row["request_id"]),
        "survivor": str(row["survivor"]),
        "merged": str(row["merged"]),
        "at": row["at"].isoformat(),
        "position": row["position"],
    }


# With the projection's commits to wake it, the notifier reads the steps again this often for
# those a projection of another process wrote (polling every 0.2 s was five rounds of five
# queries a second, idle or not).
APPLIED_IDLE = 2.0


class Notifier:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        consortium: str,
        *,
        idle: float = 0.2,
        applied: asyncio.Event | None = None,
    ) -> None:
        """``applied``: set by the projection of the same process each time it commits (the
        steps are its rows). Given, a round runs as soon as it is set (but rounds start at
        most every ``idle`` s), and otherwise every ``APPLIED_IDLE`` s (for steps another
        process's projection wrote); without it, every ``idle`` s."""
        self.pool = pool
        self.js = js
        self.consortium = consortium
        self.reader = ReferralReader(pool)
        self.idle = idle
        self.applied = applied
        self._consumers: set[str] = set()
        self.sent = 0

    async def position(self) -> int:
        await self.pool.execute(
            "INSERT INTO projection_position (name, position) VALUES ($1, 0) "
            "ON CONFLICT (name) DO NOTHING",
            NAME,
        )
        return int(
            await self.pool.fetchval(
                "SELECT position FROM projection_position WHERE name = $1", NAME
            )
        )

    async def _consumers_for_registered(self) -> None:
        """Every registered institution has its durable consumer from the start, so what is
        sent before it first connects waits for it too."""
        for row in await self.pool.fetch("SELECT code FROM institutions"):
            if row["code"] not in self._consumers:
                await ensure_notify_consumer(self.js, self.consortium, row["code"])
                self._consumers.add(row["code"])

    async def _next(
        self, start: int, limit: int = 200
    ) -> list[tuple[int, dict[str, Any], list[str]]]:
        """The next steps after ``start``, referrals' and merge requests' in one ledger order:
        (position, message, recipients). When either list is cut at ``limit``, nothing past
        its last position is taken from the other, so no step is ever skipped."""
        referral_rows = await self.reader.events_after(start, limit)
        merge_rows = await steps_after(self.pool, start, limit)
        steps = [(r["position"], message(r), recipients(r)) for r in referral_rows] + [
            (r["position"], merge_message(r), [r["institution"]]) for r in merge_rows
        ]
        cuts = [rows[-1]["position"] for rows in (referral_rows, merge_rows) if len(rows) == limit]
        return sorted(s for s in steps if not cuts or s[0] <= min(cuts))

    async def send_once(self) -> int:
        """Publish the next steps after the tracked position; return how many."""
        await self._consumers_for_registered()
        start = await self.position()
        steps = await self._next(start)
        for position, doc, to in steps:
            body = json.dumps(doc, ensure_ascii=False).encode()
            for institution in to:
                if institution not in self._consumers:
                    await ensure_notify_consumer(self.js, self.consortium, institution)
                    self._consumers.add(institution)
                await self.js.publish(
                    notify_subject(self.consortium, institution),
                    body,
                    timeout=10,
                    headers={"Nats-Msg-Id": f"{position}-{institution}"},
                )
                self.sent += 1
            await self.pool.execute(
                "UPDATE projection_position SET position = $2 WHERE name = $1",
                NAME,
                position,
            )
        return len(steps)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            began = loop.time()
            if self.applied is not None:
                self.applied.clear()  # a commit during this round wakes the next one at once
            try:
                if await self.send_once():
                    continue
            except Exception:
                log.exception("notifier round failed; trying again from its tracked position")
            if self.applied is None:
                await first_set(stop, timeout=self.idle)
                continue
            await first_set(stop, self.applied, timeout=APPLIED_IDLE)
            # No oftener than every `idle` s: under load the projection commits far oftener.
            if (rest := began + self.idle - loop.time()) > 0:
                await first_set(stop, timeout=rest)
