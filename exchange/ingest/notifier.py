"""Notifications on ``hie.<c>.notify.<i>``: each referral step, to the institutions it concerns.

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
from projections.referral_reader import ReferralReader

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


class Notifier:
    def __init__(
        self, pool: asyncpg.Pool, js: JetStreamContext, consortium: str, *, idle: float = 0.2
    ) -> None:
        self.pool = pool
        self.js = js
        self.consortium = consortium
        self.reader = ReferralReader(pool)
        self.idle = idle
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

    async def send_once(self) -> int:
        """Publish the next steps after the tracked position; return how many."""
        await self._consumers_for_registered()
        start = await self.position()
        rows = await self.reader.events_after(start)
        for row in rows:
            body = json.dumps(message(row), ensure_ascii=False).encode()
            for institution in recipients(row):
                if institution not in self._consumers:
                    await ensure_notify_consumer(self.js, self.consortium, institution)
                    self._consumers.add(institution)
                await self.js.publish(
                    notify_subject(self.consortium, institution),
                    body,
                    timeout=10,
                    headers={"Nats-Msg-Id": f"{row['position']}-{institution}"},
                )
                self.sent += 1
            await self.pool.execute(
                "UPDATE projection_position SET position = $2 WHERE name = $1",
                NAME,
                row["position"],
            )
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self.send_once():
                    continue
            except Exception:
                log.exception("notifier round failed; trying again from its tracked position")
            try:
                await asyncio.wait_for(stop.wait(), self.idle)
            except TimeoutError:
                pass
