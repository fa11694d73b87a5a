"""The consortium's data quality over HTTP, as an information centre reads it each morning:
what each institution sent and the exchange accepted (by kind), what it refused and why, and
when each last sent; the same after the read models are rebuilt from the ledger; a window of
days that reads its own days only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from exchange.api.data_quality import WINDOWS
from projections.intake import COUNTY_ZONE
from tests.factories import record_items, resident
from tests.integration.conftest import Running
from tests.integration.referral_steps import accepted, consortium, refused
from tests.integration.test_walking_skeleton import token


def wrong_check_digit(rid: str) -> str:
    return rid[:-1] + ("1" if rid[-1] != "1" else "2")


async def figures(exchange: Running, days: int | None = None) -> dict[str, Any]:
    headers = token(exchange, "inspector-sun", "health-bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        answer = await http.get(
            "/audit/data-quality", headers=headers, params={"days": days} if days else None
        )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def by_code(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["institution"]: r for r in doc["institutions"]}


async def test_what_each_institution_sent_and_was_refused(exchange: Running) -> None:
    await consortium(exchange)  # thc-east, county, vc-peach
    before = datetime.now(UTC)
    await accepted(exchange, "thc-east", record_items(resident(1), "e1", consent=True))
    await accepted(exchange, "thc-east", record_items(resident(2), "e2"))
    await accepted(exchange, "county", record_items(resident(1), "c1"))
    problem = await refused(
        exchange, "vc-peach", record_items(wrong_check_digit(resident(3)), "v1")
    )
    await exchange.settle()

    doc = await figures(exchange)
    assert doc["days"] == 7
    today = datetime.now(COUNTY_ZONE).date()
    assert doc["from"] == (today - timedelta(days=6)).isoformat()
    rows = by_code(doc)
    # The members, and the exchange's own desks (the portal's, the steward's, the
    # regulator's), which sent nothing.
    assert {"thc-east", "county", "vc-peach"} < set(rows)
    assert all(
        r["accepted"] == r["rejected"] == 0
        for r in doc["institutions"]
        if r["institution"] not in {"thc-east", "county", "vc-peach"}
    )
    east, county, peach = rows["thc-east"], rows["county"], rows["vc-peach"]
    assert (east["accepted"], east["rejected"], east["items"]) == (2, 0, 9)
    assert east["items_by_kind"] == {
        "condition": 2,
        "consent": 1,
        "encounter": 2,
        "observation": 2,
        "patient": 2,
    }
    assert (county["accepted"], county["items"]) == (1, 4)
    assert (peach["accepted"], peach["rejected"], peach["items"]) == (0, 1, 0)
    assert peach["rejection_codes"] == [{"code": problem["code"], "submissions": 1}]
    assert peach["last_accepted_at"] is None
    assert datetime.fromisoformat(peach["last_rejected_at"]) >= before
    assert peach["last_submission_at"] == peach["last_rejected_at"]
    assert datetime.fromisoformat(east["last_submission_at"]) >= before
    assert east["last_rejected_at"] is None
    # The county's days: today holds all four submissions.
    assert [d["day"] for d in doc["daily"]][-1] == today.isoformat()
    assert doc["daily"][-1] == {"day": today.isoformat(), "accepted": 3, "rejected": 1}
    assert sum(d["accepted"] + d["rejected"] for d in doc["daily"][:-1]) == 0
    # Counts and codes only: no resident ID, no submission id, no patient.
    text = str(doc)
    assert resident(1) not in text and "e1-" not in text and "patient_id" not in text

    # A rebuild of the read models makes the same figures from the ledger.
    await exchange.rt.projection().rebuild()
    await exchange.settle()
    assert await figures(exchange) == doc


async def test_a_window_reads_its_own_days(exchange: Running) -> None:
    await consortium(exchange)
    await accepted(exchange, "thc-east", record_items(resident(5), "w1"))
    await exchange.settle()
    pool = exchange.rt.pool
    today = datetime.now(COUNTY_ZONE).date()
    long_ago = today - timedelta(days=10)
    at = datetime.combine(long_ago, datetime.min.time(), COUNTY_ZONE) + timedelta(hours=9)
    # Ten days ago: 40 submissions of 400 observations, and a refusal.
    await pool.execute("INSERT INTO intake_days VALUES ($1, 'thc-east', 40, 400, $2)", long_ago, at)
    await pool.execute(
        "INSERT INTO intake_kinds VALUES ($1, 'thc-east', 'observation', 400)", long_ago
    )
    await pool.execute(
        "INSERT INTO ledger_rejected_submissions VALUES (gen_random_uuid(), 'county', "
        "'old-1', $1, ARRAY['item.invalid'])",
        at,
    )
    week = by_code(await figures(exchange, 7))
    month = await figures(exchange, 30)
    assert week["thc-east"]["accepted"] == 1
    assert week["thc-east"]["items_by_kind"].get("observation") == 1
    assert week["county"]["rejected"] == 0 and week["county"]["rejection_codes"] == []
    assert by_code(month)["thc-east"]["accepted"] == 41
    assert by_code(month)["thc-east"]["items_by_kind"]["observation"] == 401
    assert by_code(month)["county"]["rejection_codes"] == [
        {"code": "item.invalid", "submissions": 1}
    ]
    assert len(month["daily"]) == 30
    assert {"day": long_ago.isoformat(), "accepted": 40, "rejected": 1} in month["daily"]
    # The last refusal counts whatever the window.
    assert week["county"]["last_rejected_at"] is not None


async def test_the_window_is_one_of_the_offered_and_only_oversight_reads_it(
    exchange: Running,
) -> None:
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        regulator = token(exchange, "inspector-sun", "health-bureau", "regulator")
        for days in ("5", "0", "-7", "week", "365"):
            answer = await http.get("/audit/data-quality", headers=regulator, params={"days": days})
            assert answer.status_code == 400, days
            issue = answer.json()["issue"][0]
            assert issue["details"]["coding"][0]["code"] == "search.days"
            assert all(str(w) in issue["details"]["text"] for w in WINDOWS)
        for days in WINDOWS:
            answer = await http.get("/audit/data-quality", headers=regulator, params={"days": days})
            assert answer.status_code == 200 and answer.json()["days"] == days
            assert len(answer.json()["daily"]) == days
        admin = token(exchange, "it-centre", "health-bureau", "admin")
        assert (await http.get("/audit/data-quality", headers=admin)).status_code == 200
        doctor = token(exchange, "doctor-liu", "thc-east", "physician")
        assert (await http.get("/audit/data-quality", headers=doctor)).status_code == 403
