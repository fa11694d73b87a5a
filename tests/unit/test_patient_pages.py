"""The patient's "who read my record" page names what each access did: every route's action
is either worded for the patient or held apart here as one that records no other person's use
of the patient's record; a route added without either fails."""

from __future__ import annotations

from typing import Any

from exchange.api.app import api_routes
from exchange.pages.app import page_routes
from exchange.pages.i18n import translations
from exchange.pages.patient_views import ACTIONS, OTHER_ACTION, access_rows

# Actions that never stand in a patient's list as someone else's use of their record.
NOT_ABOUT_A_PATIENT = {
    "metadata": "the server's capabilities",
    "healthz": "the process is alive",
    "readyz": "the process is ready",
    "metrics": "counters, no patient",
    "audit-head": "the audit log's signed head",
    "audit-proof": "hashes of the audit log",
    "page.audit-head": "the audit log's signed head",
    "page.audit-proof": "hashes of the audit log",
    "data-quality": "counts and problem codes",
    "page.data-quality": "counts and problem codes",
    "referral-statistics": "counts and durations",
    "page.referral-statistics": "counts and durations",
    "research.projects": "the register of research projects",
    "research.register": "the register of research projects",
    "page.home": "the start page",
    # The patient's own: their list leaves out their own looks.
    "consent-give": "only the patient gives a consent here",
    "page.consent-give": "only the patient gives a consent here",
    "portal.notices": "the patient's own notices",
    "page.reads": "the patient's own list",
}


class _Nothing:
    def __getattr__(self, name: str) -> Any:
        return None


def test_every_action_is_worded_for_the_patient_or_held_apart() -> None:
    actions = {r.access.action for r in [*api_routes(_Nothing()), *page_routes(_Nothing())]}  # type: ignore[arg-type]
    unworded = sorted(actions - set(ACTIONS) - set(NOT_ABOUT_A_PATIENT))
    assert unworded == [], unworded
    assert not set(ACTIONS) & set(NOT_ABOUT_A_PATIENT)
    assert sorted((set(ACTIONS) | set(NOT_ABOUT_A_PATIENT)) - actions) == []  # none stale
    chinese = translations("zh-CN")
    assert all(chinese.gettext(words) != words for words in ACTIONS.values())


def event(seq: int, action: str, who: str = "dr-wang", purpose: str = "TREAT") -> dict[str, Any]:
    return {
        "id": str(seq),
        "recorded": "2026-12-06T02:00:00+00:00",
        "subtype": [{"code": action}],
        "outcome": "0",
        "agent": [
            {
                "who": {"identifier": {"value": who}},
                "role": [{"text": "physician"}],
                "location": {"identifier": {"value": "dongcheng-thc"}},
            }
        ],
        "purposeOfEvent": [{"coding": [{"code": purpose}]}],
    }


def test_an_emergency_access_is_marked_whether_by_the_api_or_the_page() -> None:
    me = "9b2e8a2e-0000-4000-8000-000000000001"
    rows = access_rows(
        [
            event(1, "page.record"),
            event(2, "page.break-glass"),
            event(3, "break-glass"),
            event(4, "read", purpose="ETREAT"),
            event(5, "page.record", who=me),  # the patient's own look: left out
            event(6, "some-future-action"),
        ],
        {"dongcheng-thc": "东城镇卫生院"},
        me,
    )
    assert [(r["seq"], r["emergency"]) for r in rows] == [
        (6, False),
        (4, True),
        (3, True),
        (2, True),
        (1, False),
    ]
    assert rows[0]["what"] == OTHER_ACTION
    assert rows[-1]["institution"] == "东城镇卫生院"
