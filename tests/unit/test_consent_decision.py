"""The decision point, rule by rule (REGULATIONS.md consent rows), on plain facts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.decision import (
    DEFAULT_POLICY,
    AccessPolicy,
    AccessRequest,
    BreakGlassGrant,
    CareRelationship,
    ConsentRecord,
    Facts,
    GuardianRecord,
    InvalidBreakGlass,
    SealRecord,
    age_on,
    check_break_glass,
    decide,
)
from consent.facts import ResearchProject
from domain.categories import CATEGORIES, GENERAL, SENSITIVE

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)
PATIENT = uuid4()
ADULT = date(1970, 5, 1)
# The requesting institution treats the patient (an encounter it recorded).
CARE = (
    CareRelationship(
        "encounter:e-1", "county", NOW - timedelta(days=10), NOW + timedelta(days=355)
    ),
)


def request(
    purpose: str = "TREAT",
    role: str = "physician",
    institution: str = "county",
    person: str = "doctor-1",
    at: datetime = NOW,
    position: int | None = 100,
    own: bool = False,
) -> AccessRequest:
    return AccessRequest(person, role, institution, PATIENT, purpose, at, position, own)


def consent(
    kind: str = "separate",
    scope: tuple[str, ...] = ("*",),
    purposes: tuple[str, ...] = ("TREAT",),
    days: int = 365,
    categories: tuple[str, ...] | None = None,
    signed_by: str = "patient",
    guardian: str | None = None,
    position: int = 10,
    withdrawn: int | None = None,
) -> ConsentRecord:
    return ConsentRecord(
        uuid4(),
        kind,
        scope,
        purposes,
        NOW - timedelta(days=1),
        NOW + timedelta(days=days),
        categories,
        signed_by,
        guardian,
        position,
        withdrawn,
    )


def facts(
    *consents: ConsentRecord,
    care: tuple[CareRelationship, ...] = CARE,
    birth: date | None = ADULT,
    **more: object,
) -> Facts:
    return Facts(birth_date=birth, consents=consents, care=care, **more)  # type: ignore[arg-type]


def codes(decision) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.code for r in decision.reasons]


# PIPL Art. 28-29: separate consent ---------------------------------------------------------


def test_a_separate_consent_covering_the_institution_permits_and_is_the_legal_basis() -> None:
    c = consent(scope=("county", "thc-1"))
    decision = decide(request(), facts(c))
    assert decision.permit and decision.consent_id == c.consent_id
    assert decision.legal_basis == f"consent:{c.consent_id}"
    assert decision.care_basis == "encounter:e-1"
    # Without naming them, the general categories only: the sensitive ones are withheld.
    assert decision.categories == GENERAL and decision.withheld == SENSITIVE


def test_a_general_consent_never_stands_in_for_a_separate_one() -> None:
    decision = decide(request(), facts(consent(kind="general")))
    assert not decision.permit and codes(decision) == ["consent.general_only"]


# PIPL Art. 23, 14, 30: scope, purpose, validity ------------------------------------------


def test_scope_purpose_and_validity() -> None:
    assert codes(decide(request(), facts(consent(scope=("thc-1",))))) == ["consent.scope"]
    assert codes(decide(request(), facts(consent(purposes=("HRESCH",))))) == ["consent.purpose"]
    # A research read under a treatment consent is refused, with the reason.
    assert codes(decide(request("HRESCH"), facts(consent(), research=project()))) == [
        "consent.purpose"
    ]
    expired = replace(consent(), valid_to=NOW - timedelta(seconds=1))
    assert codes(decide(request(), facts(expired))) == ["consent.none"]
    assert codes(decide(request("HPAYMT"), facts(consent()))) == ["purpose.not_supported"]


def test_research_under_a_research_consent_sees_only_the_research_categories() -> None:
    decision = decide(
        request("HRESCH"),
        facts(consent(purposes=("HRESCH",)), care=(), research=project(categories=CATEGORIES)),
    )
    assert decision.permit  # research needs no care relationship
    assert set(decision.categories) == set(DEFAULT_POLICY.purposes["HRESCH"])
    assert "demographics" in decision.withheld and "document" in decision.withheld


# PIPL Art. 15: withdrawal counts from its ledger position --------------------------------


def test_a_withdrawal_denies_from_its_position_and_not_before() -> None:
    c = consent(position=10, withdrawn=50)
    assert decide(request(position=49), facts(c)).permit
    assert codes(decide(request(position=50), facts(c))) == ["consent.withdrawn"]
    assert codes(decide(request(position=None), facts(c))) == ["consent.withdrawn"]
    # A consent recorded after the position did not exist yet then.
    assert codes(decide(request(position=9), facts(c))) == ["consent.none"]


@given(recorded=st.integers(0, 100), withdrawn=st.integers(0, 200), asked=st.integers(0, 300))
def test_property_a_withdrawal_denies_every_read_after_its_position(
    recorded: int, withdrawn: int, asked: int
) -> None:
    c = consent(position=recorded, withdrawn=max(withdrawn, recorded + 1))
    permitted = decide(request(position=asked), facts(c)).permit
    assert permitted == (recorded <= asked < c.withdrawn_position)  # type: ignore[operator]


# PIPL Art. 28, 31: children under 14 -----------------------------------------------------


def test_a_child_under_14_cannot_consent_alone_and_the_birthday_is_the_boundary() -> None:
    birth = date(2012, 11, 22)  # 14 today: NOW is 2026-11-23
    # Signed the day before the 14th birthday: invalid, and it stays invalid afterwards.
    before = replace(consent(), valid_from=datetime(2026, 11, 21, 12, tzinfo=UTC))
    assert codes(decide(request(), facts(before, birth=birth))) == ["consent.signer_under_14"]
    # Signed on the birthday itself: valid.
    on_day = replace(consent(), valid_from=datetime(2026, 11, 22, 8, tzinfo=UTC))
    assert decide(request(), facts(on_day, birth=birth)).permit


def test_an_unknown_age_needs_a_guardians_consent() -> None:
    assert codes(decide(request(), facts(consent(), birth=None))) == ["consent.age_unknown"]


def test_a_recorded_guardians_consent_is_valid_and_an_unrecorded_ones_is_not() -> None:
    birth = date(2015, 3, 1)
    by_mother = consent(signed_by="guardian", guardian="110105198001010029")
    mother = GuardianRecord("110105198001010029", NOW - timedelta(days=3650), None, 5)
    assert decide(request(), facts(by_mother, birth=birth, guardians=(mother,))).permit
    stranger = replace(by_mother, guardian="110105198001010037")
    assert codes(decide(request(), facts(stranger, birth=birth, guardians=(mother,)))) == [
        "consent.guardian_not_recorded"
    ]
    # A guardian recorded after the position did not count then.
    later = replace(mother, position=200)
    assert codes(decide(request(), facts(by_mother, birth=birth, guardians=(later,)))) == [
        "consent.guardian_not_recorded"
    ]


def test_age_on_counts_whole_years_and_leap_day_birthdays() -> None:
    assert age_on(date(2012, 11, 24), date(2026, 11, 23)) == 13
    assert age_on(date(2012, 11, 24), date(2026, 11, 24)) == 14
    assert age_on(date(2012, 2, 29), date(2026, 2, 28)) == 13
    assert age_on(date(2012, 2, 29), date(2026, 3, 1)) == 14


# PIPL Art. 5-6: minimum necessary; sensitive categories only by name ---------------------


def test_sensitive_categories_only_when_a_consent_names_them() -> None:
    named = consent(categories=("diagnosis", "medication", "hiv"))
    decision = decide(request(), facts(named))
    assert decision.categories == ("diagnosis", "medication", "hiv")
    assert "psychiatric" in decision.withheld and "lab" in decision.withheld


def test_a_referral_as_the_only_care_sees_the_referral_minimum_and_recent_results() -> None:
    referral = CareRelationship("referral:r-1", "county", NOW - timedelta(days=1), None)
    decision = decide(request(), facts(consent(), care=(referral,)))
    assert decision.permit and decision.care_basis == "referral:r-1"
    assert set(decision.categories) == set(DEFAULT_POLICY.referral_categories)
    assert decision.results_since == NOW - DEFAULT_POLICY.recent_results
    # With its own encounter as well, the institution's own care decides.
    both = decide(request(), facts(consent(), care=(referral, *CARE)))
    assert both.categories == GENERAL and both.results_since is None


@given(
    consented=st.none() | st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True),
    purpose=st.sampled_from(["TREAT", "HRESCH", "ETREAT"]),
    referral_only=st.booleans(),
)
def test_property_the_decision_never_lets_through_a_category_outside_consent_and_purpose(
    consented: list[str] | None, purpose: str, referral_only: bool
) -> None:
    care = (
        (CareRelationship("referral:r", "county", NOW - timedelta(days=1)),)
        if referral_only
        else CARE
    )
    c = consent(purposes=("TREAT", "HRESCH"), categories=tuple(consented) if consented else None)
    decision = decide(
        request(purpose), facts(c, care=care, research=project(categories=CATEGORIES))
    )
    if not decision.permit or purpose == "ETREAT":
        return
    named = set(consented) if consented else set(GENERAL)
    allowed = set(DEFAULT_POLICY.purposes[purpose]) | set(SENSITIVE)
    assert set(decision.categories) <= named & allowed
    assert not set(decision.categories) & set(decision.withheld)
    assert set(decision.categories) | set(decision.withheld) == set(CATEGORIES)


# 医疗机构病历管理规定: care relationship; NHC notice: grants expire, sealed records ---------


def test_consent_alone_is_not_enough_without_a_care_relationship() -> None:
    assert codes(decide(request(), facts(consent(), care=()))) == ["care.none"]
    other = CareRelationship("encounter:e-2", "thc-1")
    assert codes(decide(request(), facts(consent(), care=(other,)))) == ["care.none"]


def test_care_relationships_expire() -> None:
    old = CareRelationship(
        "record:e-3", "county", NOW - timedelta(days=400), NOW - timedelta(days=35)
    )
    assert codes(decide(request(), facts(consent(), care=(old,)))) == ["care.none"]
    contract = CareRelationship(
        "contract:7", "county", NOW - timedelta(days=30), NOW + timedelta(days=335)
    )
    assert decide(request(), facts(consent(), care=(contract,))).care_basis == "contract:7"


def test_a_sealed_record_is_read_only_by_its_named_readers_and_others_raise_an_alert() -> None:
    seal = SealRecord(("county/records-officer-1",), position=60)
    refused = decide(request(position=70), facts(consent(), seals=(seal,)))
    assert codes(refused) == ["record.sealed"] and refused.alert == "sealed-record"
    assert decide(
        request(person="records-officer-1", position=70), facts(consent(), seals=(seal,))
    ).permit
    # The same person id at another institution is not the reader the seal names.
    assert codes(
        decide(
            request(person="records-officer-1", institution="thc-1", position=70),
            facts(consent(scope=("*",)), seals=(seal,)),
        )
    ) == ["record.sealed"]
    # Before the seal, and after it is lifted, others read again.
    assert decide(request(position=59), facts(consent(), seals=(seal,))).permit
    lifted = replace(seal, unsealed_position=80)
    assert decide(request(position=80), facts(consent(), seals=(lifted,))).permit
    # A seal never blocks emergency care: break-glass opens it, and that raises an alert.
    grant = BreakGlassGrant(uuid4(), "doctor-1", PATIENT, "unconscious", NOW + timedelta(hours=1))
    opened = decide(request("ETREAT", position=70), facts(seals=(seal,), grants=(grant,)))
    assert opened.permit and opened.break_glass and opened.alert == "sealed-record.break-glass"
    assert "alert-regulator" in opened.obligations
    # Without a grant, ETREAT is refused for that, and says nothing of the seal.
    assert codes(decide(request("ETREAT", position=70), facts(seals=(seal,)))) == [
        "break_glass.no_grant"
    ]


# Roles; PIPL Art. 13/18 break-glass; Art. 45 the patient's own record --------------------


def test_only_clinical_roles_read_clinical_records() -> None:
    for role in ("regulator", "admin"):
        assert codes(decide(request(role=role), facts(consent()))) == ["role.not_permitted"]
    assert decide(request(role="nurse"), facts(consent())).permit


def test_a_patient_reads_their_own_record_whole_and_no_one_elses() -> None:
    own = decide(request("PATRQT", role="patient", own=True), facts())
    assert own.permit and own.categories == CATEGORIES and own.legal_basis == "data-subject"
    assert codes(decide(request("PATRQT", role="patient"), facts())) == ["role.not_own_record"]


def test_break_glass_needs_a_live_grant_of_this_person_for_this_patient() -> None:
    grant = BreakGlassGrant(uuid4(), "doctor-1", PATIENT, "unconscious", NOW + timedelta(hours=1))
    granted = decide(request("ETREAT"), facts(grants=(grant,), care=()))
    assert granted.break_glass and granted.permit
    assert granted.obligations == ["flag-break-glass", "regulator-review", "notify-patient"]
    assert granted.categories == GENERAL  # sensitive classes stay withheld
    assert codes(decide(request("ETREAT"), facts())) == ["break_glass.no_grant"]
    assert not decide(request("ETREAT", person="doctor-2"), facts(grants=(grant,))).permit
    later = NOW + timedelta(hours=2)
    assert not decide(request("ETREAT", at=later), facts(grants=(grant,))).permit


def test_break_glass_reasons_are_checked() -> None:
    with pytest.raises(InvalidBreakGlass):
        check_break_glass("because", "送医时昏迷，需紧急查看既往病史")
    with pytest.raises(InvalidBreakGlass):
        check_break_glass("unconscious", "急")
    assert check_break_glass("unconscious", " 送医时昏迷，需紧急查看既往病史 ") == (
        "unconscious",
        "送医时昏迷，需紧急查看既往病史",
    )


def test_a_policy_cannot_let_a_purpose_see_sensitive_categories_without_consent() -> None:
    with pytest.raises(ValueError, match="sensitive"):
        AccessPolicy(purposes={"TREAT": frozenset({"hiv"})})
    with pytest.raises(ValueError, match="sensitive"):
        AccessPolicy(break_glass_categories=frozenset({"hiv"}))
    with pytest.raises(ValueError, match="regulators"):
        AccessPolicy(clinical_roles=("physician", "regulator"))


def test_the_policy_fingerprint_is_stable_and_changes_with_the_policy() -> None:
    same = AccessPolicy()
    assert same.fingerprint() == DEFAULT_POLICY.fingerprint()
    assert AccessPolicy(recent_results=timedelta(days=30)).fingerprint() != same.fingerprint()
    assert AccessPolicy(clinical_roles=("physician",)).fingerprint() != same.fingerprint()


# One member's claim does not bind the consortium ---------------------------------------------


def recorded_by(institution: str, c: ConsentRecord, confirmed: int | None) -> ConsentRecord:
    return replace(c, institution=institution, confirmed_position=confirmed)


THC_CARE = (
    CareRelationship("encounter:e-9", "thc-1", NOW - timedelta(days=10), NOW + timedelta(days=355)),
)


def test_an_unconfirmed_broad_consent_opens_nothing_beyond_its_institution() -> None:
    broad = recorded_by("thc-1", consent(scope=("*",), categories=(*GENERAL, "hiv")), None)
    # The county, whose physician it would open the record to, is refused and told why.
    refused = decide(request(), facts(broad))
    assert not refused.permit and codes(refused) == ["consent.unconfirmed"]
    # The recording township reads its own general categories for care, not the HIV result.
    own = decide(request(institution="thc-1"), facts(broad, care=THC_CARE))
    assert own.permit and "hiv" not in own.categories and "diagnosis" in own.categories


def test_an_unconfirmed_research_consent_permits_no_research() -> None:
    research = recorded_by("thc-1", consent(scope=("thc-1",), purposes=("HRESCH",)), None)
    decision = decide(
        request("HRESCH", institution="thc-1"),
        facts(research, care=THC_CARE, research=project(institutions=("thc-1",))),
    )
    assert not decision.permit and codes(decision)[0] == "consent.unconfirmed"


def test_a_confirmed_consent_counts_in_full_from_its_confirmation_on() -> None:
    broad = recorded_by("thc-1", consent(scope=("*",), categories=(*GENERAL, "hiv")), 50)
    before = decide(request(position=40), facts(broad))
    assert not before.permit and codes(before) == ["consent.unconfirmed"]
    after = decide(request(position=60), facts(broad))
    assert after.permit and "hiv" in after.categories


@given(
    scope=st.lists(st.sampled_from(["*", "county", "thc-1", "vc-1"]), min_size=1, max_size=3),
    categories=st.none() | st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=4),
    purposes=st.lists(st.sampled_from(["TREAT", "HRESCH"]), min_size=1, max_size=2),
    reader=st.sampled_from(["county", "thc-1", "vc-1"]),
    purpose=st.sampled_from(["TREAT", "HRESCH"]),
)
def test_no_unconfirmed_claim_of_a_member_lets_another_read_or_a_sensitive_category_through(
    scope: list[str],
    categories: list[str] | None,
    purposes: list[str],
    reader: str,
    purpose: str,
) -> None:
    claim = recorded_by(
        "thc-1",
        consent(
            scope=tuple(scope),
            purposes=tuple(purposes),
            categories=tuple(categories) if categories else None,
        ),
        None,
    )
    everyone_cares = tuple(
        CareRelationship(f"encounter:{i}", i, NOW - timedelta(days=1), NOW + timedelta(days=30))
        for i in ("county", "thc-1", "vc-1")
    )
    study = project(institutions=("county", "thc-1", "vc-1"), categories=CATEGORIES)
    decision = decide(
        request(purpose, institution=reader), facts(claim, care=everyone_cares, research=study)
    )
    if decision.permit:
        assert reader == "thc-1" and purpose != "HRESCH"
        assert not set(decision.categories) & set(SENSITIVE)


# Research: a registered project, its members, its categories; de-identified ----------------


def project(**changes: object) -> ResearchProject:
    base = ResearchProject(
        "HT-2026",
        "县域高血压队列研究",
        "伦审 2026-017",
        ("county",),
        ("diagnosis", "lab"),
        NOW - timedelta(days=30),
        NOW + timedelta(days=300),
        b"salt",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


RESEARCH_CONSENT = consent(purposes=("TREAT", "HRESCH"))


def test_a_research_read_needs_a_registered_running_project_of_the_institution() -> None:
    assert codes(decide(request("HRESCH"), facts(RESEARCH_CONSENT))) == ["research.no_project"]
    ended = project(ends=NOW - timedelta(days=1))
    assert codes(decide(request("HRESCH"), facts(RESEARCH_CONSENT, research=ended))) == [
        "research.inactive"
    ]
    other = project(institutions=("thc-1",))
    assert codes(decide(request("HRESCH"), facts(RESEARCH_CONSENT, research=other))) == [
        "research.not_member"
    ]


def test_a_research_read_gets_the_projects_categories_de_identified() -> None:
    decision = decide(request("HRESCH"), facts(RESEARCH_CONSENT, research=project()))
    assert decision.permit and set(decision.categories) <= {"diagnosis", "lab"}
    assert "de-identify" in decision.obligations
    assert decision.legal_basis is not None and decision.legal_basis.endswith(";research:HT-2026")
    # Without a consent naming research, the project alone opens nothing.
    assert not decide(request("HRESCH"), facts(consent(), research=project())).permit
