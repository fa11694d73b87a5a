"""What the gateway says of each submission it checked: its receipt, published to the sending
institution (the wire contract: README's receipts), and its record in the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from audit.digests import ENVELOPE, field, hex_digest
from domain.freshness import clock_warning
from exchange.ingest.checks import Checked


def receipt_of(item: Checked, now: datetime) -> dict[str, Any]:
    """The receipt of a submission answered at ``now``: accepted (with its ledger position,
    and whether it repeated one held) or rejected (with its problems); for one relayed by a
    clinic's edge node, the edge's stamp and, when its clock is off, how far and a warning."""
    accepted = item.pending is not None and item.position is not None
    receipt: dict[str, Any] = {
        "submission_id": item.submission_id,
        "institution": item.institution,
        "status": "accepted" if accepted else "rejected",
        "received_at": now.isoformat(),
    }
    if item.stamp is not None:  # relayed by the clinic's edge node
        receipt["edge_received_at"] = item.stamp.isoformat()
        if item.skew is not None:
            receipt["clock_skew_s"] = round(item.skew.total_seconds(), 3)
            receipt["warnings"] = [clock_warning(item.skew).as_dict()]
    if accepted:
        receipt["positions"] = [item.position]
        receipt["repeat"] = item.repeat
    else:
        receipt["problems"] = [p.as_dict() for p in item.problems]
    return receipt


def audit_record(item: Checked, hash_name: str) -> dict[str, Any]:
    """The audit log's record of a submission answered: who sent it, the decision and why,
    and for one accepted the digest of the envelope the ledger keeps, made with the audit
    log's hash ``hash_name`` and named by it (``envelope_sha256`` under the intl crypto
    profile, ``envelope_sm3`` under gm): the clinical record is anchored in the Merkle log,
    and ``hie audit verify`` checks the ledger against these anchors."""
    accepted = item.pending is not None and item.position is not None
    return {
        "action": "submission",
        "institution": item.institution,
        "submission_id": item.submission_id,
        "decision": "accepted" if accepted else "rejected",
        "position": item.position,
        "repeat": item.repeat,
        "items": len(item.pending.valid.items) if item.pending else None,
        field(ENVELOPE, hash_name): hex_digest(item.pending.envelope_text.encode(), hash_name)
        if accepted and item.pending
        else None,
        "reasons": [{"code": p.code, "message": p.message} for p in item.problems],
    }
