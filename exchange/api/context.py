"""What the read API is built on: the readers, the audit writer, the policy, the token
authenticator and the patient portal, as one context the composition root fills in."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from audit.postgres import AuditStore
from audit.writer import AuditWriter
from consent.decision import DEFAULT_POLICY, AccessPolicy
from consent.postgres import ConsentState
from domain.problems import Problem
from domain.referral import ReferralPolicy
from exchange.auth.chain import Authenticator
from exchange.servers.audit_heads import HeadSigner
from exchange.telemetry.exposition import Telemetry
from exchange.telemetry.probes import Probes
from projections.intake import IntakeReader
from projections.merge_requests import MergeRequestReader
from projections.postgres import PatientRecordReader
from projections.referral_reader import ReferralReader

Clock = Callable[[], datetime]


class PortalOutcome(Protocol):
    """What the patient portal says of a consent it was given: accepted into the ledger (at a
    position, as a submission) or refused with problems."""

    @property
    def accepted(self) -> bool: ...
    @property
    def problems(self) -> Sequence[Problem]: ...
    @property
    def submission_id(self) -> str | None: ...
    @property
    def position(self) -> int | None: ...
    @property
    def consent_id(self) -> str | None: ...


class MergeSteward(Protocol):
    """The identity steward's desk (``exchange.ingest.steward.Steward``): sends a steward's
    decision on a merge request as a signed submission."""

    async def decide(
        self, rid: UUID, decision: str, *, steward: str, reason: str, now: datetime
    ) -> Any: ...


class SealLifter(Protocol):
    """The regulator's desk (``exchange.ingest.regulator_desk.RegulatorDesk``)."""

    async def lift_seals(self, members: Sequence[UUID], *, reason: str, now: datetime) -> Any: ...


class ConsentPortal(Protocol):
    """The patient portal (``exchange.ingest.portal.Portal``): records a consent a patient
    gives, or withdraws, with their own token, as a signed submission."""

    async def record(
        self, patient_id: UUID, body: dict[str, Any], *, now: datetime
    ) -> PortalOutcome: ...


@dataclass
class ApiContext:
    tokens: Authenticator
    audit_writer: AuditWriter  # group commit: what every request appends through
    heads: HeadSigner
    consent: ConsentState
    records: PatientRecordReader
    referrals: ReferralReader
    merge_requests: MergeRequestReader  # the identity steward's queue
    intake: IntakeReader  # what each institution sent and was refused (data quality)
    policy: AccessPolicy = DEFAULT_POLICY
    # The referral deadlines: how long a party keeps the referral's care after its part ends.
    referral_policy: ReferralPolicy = field(default_factory=ReferralPolicy)
    portal: ConsentPortal | None = None  # consents a patient gives over HTTP
    steward: MergeSteward | None = None  # the identity steward's decisions on merges
    regulator_desk: SealLifter | None = None  # what the regulator does to a record
    # Publishes (subject, JSON document) to JetStream, acknowledged: alerts for the regulator,
    # notices for patients. None: nothing is published (the audit log still holds both).
    publish: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    consortium: str = ""
    # The key of the pages' CSRF tokens (exchange/pages/session.py): the runtime derives it
    # from the token key, so that every process of an installation takes the same forms;
    # a context built without one gets a key of its own.
    page_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    # The consortium's consent notice the patients' pages show (exchange/pages/notice.py).
    consent_notice: Path | None = None
    clock: Clock = lambda: datetime.now(UTC)
    # This process's metrics (the gate counts every decision into them), and the probes of
    # shared state that /metrics and /readyz read; None: /readyz answers from the process
    # alone and /metrics has no snapshot of shared state.
    telemetry: Telemetry = field(default_factory=Telemetry)
    probes: Probes | None = None

    @property
    def audit(self) -> AuditStore:
        return self.audit_writer.store

    @property
    def hash_name(self) -> str:
        """The audit log's hash (sha256 or sm3): the crypto profile's, as the heads are
        signed over, which the runtime saw the log records before it served. Records' digests
        (``disclosed_<hash>``) are made and checked with it."""
        return self.heads.hasher.name
