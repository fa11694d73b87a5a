"""Who a referral step is told to, and what the notification says (and never says: no clinical
content). Synthetic data only."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from exchange.ingest.notifier import message, recipients
from tests.unit.referral_rows import (
    BACK_REFERRAL,
    CONTENT,
    COUNTY,
    PATIENT,
    REASON,
    REFERENCE,
    RID,
    T0,
    TOWNSHIP,
    step_row,
)

# Notifications ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status", "actor", "told"),
    [
        ("request", "requested", TOWNSHIP, [COUNTY]),
        ("accept", "accepted", COUNTY, [TOWNSHIP]),
        ("reject", "rejected", COUNTY, [TOWNSHIP]),
        ("arrive", "arrived", COUNTY, [TOWNSHIP]),
        ("complete", "completed", COUNTY, [TOWNSHIP]),
        ("back_refer", "back_referred", COUNTY, [TOWNSHIP]),
        ("cancel", "cancelled", TOWNSHIP, [COUNTY]),
        ("follow_up", "followed_up", TOWNSHIP, [COUNTY]),
        ("expire", "expired", None, [TOWNSHIP, COUNTY]),
        ("mark_overdue", "back_referred", None, [TOWNSHIP, COUNTY]),
    ],
)
def test_each_step_is_told_to_the_other_party(
    action: str, status: str, actor: str | None, told: list[str]
) -> None:
    assert sorted(recipients(step_row(action, status, actor))) == sorted(told)


def test_a_downward_referral_tells_the_township_of_the_request() -> None:
    # The county hospital refers down to the township: the township is the receiver now.
    down = dict(direction="downward", from_institution=COUNTY, to_institution=TOWNSHIP)
    assert recipients(step_row("request", "requested", COUNTY, **down)) == [TOWNSHIP]
    assert recipients(step_row("accept", "accepted", TOWNSHIP, **down)) == [COUNTY]


def test_a_notification_says_where_the_referral_stands() -> None:
    due = T0 + timedelta(days=21)
    row = step_row(
        "back_refer",
        "back_referred",
        COUNTY,
        position=57,
        version=5,
        deadline=None,
        follow_up_due=due,
    )
    assert message(row) == {
        "type": "referral",
        "event": "back_refer",
        "status": "back_referred",
        "referral": REFERENCE,
        "referral_id": str(RID),
        "service_request": f"ServiceRequest/{RID}",
        "patient_id": str(PATIENT),
        "direction": "upward",
        "urgency": "urgent",
        "from_institution": TOWNSHIP,
        "to_institution": COUNTY,
        "by": "receiver",
        "at": (T0 + timedelta(hours=1)).isoformat(),
        "deadline": None,
        "follow_up_due": due.isoformat(),
        "follow_up_overdue": False,
        "position": 57,
    }
    assert message(row)["follow_up_due"] == "2026-03-23T10:15:00+08:00"


@pytest.mark.parametrize(
    ("action", "status", "actor", "by"),
    [
        ("request", "requested", TOWNSHIP, "sender"),
        ("cancel", "cancelled", TOWNSHIP, "sender"),
        ("accept", "accepted", COUNTY, "receiver"),
        ("expire", "expired", None, "exchange"),
        ("mark_overdue", "back_referred", None, "exchange"),
    ],
)
def test_a_notification_names_the_party_that_acted(
    action: str, status: str, actor: str | None, by: str
) -> None:
    assert message(step_row(action, status, actor))["by"] == by


def test_a_notification_carries_no_clinical_content() -> None:
    # Even if the row carried the referral's content, the message would not pass it on.
    row = step_row(
        "request", "requested", TOWNSHIP, reason=REASON, content=CONTENT, details=BACK_REFERRAL
    )
    body = message(row)
    clinical = {
        "reason",
        "history",
        "treatment",
        "diagnosis",
        "impression",
        "content",
        "details",
        "results",
        "follow_up_plan",
        "notes",
    }
    assert not clinical & set(body)
    text = json.dumps(body, ensure_ascii=False)
    for value in (REASON, CONTENT["history"], "脑梗死", "I63.9", "李建国"):
        assert value not in text
