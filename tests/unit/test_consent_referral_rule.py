"""The referral routes' rule (consent/referrals.py): what a party to a referral sees of its
content, under seals, consents and the referral's own care windows. Synthetic data only."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from consent.decision import AccessRequest, CareRelationship, ConsentRecord, Facts, SealRecord
from consent.referrals import ReferralRecord, referral_content

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PID = UUID("11111111-1111-4111-8111-111111111111")
RID = UUID("22222222-2222-4222-8222-222222222222")
SPAN = timedelta(days=30)
CONSENT = ConsentRecord(
    UUID("33333333-3333-4333-8333-333333333333"),
    "separate",
    ("*",),
    ("TREAT",),
    NOW - timedelta(days=300),
    None,
    position=1,
)
BIRTH = datetime(1958, 3, 14).date()
CONSENTED = Facts(birth_date=BIRTH, consents=[CONSENT])
BOTH, SENDER_ONLY, RECEIVER_ONLY, NOTHING = (
    frozenset({"sender", "receiver"}),
    frozenset({"sender"}),
    frozenset({"receiver"}),
    frozenset(),
)


def referral(status: str = "requested", **kw: object) -> ReferralRecord:
    fields: dict[str, object] = {
        "referral_id": RID,
        "from_institution": "thc-east",
        "to_institution": "county",
        "status": status,
        "requested_at": NOW - timedelta(days=10),
    }
    return ReferralRecord(**(fields | kw))  # type: ignore[arg-type]


def asked(institution: str, person: str = "dr-li", at: datetime = NOW) -> AccessRequest:
    return AccessRequest(person, "physician", institution, PID, "TREAT", at, 10)


def seen(institution: str, ref: ReferralRecord, facts: Facts, at: datetime = NOW) -> frozenset:
    return referral_content(asked(institution, at=at), ref, facts, after_close=SPAN).shown


def test_both_parties_see_the_content_during_the_referral_with_a_consent() -> None:
    deciding = referral()
    assert seen("county", deciding, CONSENTED) == BOTH  # the receiver, deciding
    accepted = referral("accepted", care_from=NOW - timedelta(days=9))
    view = referral_content(asked("county"), accepted, CONSENTED, after_close=SPAN)
    assert view.shown == BOTH and view.party == "receiver"
    assert view.decision.care_basis == f"referral:{RID}"
    assert view.decision.legal_basis == f"consent:{CONSENT.consent_id}"
    back = referral("back_referred", care_from=NOW - timedelta(days=9), care_until=NOW + SPAN)
    assert seen("thc-east", back, CONSENTED) == BOTH  # the sender, to follow up


def test_a_seal_not_naming_the_reader_hides_all_of_it_own_writing_included() -> None:
    sealed = Facts(birth_date=BIRTH, consents=[CONSENT], seals=[SealRecord(("vc-peach/x",), 5)])
    back = referral("back_referred", care_from=NOW - timedelta(days=9), care_until=NOW + SPAN)
    for institution in ("thc-east", "county"):
        view = referral_content(asked(institution), back, sealed, after_close=SPAN)
        assert view.shown == NOTHING
        assert view.decision.reasons[0].code == "record.sealed"
        assert view.decision.alert == "sealed-record"
    # The person the seal names sees it; a seal lifted before the position stands aside.
    named = Facts(birth_date=BIRTH, consents=[CONSENT], seals=[SealRecord(("county/dr-li",), 5)])
    assert seen("county", back, named) == BOTH
    lifted = SealRecord(("vc-peach/x",), 5, unsealed_position=8)
    assert seen("county", back, Facts(birth_date=BIRTH, consents=[CONSENT], seals=[lifted])) == BOTH


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        (Facts(birth_date=BIRTH), "consent.none"),
        (
            Facts(birth_date=BIRTH, consents=[replace(CONSENT, withdrawn_position=9)]),
            "consent.withdrawn",
        ),
        (
            Facts(birth_date=BIRTH, consents=[replace(CONSENT, categories=("demographics",))]),
            "referral.categories",
        ),
    ],
    ids=["no-consent", "withdrawn", "no-diagnoses"],
)
def test_without_a_consent_a_party_sees_only_its_own_writing(facts: Facts, code: str) -> None:
    back = referral("back_referred", care_from=NOW - timedelta(days=9), care_until=NOW + SPAN)
    sender = referral_content(asked("thc-east"), back, facts, after_close=SPAN)
    assert sender.shown == SENDER_ONLY and sender.decision.reasons[0].code == code
    receiver = referral_content(asked("county"), back, facts, after_close=SPAN)
    assert receiver.shown == RECEIVER_ONLY and receiver.decision.reasons[0].code == code


def test_the_senders_referral_care_ends_a_span_after_the_loop_closes() -> None:
    closed_at = NOW - timedelta(days=1)
    done = referral(
        "followed_up",
        care_from=NOW - timedelta(days=9),
        care_until=NOW + SPAN,
        closed_at=closed_at,
    )
    assert seen("thc-east", done, CONSENTED) == BOTH
    later = closed_at + SPAN
    view = referral_content(asked("thc-east", at=later), done, CONSENTED, after_close=SPAN)
    assert view.shown == SENDER_ONLY and view.decision.reasons[0].code == "care.none"
    # Its own care relationship (a visit it recorded) still holds: it sees the back-referral.
    visit = CareRelationship("encounter:e1", "thc-east", later - timedelta(days=2), None)
    cared = Facts(birth_date=BIRTH, consents=[CONSENT], care=[visit])
    assert seen("thc-east", done, cared, at=later) == BOTH


def test_the_receiver_sees_the_request_only_while_deciding_and_while_its_care_holds() -> None:
    rejected = referral("rejected", closed_at=NOW - timedelta(days=9))
    assert seen("county", rejected, CONSENTED) == RECEIVER_ONLY
    ended = referral("followed_up", care_from=NOW - timedelta(days=60), care_until=NOW)
    assert seen("county", ended, CONSENTED) == RECEIVER_ONLY


def test_an_institution_outside_the_referral_sees_nothing() -> None:
    view = referral_content(asked("vc-peach"), referral(), CONSENTED, after_close=SPAN)
    assert view.party is None and view.shown == NOTHING and not view.decision.permit
