"""The patient portal: consents a patient gives, or withdraws, with their own token.

The portal is a desk of the exchange (``exchange.ingest.desk``: ``patient-portal``, level
patient_portal): it turns the patient's request into a consent (or consent_withdrawal) item
and sends it signed, like any institution. The ledger then holds the patient's own act
exactly as it holds a clinic's record of a signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from cryptoprofile import PrivateKey
from domain.problems import Problem
from exchange.ingest.desk import Desk, DeskName
from exchange.servers.nats import PORTAL
from projections.render import entry_id

CODE = PORTAL  # the institution the exchange registers for its own patient portal
NAME = "患者服务门户 (patient portal)"
LEVEL = "patient_portal"
DESK = DeskName(CODE, NAME, LEVEL, "portal.unanswered")


@dataclass
class PortalOutcome:
    accepted: bool
    problems: list[Problem] = field(default_factory=list)
    submission_id: str | None = None
    position: int | None = None
    consent_id: str | None = None


class Identities(Protocol):
    """Who a patient is, as the patient record projection knows it (PatientRecordReader)."""

    async def root(self, patient_id: UUID) -> UUID | None: ...

    async def members(self, root: UUID) -> list[UUID]: ...

    async def resident_id(self, members: Sequence[UUID]) -> str | None: ...


class Rows(Protocol):
    """Where the projected consents are read (an asyncpg pool)."""

    async def fetchrow(self, query: str, *args: Any) -> Any: ...


class Portal:
    """Turns a patient's request into the portal's consent items, sent by its ``desk``;
    ``identities`` and ``rows`` read the projections."""

    def __init__(self, desk: Desk, *, identities: Identities, rows: Rows) -> None:
        self.desk = desk
        self._identities = identities
        self._rows = rows

    @property
    def key(self) -> PrivateKey:
        return self.desk.key

    async def ensure_registered(self) -> None:
        await self.desk.ensure_registered()

    async def record(
        self, patient_id: UUID, body: dict[str, Any], *, now: datetime
    ) -> PortalOutcome:
        records = self._identities
        root = await records.root(patient_id)
        members = await records.members(root) if root else []
        # Filed under the token's own identity, whatever it was merged with: after a wrong
        # merge, one resident's consent must never be filed under the other's resident ID.
        resident_id = await records.resident_id([patient_id]) if members else None
        if resident_id is None:
            return PortalOutcome(
                False,
                [
                    Problem(
                        "patient.no_resident_id",
                        "the exchange holds no resident ID for this patient; "
                        "give the consent at a clinic",
                    )
                ],
            )
        if "withdraw" in body or "confirm" in body:
            item = await self._about_consent(members, resident_id, body, now)
            if isinstance(item, PortalOutcome):
                return item
        else:
            missing = [k for k in ("scope", "purposes") if not body.get(k)]
            if not (body.get("notice_sha256") or len(str(body.get("notice", "")).strip()) >= 10):
                missing.append("notice")
            if missing:
                return PortalOutcome(
                    False,
                    [
                        Problem(
                            "consent.incomplete",
                            "a separate consent names its scope and purposes and "
                            "the notice the patient was shown (notice text, or notice_sha256): missing "
                            + ", ".join(missing),
                            missing[0],
                        )
                    ],
                )
            item = self._consent(resident_id, body, now)
        sent = await self.desk.send(item, now=now)
        if not sent.accepted:
            return PortalOutcome(False, sent.problems, sent.submission_id)
        return PortalOutcome(
            True,
            [],
            sent.submission_id,
            sent.position,
            str(entry_id(CODE, item["source_id"])),
        )

    def _consent(self, resident_id: str, body: dict[str, Any], now: datetime) -> dict[str, Any]:
        notice = (
            body.get("notice_sha256")
            or hashlib.sha256(str(body.get("notice", "")).encode()).hexdigest()
        )
        payload = {
            "patient": {"resident_id": resident_id},
            "consent_type": "separate",
            "scope": body["scope"],
            "purposes": body["purposes"],
            "valid_from": now.isoformat(),
            "valid_to": body.get("valid_to") or (now + timedelta(days=365 * 3)).isoformat(),
            "notice_sha256": notice,
            "signed_by": "patient",
        }
        if body.get("categories") is not None:
            payload["categories"] = body["categories"]
        return {
            "source_id": f"portal-consent-{now.timestamp():.6f}",
            "kind": "consent",
            "payload": payload,
        }

    async def _about_consent(
        self, members: list[UUID], resident_id: str, body: dict[str, Any], now: datetime
    ) -> dict[str, Any] | PortalOutcome:
        """A withdrawal (``withdraw``) or a confirmation (``confirm``) of one of the
        patient's consents, named by its Consent id."""
        field = "withdraw" if "withdraw" in body else "confirm"
        try:
            consent_id = UUID(str(body[field]).removeprefix("Consent/"))
        except ValueError:
            return PortalOutcome(
                False, [Problem(f"consent.{field}", f"{field} names a Consent id", field)]
            )
        row = await self._rows.fetchrow(
            "SELECT institution, source_id FROM consents WHERE consent_id = $1 "
            "AND patient_id = ANY($2)",
            consent_id,
            members,
        )
        if row is None:
            return PortalOutcome(
                False, [Problem("consent.unknown", "none of your consents has this id", field)]
            )
        reference = f"{row['institution']}/{row['source_id']}"
        if field == "confirm":
            return {
                "source_id": f"portal-confirmation-{now.timestamp():.6f}",
                "kind": "consent_confirmation",
                "payload": {
                    "patient": {"resident_id": resident_id},
                    "consent": reference,
                    "at": now.isoformat(),
                },
            }
        return {
            "source_id": f"portal-withdrawal-{now.timestamp():.6f}",
            "kind": "consent_withdrawal",
            "payload": {
                "patient": {"resident_id": resident_id},
                "consent": reference,
                "at": now.isoformat(),
                "reason": "withdrawn by the patient",
            },
        }
