"""Referral views in PostgreSQL: each referral's current state, its history, its deadlines.

Written by the patient-record runner in the same transaction as the rest of a ledger batch
(one tracked position). ``referrals`` is the current state with the deadline the scheduler
watches; ``referral_events`` keeps every step with its ledger position, which is what the
status history (FHIR Task), the notifications and the county's statistics read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from domain.referral import Referral
from projections.batch import Changes

SCHEMA = """
CREATE TABLE IF NOT EXISTS referrals (
    referral_id uuid PRIMARY KEY, reference text NOT NULL UNIQUE, patient_id uuid NOT NULL,
    direction text NOT NULL, from_institution text NOT NULL, to_institution text NOT NULL,
    urgency text NOT NULL, status text NOT NULL, content jsonb NOT NULL,
    requested_at timestamptz NOT NULL, decided_at timestamptz, accepted_at timestamptz,
    arrived_at timestamptz, completed_at timestamptz, back_referred_at timestamptz,
    followed_up_at timestamptz, closed_at timestamptz, rejection_reason text, rejection_code text,
    back_referral jsonb, deadline timestamptz, follow_up_due timestamptz,
    overdue boolean NOT NULL DEFAULT false, care_from timestamptz, care_until timestamptz,
    position bigint NOT NULL, updated bigint NOT NULL);
CREATE INDEX IF NOT EXISTS referrals_to ON referrals (to_institution, requested_at);
CREATE INDEX IF NOT EXISTS referrals_from ON referrals (from_institution, requested_at);
CREATE INDEX IF NOT EXISTS referrals_patient ON referrals (patient_id);
CREATE INDEX IF NOT EXISTS referrals_deadline ON referrals (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS referrals_follow_up ON referrals (follow_up_due)
    WHERE status = 'back_referred' AND NOT overdue;
CREATE TABLE IF NOT EXISTS referral_events (
    referral_id uuid NOT NULL, version integer NOT NULL, action text NOT NULL,
    status text NOT NULL, institution text, at timestamptz NOT NULL, reported_at timestamptz,
    details jsonb NOT NULL, position bigint NOT NULL, deadline timestamptz,
    follow_up_due timestamptz, overdue boolean NOT NULL DEFAULT false,
    PRIMARY KEY (referral_id, version));
CREATE INDEX IF NOT EXISTS referral_events_position ON referral_events (position);
"""
TABLES = ("referrals", "referral_events")

# The column each state's arrival stamps.
_STAMP = {
    "accepted": "accepted_at",
    "rejected": "decided_at",
    "arrived": "arrived_at",
    "completed": "completed_at",
    "back_referred": "back_referred_at",
    "followed_up": "followed_up_at",
    "cancelled": "closed_at",
    "expired": "closed_at",
}
# Each step keeps the referral's deadlines as they stood right after it (the row was just
# updated by the step's own statement): notifications sent late still say what was true then.
_HISTORY = (
    "INSERT INTO referral_events (referral_id, version, action, status, institution, at, "
    "reported_at, details, position, deadline, follow_up_due, overdue) "
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, deadline, follow_up_due, overdue "
    "FROM referrals WHERE referral_id = $1"
)


def _requested(changes: Changes, position: int, event: Any) -> None:
    rid, version = event.originator_id, event.originator_version
    changes.op(
        "INSERT INTO referrals (referral_id, reference, patient_id, direction, "
        "from_institution, to_institution, urgency, status, content, requested_at, "
        "deadline, position, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, 'requested', "
        "$8, $9, $10, $11, $11)",
        rid,
        event.reference,
        event.patient_id,
        event.direction,
        event.from_institution,
        event.to_institution,
        event.urgency,
        json.dumps(event.content, ensure_ascii=False),
        event.received_at,
        event.accept_by,
        position,
    )
    changes.op(
        _HISTORY,
        rid,
        version,
        "request",
        "requested",
        event.from_institution,
        event.received_at,
        _instant(event.content.get("requested_at")),
        json.dumps({}),
        position,
    )


def _transitioned(changes: Changes, position: int, event: Any) -> None:
    rid, version = event.originator_id, event.originator_version
    state, details = event.state, event.details
    stamp = _STAMP[state]
    sets = [f"{stamp} = $3"]
    args: list[Any] = [rid, state, event.received_at]
    if state == "accepted":
        sets += ["decided_at = $3", "care_from = $3"]
    if state == "rejected":
        args += [details.get("reason"), details.get("reason_code") or "other"]
        sets += [f"rejection_reason = ${len(args) - 1}", f"rejection_code = ${len(args)}"]
    if state == "back_referred":
        args.append(json.dumps(details, ensure_ascii=False))
        sets.append(f"back_referral = ${len(args)}")
        args.append(event.deadline)
        sets += [f"follow_up_due = ${len(args)}", "deadline = NULL"]
    else:
        args.append(event.deadline)
        sets.append(f"deadline = ${len(args)}")
    if state == "completed":
        args.append(event.care_until)
        sets.append(f"care_until = ${len(args)}")
    elif state in ("cancelled", "expired"):
        sets.append("care_until = CASE WHEN care_from IS NULL THEN NULL ELSE $3::timestamptz END")
    args.append(position)
    sets.append(f"updated = ${len(args)}")
    changes.op(f"UPDATE referrals SET status = $2, {', '.join(sets)} WHERE referral_id = $1", *args)
    changes.op(
        _HISTORY,
        rid,
        version,
        event.action,
        state,
        event.institution,
        event.received_at,
        _instant(details.get("at")),
        json.dumps(details, ensure_ascii=False),
        position,
    )


def _follow_up_overdue(changes: Changes, position: int, event: Any) -> None:
    rid, version = event.originator_id, event.originator_version
    changes.op(
        "UPDATE referrals SET overdue = true, updated = $2 WHERE referral_id = $1", rid, position
    )
    changes.op(
        _HISTORY,
        rid,
        version,
        "mark_overdue",
        "back_referred",
        None,
        event.received_at,
        None,
        json.dumps({"due": event.due.isoformat()}),
        position,
    )


# The rows each Referral ledger event implies, added to a batch's ``changes``.
HANDLERS: dict[type, Callable[[Changes, int, Any], None]] = {
    Referral.Requested: _requested,  # type: ignore[attr-defined]
    Referral.Transitioned: _transitioned,  # type: ignore[attr-defined]
    Referral.FollowUpOverdue: _follow_up_overdue,  # type: ignore[attr-defined]
}


def _instant(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
