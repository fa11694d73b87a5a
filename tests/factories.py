"""Synthetic test data shared by the suites: resident IDs, canonical items, envelopes, referrals.

Every resident is synthetic (valid GB 11643 numbers from make_resident_id, made-up names).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from domain.referral import URGENCIES
from domain.referral_items import ACTIONS
from domain.resident_id import PROVINCES, make_resident_id

REGION = "341122"
NOTICE = hashlib.sha256("测试告知书 v1".encode()).hexdigest()
SIGNED_FORM = hashlib.sha256("测试知情同意书 签字扫描件".encode()).hexdigest()
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def resident(n: int, born: date = date(1958, 3, 14)) -> str:
    """The n-th synthetic resident ID (valid check digit)."""
    return make_resident_id(REGION, born + timedelta(days=n), n % 1000)


def patient_item(
    rid: str,
    source_id: str,
    name: str = "李建国",
    mrn: str | None = None,
    gender: str | None = None,
) -> dict[str, Any]:
    """A Patient item. ``gender`` defaults to the sex the ID's sequence code gives (odd: male),
    so that a synthetic patient carries no data-quality flag unless a test asks for one."""
    ref = {"resident_id": rid, **({"mrn": mrn} if mrn else {})}
    sex = gender or ("male" if int(rid[16]) % 2 else "female")
    payload: dict[str, Any] = {"patient": ref, "name": name, "gender": sex}
    return {"source_id": source_id, "kind": "patient", "payload": payload}


def encounter_item(rid: str, source_id: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "encounter",
        "payload": {
            "patient": {"resident_id": rid},
            "encounter_class": "outpatient",
            "status": "finished",
            "start": T0.isoformat(),
            "end": (T0 + timedelta(minutes=20)).isoformat(),
            "department": "全科",
        },
    }


def condition_item(rid: str, source_id: str, code: str = "I10") -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "condition",
        "payload": {
            "patient": {"resident_id": rid},
            "code": {
                "system": "http://hl7.org/fhir/sid/icd-10",
                "code": code,
                "version": "国家临床版2.0",
                "display": "原发性高血压",
            },
        },
    }


def observation_item(rid: str, source_id: str, value: str = "148") -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "observation",
        "payload": {
            "patient": {"resident_id": rid},
            "code": {"system": "http://loinc.org", "code": "8480-6", "display": "收缩压"},
            "status": "final",
            "category": "vital-signs",
            "effective": T0.isoformat(),
            "value_quantity": {"value": value, "unit": "mmHg", "code": "mm[Hg]"},
        },
    }


def consent_item(
    rid: str,
    source_id: str,
    *,
    scope: list[str] | None = None,
    consent_type: str = "separate",
    purposes: list[str] | None = None,
    signed: bool = True,
) -> dict[str, Any]:
    """A consent the institution recorded; ``signed``: with the patient's signed form (its
    hash and signing method), so it counts beyond the institution at once."""
    payload: dict[str, Any] = {
        "patient": {"resident_id": rid},
        "consent_type": consent_type,
        "scope": scope or ["*"],
        "purposes": purposes or ["TREAT"],
        "valid_from": (T0 - timedelta(days=30)).isoformat(),
        "valid_to": (T0 + timedelta(days=3650)).isoformat(),
        "notice_sha256": NOTICE,
    }
    if signed:
        payload["signed_document"] = {"sha256": SIGNED_FORM, "method": "handwritten-scan"}
    return {"source_id": source_id, "kind": "consent", "payload": payload}


def record_items(rid: str, prefix: str, *, consent: bool = False) -> list[dict[str, Any]]:
    """A visit's worth of items for one resident from one institution."""
    items = [
        patient_item(rid, f"{prefix}-pat", mrn=f"{prefix}-MRN"),
        encounter_item(rid, f"{prefix}-enc"),
        condition_item(rid, f"{prefix}-dx"),
        observation_item(rid, f"{prefix}-sbp"),
    ]
    if consent:
        items.append(consent_item(rid, f"{prefix}-consent"))
    return items


# Hypothesis strategies ------------------------------------------------------------------------

# A region code under any GB/T 2260 province-level division (only those digits are checked).
regions = st.one_of(
    st.sampled_from(["110105", "341122", "440300", "510104"]),
    st.tuples(st.sampled_from(sorted(PROVINCES)), st.integers(0, 9999)).map(
        lambda pair: f"{pair[0]}{pair[1]:04d}"
    ),
)
resident_ids = st.builds(
    make_resident_id,
    regions,
    st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)),
    st.integers(min_value=0, max_value=999),
)
# The first two digits of no province-level division: the division rule refuses them.
invented_provinces = st.integers(0, 99).map("{:02d}".format).filter(lambda p: p not in PROVINCES)
genders = st.sampled_from(["male", "female", "other", "unknown"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

# A village clinic's edge node: how long a submission waited in it (up to twice the 30 days a
# submission may age), and how far the clinic's clock is off the exchange's (either way).
_US_PER_DAY = 86_400 * 10**6
edge_outages = st.integers(0, 60 * _US_PER_DAY).map(lambda us: timedelta(microseconds=us))
clock_offsets = st.integers(-_US_PER_DAY // 2, _US_PER_DAY // 2).map(
    lambda us: timedelta(microseconds=us)
)

# A referral command: (action, acting party, time since the previous command). The parties are
# roles, mapped to institution codes by REFERRAL_PARTIES; "mark_overdue" ignores its party.
REFERRAL_SENDER, REFERRAL_RECEIVER = "THC-01", "CH-01"
REFERRAL_PARTIES: dict[str, str | None] = {
    "sender": REFERRAL_SENDER,
    "receiver": REFERRAL_RECEIVER,
    "third": "THC-02",
    "exchange": None,
}
referral_urgencies = st.sampled_from(URGENCIES)
# The policy's default spans are drawn often, so that commands land exactly on a deadline.
referral_offsets = st.one_of(
    st.sampled_from(
        [
            timedelta(0),
            timedelta(hours=2),
            timedelta(hours=24),
            timedelta(hours=72),
            timedelta(days=7),
            timedelta(days=14),
            timedelta(days=30),
        ]
    ),
    st.integers(min_value=0, max_value=20 * 24 * 60).map(lambda m: timedelta(minutes=m)),
)
referral_command = st.tuples(
    st.sampled_from([*ACTIONS, "expire", "mark_overdue"]),
    st.sampled_from(list(REFERRAL_PARTIES)),
    referral_offsets,
)


def visit_batch(institution: str, key: Any, first: int, count: int) -> list[dict[str, Any]]:
    """``count`` signed submissions from ``institution``, residents ``first`` onwards: each a
    visit with one measurement, as an adapter sends them batch after batch."""
    from datetime import UTC, datetime

    from adapters.envelope import build_envelope

    batch = []
    for n in range(first, first + count):
        rid = resident(n)
        batch.append(
            build_envelope(
                institution=institution,
                key=key,
                sent_at=datetime.now(UTC),
                items=[encounter_item(rid, f"e{n}"), observation_item(rid, f"o{n}")],
            )
        )
    return batch
