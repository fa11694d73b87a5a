"""How a referral read's audit record states the decisions on its referrals' content
(exchange/api/referral_access.py): grouped by outcome, each group naming its referrals, the
reasons of every decision after the party's own, and the alert of a sealed one."""

from __future__ import annotations

from uuid import UUID

from consent.decision import Decision, Reason
from consent.referrals import ReferralView
from exchange.api.referral_access import PARTY, content_decision

R1, R2, R3 = (UUID(f"{n}" * 8 + "-0000-4000-8000-000000000000") for n in (1, 2, 3))
PID = UUID("99999999-9999-4999-8999-999999999999")
CONSENT = UUID("33333333-3333-4333-8333-333333333333")
PERMIT = Decision(
    True,
    [Reason("consent.permit", "a separate consent covers this read")],
    legal_basis=f"consent:{CONSENT}",
    consent_id=CONSENT,
    care_basis="encounter:e1",
)
SEALED = Decision(
    False,
    [Reason("record.sealed", "the record is sealed")],
    alert="sealed-record",
    obligations=["alert-regulator"],
)


def rows(*ids: UUID) -> list[dict[str, object]]:
    return [{"referral_id": i, "patient_id": PID} for i in ids]


def test_a_read_without_content_decisions_is_the_parties_own() -> None:
    decision, extra = content_decision(rows(R1), None)
    assert decision.permit and decision.reasons == [PARTY] and extra == {}
    assert decision.legal_basis == f"referral:{R1}"


def test_decisions_are_grouped_by_outcome_and_their_reasons_recorded() -> None:
    both = frozenset({"sender", "receiver"})
    views = {
        R1: (ReferralView("sender", both, PERMIT), 40),
        R2: (ReferralView("sender", both, PERMIT), 40),
        R3: (ReferralView("sender", frozenset(), SEALED), 40),
    }
    decision, extra = content_decision(rows(R1, R2, R3), views, "fp")
    assert [r.code for r in decision.reasons] == [
        "referral.party",
        "consent.permit",
        "record.sealed",
    ]
    assert decision.alert == "sealed-record" and decision.obligations == ["alert-regulator"]
    assert decision.consent_id == CONSENT and decision.care_basis == "encounter:e1"
    assert extra["policy"] == "fp"
    shown, sealed = extra["referral_content"]
    assert shown["referrals"] == [str(R1), str(R2)] and shown["decision"] == "permit"
    assert shown["shown"] == ["receiver", "sender"] and shown["as_of_position"] == 40
    assert sealed == {
        "referrals": [str(R3)],
        "party": "sender",
        "shown": [],
        "decision": "deny",
        "reasons": ["record.sealed"],
        "legal_basis": None,
        "care_basis": None,
        "as_of_position": 40,
    }
