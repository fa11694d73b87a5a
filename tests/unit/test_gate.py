"""The gate on its own, with fakes for tokens, facts and the audit log: what a route declares
is what the gate enforces, every refusal is audited before it is sent, and nothing leaves
when the audit log cannot record it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from audit.disclosure import LISTED, digest
from audit.postgres import AuditWriteError
from consent.decision import (
    AccessPolicy,
    AccessRequest,
    Decision,
    Facts,
    Reason,
    decide,
    may_read_consents,
)
from consent.postgres import RecordView
from exchange.api.access import PATH_PATIENT, Access, Answer, ApiRoute, Call, Handler
from exchange.api.gate import Gate
from exchange.api.responses import Refused, json_response
from exchange.auth.tokens import Identity, TokenError
from exchange.telemetry.exposition import Telemetry

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PATIENT = UUID("11111111-1111-4111-8111-111111111111")
MERGED = UUID("22222222-2222-4222-8222-222222222222")


def identity(role: str, person: str = "dr-li") -> Identity:
    return Identity(person, "county", role, NOW + timedelta(hours=1), f"tok-{role}")


class Tokens:
    def __init__(self) -> None:
        self.known = {r: identity(r) for r in ("physician", "nurse", "regulator", "admin")}
        self.known["patient"] = identity("patient", str(PATIENT))

    async def authenticate(self, token: str, *, now: datetime) -> Identity:
        if token == "revocations-down":
            raise TokenError("the revocation list is stale", code="token.revocation_unavailable")
        if token not in self.known:
            raise TokenError("unknown token")
        return self.known[token]


class Audit:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.down = False

    async def append(self, record: dict[str, Any], at: datetime) -> int:
        if self.down:
            raise AuditWriteError("the audit database is unreachable")
        self.records.append(record)
        return len(self.records)


class Consent:
    """Facts for PATIENT (and MERGED, merged into it): a TREAT consent, care at county."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts

    async def view(
        self, patient_id: UUID, *, institution: str, person: str, at: datetime
    ) -> RecordView | None:
        if patient_id not in (PATIENT, MERGED):
            return None
        return RecordView(PATIENT, [PATIENT, MERGED], 42, self.facts, None, None, None, [])


def context(facts: Facts | None = None, hash_name: str = "sha256") -> Any:
    async def root(patient_id: UUID, at: int | None = None) -> UUID | None:
        return PATIENT if at is None or at >= 10 else None

    async def position_at(instant: datetime) -> int:
        return 5

    return SimpleNamespace(
        tokens=Tokens(),
        audit_writer=Audit(),
        consent=Consent(facts or Facts()),
        records=SimpleNamespace(root=root, position_at=position_at),
        policy=AccessPolicy(),
        clock=lambda: NOW,
        telemetry=Telemetry(),
        hash_name=hash_name,  # the audit log's: sha256 (intl) or sm3 (gm)
    )


class Seen:
    """A handler that answers with what the gate handed it."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.calls: list[Call] = []
        self.answer = answer or {}

    async def __call__(self, call: Call) -> Answer:
        self.calls.append(call)
        return Answer(json_response({"ok": True}, call.request_id), **self.answer)


async def ask(
    ctx: Any,
    access: Access,
    handler: Handler,
    *,
    role: str | None = "physician",
    path: str = "/thing",
    purpose: str | None = None,
    token: str | None = None,
    route: str = "/thing",
    params: dict[str, str] | None = None,
) -> httpx.Response:
    gate = Gate(ctx)
    app = Starlette(routes=[Route(route, gate.endpoint(ApiRoute("GET", route, access, handler)))])
    headers = {}
    if token or role:
        headers["Authorization"] = f"Bearer {token or role}"
    if purpose:
        headers["X-Purpose-Of-Use"] = purpose
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hie"
    ) as http:
        return await http.get(path, headers=headers, params=params)


def code(answer: httpx.Response) -> str:
    return answer.json()["issue"][0]["details"]["coding"][0]["code"]  # type: ignore[no-any-return]


def last(ctx: Any) -> dict[str, Any]:
    return ctx.audit_writer.records[-1]  # type: ignore[no-any-return]


PHYSICIANS = Access(
    "thing",
    roles=frozenset({"physician"}),
    refused_role="the {role} role does not read things",
    purposes=frozenset({"TREAT"}),
    refused_purpose="send TREAT",
)


async def test_a_public_route_needs_no_token_and_writes_no_audit_record() -> None:
    ctx, seen = context(), Seen()
    answer = await ask(ctx, Access("metadata", public=True), seen, role=None)
    assert answer.status_code == 200 and seen.calls[0].ident is None
    assert ctx.audit_writer.records == []


@pytest.mark.parametrize(
    ("token", "status", "issue"),
    [(None, 401, "login"), ("forged", 401, "login"), ("revocations-down", 503, "transient")],
)
async def test_a_refused_token_is_audited_as_a_failed_sign_in(
    token: str | None, status: int, issue: str
) -> None:
    ctx, seen = context(), Seen()
    answer = await ask(ctx, PHYSICIANS, seen, role=None, token=token)
    assert answer.status_code == status and answer.json()["issue"][0]["code"] == issue
    assert not seen.calls
    record = last(ctx)
    assert record["action"] == "thing.authenticate" and record["person"] is None
    assert record["request_id"] == answer.headers["x-request-id"]
    assert record["decision"] == "deny" and record["reasons"][0]["code"] == code(answer)


async def test_a_role_the_route_does_not_declare_is_refused_before_the_handler() -> None:
    ctx, seen = context(), Seen()
    answer = await ask(ctx, PHYSICIANS, seen, role="nurse", purpose="TREAT")
    assert answer.status_code == 403 and code(answer) == "role.not_permitted"
    assert answer.json()["issue"][0]["details"]["text"] == "the nurse role does not read things"
    assert not seen.calls
    assert last(ctx)["role"] == "nurse" and last(ctx)["reasons"][0]["code"] == "role.not_permitted"


@pytest.mark.parametrize("purpose", [None, "HRESCH"])
async def test_a_purpose_the_route_does_not_accept_is_refused_and_recorded_as_sent(
    purpose: str | None,
) -> None:
    ctx, seen = context(), Seen()
    answer = await ask(ctx, PHYSICIANS, seen, purpose=purpose)
    assert answer.status_code == 400 and code(answer) == "purpose.missing"
    assert answer.json()["issue"][0]["code"] == "required" and not seen.calls
    assert last(ctx)["purpose"] == purpose


@pytest.mark.parametrize("hash_name", ["sha256", "sm3"])
async def test_the_handler_gets_the_call_and_its_answer_is_recorded_before_it_is_sent(
    hash_name: str,
) -> None:
    ctx = context(hash_name=hash_name)
    seen = Seen(
        {
            "decision": Decision(True, [Reason("thing.ok", "fine")], legal_basis="x"),
            "disclosed": [f"Thing/{i}" for i in range(LISTED + 1)],
            "extra": {"note": "n"},
        }
    )
    answer = await ask(ctx, PHYSICIANS, seen, purpose="treat")
    assert answer.status_code == 200
    call = seen.calls[0]
    assert call.purpose == "TREAT" and call.who.role == "physician" and call.action == "thing"
    record = last(ctx)
    assert record["decision"] == "permit" and record["legal_basis"] == "x"
    assert record["purpose"] == "TREAT" and record["note"] == "n"
    # More than LISTED resources: counted, typed and digested by audit/disclosure.py with the
    # audit log's hash, in the field that names it.
    assert record["disclosed"] == [] and record["disclosed_count"] == LISTED + 1
    disclosed = [f"Thing/{i}" for i in range(LISTED + 1)]
    assert record[f"disclosed_{hash_name}"] == digest(disclosed, hash_name)
    other = {"sha256": "sm3", "sm3": "sha256"}[hash_name]
    assert f"disclosed_{other}" not in record  # never a hash it was not made with


async def test_a_refusal_a_handler_raises_is_audited_with_the_calls_patient_and_purpose() -> None:
    async def refuse(call: Call) -> Answer:
        raise Refused(404, "thing.not_found", "no such thing", "not-found")

    ctx = context()
    access = Access("glass", roles=frozenset({"physician"}), purpose="ETREAT", patient=PATH_PATIENT)
    answer = await ask(ctx, access, refuse, route="/p/{pid}", path=f"/p/{PATIENT}")
    assert answer.status_code == 404 and code(answer) == "thing.not_found"
    record = last(ctx)
    assert (record["patient_id"], record["purpose"]) == (str(PATIENT), "ETREAT")
    assert record["reasons"] == [{"code": "thing.not_found", "message": "no such thing"}]


async def test_a_malformed_patient_id_is_refused_as_the_route_declares() -> None:
    ctx, seen = context(), Seen()
    access = Access("glass", roles=frozenset({"physician"}), patient=PATH_PATIENT)
    answer = await ask(ctx, access, seen, route="/p/{pid}", path="/p/not-an-id")
    assert answer.status_code == 404 and code(answer) == "patient.not_found"
    assert not seen.calls and last(ctx)["patient_id"] is None


READ = Access(
    "read",
    roles=frozenset({"physician", "nurse", "patient"}),
    purposes="any",
    defaults={"patient": "PATRQT"},
    refused_purpose="send a purpose",
    refused_role="the {role} role does not read records",
    patient=PATH_PATIENT,
    decide=decide,
    redecidable=True,
    as_of=True,
)


async def read(ctx: Any, seen: Seen, pid: UUID | str = MERGED, **kw: Any) -> httpx.Response:
    return await ask(ctx, READ, seen, route="/r/{pid}", path=f"/r/{pid}", **kw)


async def test_a_patient_route_decides_on_the_facts_and_records_them_for_redecide() -> None:
    # No consent, no care: decide() refuses; the refusal carries its reasons and the facts.
    ctx, seen = context(), Seen()
    answer = await read(ctx, seen, purpose="TREAT")
    # The caller is told what it can do; the record keeps why (none of it in the answer).
    assert answer.status_code == 403 and code(answer) == "access.not_permitted" and not seen.calls
    assert "consent.none" not in answer.text
    record = last(ctx)
    assert record["patient_id"] == str(PATIENT)  # the surviving identity, not the one asked
    assert [r["code"] for r in record["reasons"]] == ["consent.none", "care.none"]
    assert record["as_of_position"] == 42 and record["decided_at"] == NOW.isoformat()
    assert record["policy"] == AccessPolicy().fingerprint()
    # The patient reads their own record without naming a purpose: PATRQT, and permitted.
    answer = await read(ctx, seen, role="patient")
    assert answer.status_code == 200
    call = seen.calls[0]
    assert call.purpose == "PATRQT" and call.decision is not None and call.decision.permit
    assert call.view is not None and call.patient_id == PATIENT
    assert last(ctx)["legal_basis"] == "data-subject" and last(ctx)["as_of_position"] == 42


async def test_a_patient_route_refuses_an_unknown_patient_and_an_unknown_past() -> None:
    ctx, seen = context(), Seen()
    unknown = await read(ctx, seen, pid=uuid4(), role="patient")
    assert unknown.status_code == 404 and code(unknown) == "patient.not_found"
    then = await read(ctx, seen, role="patient", params={"_at": "3"})
    assert then.status_code == 404
    assert then.json()["issue"][0]["details"]["text"] == "no patient has this id at that time"
    bad = await read(ctx, seen, role="patient", params={"_at": "yesterday"})
    assert bad.status_code == 400 and code(bad) == "search.at"
    assert last(ctx)["patient_id"] == str(MERGED) and last(ctx)["purpose"] == "PATRQT"
    assert not seen.calls
    # A position the patient existed at: the handler gets it, and the record names it.
    assert (await read(ctx, seen, role="patient", params={"_at": "12"})).status_code == 200
    assert seen.calls[0].at == 12 and last(ctx)["record_at_position"] == 12


async def test_the_declared_roles_bound_what_a_rule_may_permit() -> None:
    def permits_anyone(request: AccessRequest, facts: Facts, policy: AccessPolicy) -> Decision:
        return Decision(True, [Reason("any.permit", "a rule too generous")])

    ctx, seen = context(), Seen()
    access = Access(
        "read",
        roles=frozenset({"physician"}),
        refused_role="not for {role}s",
        patient=PATH_PATIENT,
        decide=permits_anyone,
    )
    answer = await ask(ctx, access, seen, role="regulator", route="/r/{pid}", path=f"/r/{PATIENT}")
    assert answer.status_code == 403 and code(answer) == "role.not_permitted"
    assert not seen.calls and last(ctx)["decision"] == "deny"


async def test_consent_reading_takes_the_purpose_sent_but_records_none_when_refused() -> None:
    ctx, seen = context(), Seen()
    access = Access(
        "consent-read",
        roles=frozenset({"physician", "nurse", "patient"}),
        patient=PATH_PATIENT,
        decide=may_read_consents,
    )
    answer = await ask(ctx, access, seen, purpose="TREAT", route="/c/{pid}", path=f"/c/{PATIENT}")
    assert answer.status_code == 403 and code(answer) == "consent.not_permitted"
    assert last(ctx)["purpose"] is None and last(ctx)["patient_id"] == str(PATIENT)


async def test_nothing_leaves_when_the_audit_log_cannot_record() -> None:
    ctx, seen = context(), Seen()
    ctx.audit_writer.down = True
    answer = await ask(ctx, PHYSICIANS, seen, purpose="TREAT")
    assert answer.status_code == 503 and code(answer) == "audit.unavailable"
    assert seen.calls and "ok" not in answer.text
    refused = await ask(ctx, PHYSICIANS, seen, role="nurse")
    assert refused.status_code == 503 and code(refused) == "audit.unavailable"


async def test_a_failing_handler_is_a_500_that_names_the_request() -> None:
    async def fails(call: Call) -> Answer:
        raise RuntimeError("a bug")

    ctx = context()
    answer = await ask(ctx, PHYSICIANS, fails, purpose="TREAT")
    assert answer.status_code == 500 and code(answer) == "internal"
    assert answer.headers["x-request-id"] in answer.json()["issue"][0]["details"]["text"]


@pytest.mark.parametrize(
    "declaration",
    [
        {"public": True, "roles": frozenset({"physician"})},
        {},
        {"roles": frozenset({"physician"}), "decide": decide},
        {"roles": frozenset({"physician"}), "patient": PATH_PATIENT, "redecidable": True},
        {"roles": frozenset({"patient"}), "defaults": {"patient": "PATRQT"}},
    ],
    ids=[
        "public-with-roles",
        "no-roles",
        "decision-without-patient",
        "redecide-without-rule",
        "default-without-purposes",
    ],
)
def test_a_declaration_that_cannot_work_fails_when_it_is_made(declaration: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Access("thing", **declaration)
