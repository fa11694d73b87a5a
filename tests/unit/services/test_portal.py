"""The patient portal with its dependencies faked: what it checks before it signs, what it
sends, and what it answers — no runtime, no NATS, no PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from adapters.envelope import verify_signature
from domain.submission import validate_envelope
from exchange.ingest.desk import Desk
from exchange.ingest.portal import CODE, DESK, LEVEL, Portal
from tests.factories import resident

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SEED = bytes(range(32))


class Fakes:
    """Everything the portal is given, recording how it was used."""

    def __init__(
        self,
        *,
        resident_id: str | None = resident(1),
        receipt: dict[str, Any] | None = None,
        consent_row: dict[str, str] | None = None,
    ) -> None:
        self.registered: list[tuple[str, ...]] = []
        self.sent: list[dict[str, Any]] = []
        self.waited: list[int] = []
        self.queries: list[tuple[Any, ...]] = []
        self.members = [uuid4(), uuid4()]
        self.asked_resident_id_of: list[UUID] = []
        self._resident_id = resident_id
        self._receipt = receipt or {"status": "accepted", "positions": [41]}
        self._consent_row = consent_row

    # register
    async def register(self, code: str, name: str, level: str, public_key: str) -> bool:
        self.registered.append((code, name, level, public_key))
        return True

    # identities
    async def root(self, patient_id: UUID) -> UUID | None:
        return self.members[0]

    async def members_of(self, root: UUID) -> list[UUID]:
        return self.members

    async def resident_id(self, members: Sequence[UUID]) -> str | None:
        self.asked_resident_id_of = list(members)
        return self._resident_id

    # rows
    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.queries.append(args)
        return self._consent_row

    # submitter
    async def submit(
        self, envelopes: Sequence[dict[str, Any]], *, wait: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        self.sent += envelopes
        return {e["submission_id"]: self._receipt for e in envelopes}

    async def projection_wait(self, position: int) -> None:
        self.waited.append(position)

    def portal(self) -> Portal:
        class Identities:
            root, resident_id = self.root, self.resident_id
            members = self.members_of

        desk = Desk(
            SEED,
            DESK,
            register=self.register,
            submitter=self,
            projection_wait=self.projection_wait,
        )
        return Portal(desk, identities=Identities(), rows=self)


CONSENT = {"scope": ["*"], "purposes": ["TREAT"], "notice": "我已阅读并同意本告知书全部内容"}


async def test_it_registers_itself_as_the_portal_institution() -> None:
    fakes = Fakes()
    await fakes.portal().ensure_registered()
    [(code, _, level, key)] = fakes.registered
    assert (code, level) == (CODE, LEVEL) and len(base64.b64decode(key)) == 32


async def test_a_consent_is_signed_sent_and_waited_for() -> None:
    fakes = Fakes()
    portal = fakes.portal()
    outcome = await portal.record(uuid4(), dict(CONSENT), now=NOW)
    # One envelope, signed by the portal's key, that the gateway's validation accepts.
    [envelope] = fakes.sent
    assert envelope["institution"] == CODE
    assert verify_signature(envelope, portal.key.public_key())
    valid, problems = validate_envelope(envelope)
    assert valid is not None and not problems
    assert [i.kind for i in valid.items] == ["consent"]
    assert valid.items[0].payload.patient.resident_id == resident(1)
    # Accepted: the answer waits until the projection holds it.
    assert outcome.accepted and outcome.position == 41 and fakes.waited == [41]
    assert outcome.consent_id is not None


async def test_nothing_is_sent_for_a_patient_without_a_resident_id() -> None:
    fakes = Fakes(resident_id=None)
    outcome = await fakes.portal().record(uuid4(), dict(CONSENT), now=NOW)
    assert not outcome.accepted and outcome.problems[0].code == "patient.no_resident_id"
    assert fakes.sent == []


async def test_an_incomplete_consent_names_what_is_missing() -> None:
    fakes = Fakes()
    outcome = await fakes.portal().record(uuid4(), {"scope": ["*"], "notice": "短"}, now=NOW)
    [problem] = outcome.problems
    assert problem.code == "consent.incomplete" and problem.field == "purposes"
    assert problem.message.endswith("purposes, notice") and fakes.sent == []


async def test_a_withdrawal_must_name_one_of_the_patients_own_consents() -> None:
    fakes = Fakes()
    consent_id = uuid4()
    outcome = await fakes.portal().record(uuid4(), {"withdraw": f"Consent/{consent_id}"}, now=NOW)
    assert outcome.problems[0].code == "consent.unknown" and fakes.sent == []
    # Looked up among the consents of every identity of the patient.
    assert fakes.queries == [(consent_id, fakes.members)]


async def test_a_withdrawal_of_a_held_consent_names_it_by_reference() -> None:
    fakes = Fakes(consent_row={"institution": "thc-1", "source_id": "c1"})
    outcome = await fakes.portal().record(uuid4(), {"withdraw": str(uuid4())}, now=NOW)
    assert outcome.accepted
    [item] = fakes.sent[0]["events"]
    assert item["kind"] == "consent_withdrawal" and item["payload"]["consent"] == "thc-1/c1"


async def test_a_refused_receipt_comes_back_as_problems() -> None:
    fakes = Fakes(
        receipt={
            "status": "rejected",
            "problems": [
                {
                    "code": "consent.scope_unknown",
                    "message": "scope names …",
                    "field": "payload.scope",
                }
            ],
        }
    )
    outcome = await fakes.portal().record(uuid4(), dict(CONSENT), now=NOW)
    assert not outcome.accepted and fakes.waited == []
    assert [(p.code, p.field) for p in outcome.problems] == [
        ("consent.scope_unknown", "payload.scope")
    ]


async def test_a_consent_is_filed_under_the_tokens_own_identity_only() -> None:
    """The token's patient was merged with another identity (perhaps wrongly): the portal
    asks for the resident ID of the token's own identity, never of the merged group."""
    fakes = Fakes()
    own = uuid4()
    outcome = await fakes.portal().record(own, dict(CONSENT), now=NOW)
    assert outcome.accepted
    assert fakes.asked_resident_id_of == [own] and own not in fakes.members
