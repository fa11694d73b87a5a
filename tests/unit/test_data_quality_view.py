"""The data-quality view's arithmetic, without a database: the county's days, the window, a
batch's counts, and which institutions the information centre is told to look at first."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from exchange.api.data_quality import DEFAULT_WINDOW, WINDOWS, window_of
from exchange.api.responses import Refused
from exchange.pages.regulator_quality import attention, clock_state, daily_chart, quiet_for, view
from projections.intake import COUNTY_ZONE, Intake, county_day, window_start

NOW = datetime(2026, 12, 6, 1, 30, tzinfo=UTC)  # 09:30 in the county


def test_the_county_day_is_beijing_time() -> None:
    assert county_day(datetime(2026, 12, 5, 15, 59, tzinfo=UTC)) == date(2026, 12, 5)
    assert county_day(datetime(2026, 12, 5, 16, 0, tzinfo=UTC)) == date(2026, 12, 6)


def test_a_window_of_days_ends_today_and_starts_at_the_county_midnight() -> None:
    first, since = window_start(date(2026, 12, 6), 7)
    assert first == date(2026, 11, 30)
    assert since == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    assert since.astimezone(COUNTY_ZONE).hour == 0
    assert window_start(date(2026, 12, 6), 1)[0] == date(2026, 12, 6)


def test_a_batch_counts_submissions_and_items_per_institution_and_day() -> None:
    intake = Intake()
    assert not intake
    late = datetime(2026, 12, 5, 15, 30, tzinfo=UTC)  # 23:30 in the county
    after_midnight = late + timedelta(hours=1)
    intake.accepted("thc-east", late, ["patient", "encounter", "observation", "observation"])
    intake.accepted("thc-east", after_midnight, ["observation"])
    intake.accepted("county", late - timedelta(minutes=5), ["consent"])
    intake.accepted("county", late - timedelta(minutes=9), ["consent"])
    assert intake
    assert intake.submissions == {
        (date(2026, 12, 5), "thc-east"): 1,
        (date(2026, 12, 6), "thc-east"): 1,
        (date(2026, 12, 5), "county"): 2,
    }
    assert intake.items[(date(2026, 12, 5), "thc-east", "observation")] == 2
    assert intake.items[(date(2026, 12, 6), "thc-east", "observation")] == 1
    # The latest of a day, whatever order the events came in.
    assert intake.last[(date(2026, 12, 5), "county")] == late - timedelta(minutes=5)


def test_the_window_asked_for_is_one_offered() -> None:
    assert window_of(None) == window_of("") == DEFAULT_WINDOW
    assert [window_of(str(w)) for w in WINDOWS] == list(WINDOWS)
    for wrong in ("5", "0", "-1", "7.0", "seven", "1000000000000"):
        with pytest.raises(Refused) as refused:
            window_of(wrong)
        assert refused.value.status == 400 and refused.value.code == "search.days"


def row(level: str = "township_health_centre", **values: object) -> dict[str, object]:
    return {
        "institution": "thc-east",
        "name": "东城镇卫生院",
        "level": level,
        "accepted": 0,
        "rejected": 0,
        "items": 0,
        "items_by_kind": {},
        "rejection_codes": [],
        "last_accepted_at": None,
        "last_rejected_at": None,
        "last_submission_at": None,
        "edge_clock": None,
        **values,
    }


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def test_who_needs_attention_first() -> None:
    assert attention(row(), NOW) == ["never"]
    assert attention(row(last_submission_at=ago(hours=25)), NOW) == ["silent"]
    assert attention(row(accepted=10, last_submission_at=ago(hours=23)), NOW) == []
    # More than 5% refused: 1 in 20 is not, 2 in 20 is.
    assert attention(row(accepted=19, rejected=1, last_submission_at=ago(hours=1)), NOW) == []
    assert attention(row(accepted=18, rejected=2, last_submission_at=ago(hours=1)), NOW) == [
        "refusals"
    ]
    assert attention(row(rejected=3, last_submission_at=ago(days=3)), NOW) == [
        "silent",
        "refusals",
    ]
    # The exchange's own desks send when a person acts: never silent, but refusals count.
    assert attention(row("patient_portal"), NOW) == []
    assert attention(row("patient_portal", rejected=1, last_submission_at=ago(days=9)), NOW) == [
        "refusals"
    ]


def edge_clock(skew: float | None, flagged_in_window: bool) -> dict[str, object]:
    """An edge clock as the API gives it: ``skew`` seconds ahead now (None: in step)."""
    return {
        "edge_received_at": ago(minutes=10),
        "measured_at": ago(minutes=10),
        "clock_skew_s": skew,
        "flagged_since": ago(hours=2) if skew is not None else None,
        "last_flagged_at": ago(minutes=10) if flagged_in_window else None,
        "flagged_in_window": flagged_in_window,
    }


def test_a_clinic_whose_edge_clock_runs_ahead_or_behind_needs_attention() -> None:
    sending = {"accepted": 10, "last_submission_at": ago(minutes=10)}
    level = "village_clinic"
    assert attention(row(level, **sending, edge_clock=edge_clock(None, False)), NOW) == []
    assert attention(row(level, **sending, edge_clock=edge_clock(3600.0, True)), NOW) == ["clock"]
    # Set right since, but it ran ahead within the window: still worth a look.
    assert attention(row(level, **sending, edge_clock=edge_clock(None, True)), NOW) == ["clock_was"]
    assert clock_state(None) is None
    assert clock_state(edge_clock(None, True)) == ("in step", {})
    assert clock_state(edge_clock(3599.6, True)) == ("%(minutes)d min ahead", {"minutes": 60})
    # A slow clock, as the clinic's edge measured it from its receipts: behind.
    behind = edge_clock(-1260.0, True)
    assert attention(row(level, **sending, edge_clock=behind), NOW) == ["clock"]
    assert clock_state(behind) == ("%(minutes)d min behind", {"minutes": 21})


def test_how_long_an_institution_has_been_quiet() -> None:
    assert quiet_for(None) is None
    assert quiet_for(timedelta(seconds=30)) == ("%(minutes)d min", {"minutes": 0})
    assert quiet_for(timedelta(hours=2, minutes=5)) == (
        "%(hours)d h %(minutes)d min",
        {"hours": 2, "minutes": 5},
    )
    assert quiet_for(timedelta(days=3, hours=4, minutes=59)) == (
        "%(days)d d %(hours)d h",
        {"days": 3, "hours": 4},
    )
    # A clock a little behind the last submission's stamp is not a negative time.
    assert quiet_for(timedelta(seconds=-5)) == ("%(minutes)d min", {"minutes": 0})


def test_the_view_orders_codes_and_kinds_and_keeps_three_codes() -> None:
    codes = [{"code": c, "submissions": n} for c, n in (("a", 9), ("b", 5), ("c", 2), ("d", 1))]
    [shown] = view(
        {
            "institutions": [
                row(
                    accepted=96,
                    rejected=4,
                    items_by_kind={"observation": 300, "encounter": 90, "allergy": 90},
                    rejection_codes=codes,
                    last_submission_at=ago(minutes=3),
                )
            ]
        },
        NOW,
    )
    assert shown["refused_share"] == pytest.approx(0.04)
    assert [c["code"] for c in shown["top_codes"]] == ["a", "b", "c"]
    assert shown["more_codes"] == 1
    assert shown["kinds"] == [("observation", 300), ("allergy", 90), ("encounter", 90)]
    assert shown["quiet"] == ("%(minutes)d min", {"minutes": 3})
    assert shown["attention"] == []


def test_the_daily_chart_labels_a_day_in_every_few() -> None:
    days = [
        {"day": (date(2026, 9, 8) + timedelta(days=n)).isoformat(), "accepted": n, "rejected": 1}
        for n in range(90)
    ]
    chart = daily_chart(days)
    assert chart is not None and len(chart.groups) == 90
    labelled = [g.label for g in chart.groups if g.label]
    assert labelled[0] == "09-08" and 9 <= len(labelled) <= 11
    assert len(daily_chart(days[:7]).groups) == 7  # type: ignore[union-attr]
    assert all(g.label for g in daily_chart(days[:7]).groups)  # type: ignore[union-attr]


def test_the_page_is_freed_as_it_is_rendered_without_the_cycle_collector() -> None:
    """Its template defines macros and imports the chart's with its context (each closes over
    the render context, which holds it): ``render`` drops the context's variables once done,
    so the page's rows go by reference counting, not at the collector's next pause."""
    import gc

    from exchange.pages.physician_record import LEVEL_LABELS
    from exchange.pages.regulator_quality import ATTENTION, KIND_LABELS
    from exchange.pages.render import environment, render

    rows = view(
        {
            "institutions": [
                row(
                    accepted=90,
                    rejected=10,
                    items_by_kind={"encounter": 3},
                    rejection_codes=[{"code": "resident_id.check_digit", "submissions": 10}],
                    last_submission_at=ago(hours=30),
                    edge_clock=edge_clock(3600.0, True),
                )
            ]
        },
        NOW,
    )
    days = [{"day": f"2026-12-0{n}", "accepted": n, "rejected": 1} for n in range(1, 8)]
    template = environment("zh-CN").get_template("regulator_quality.html")
    values = {
        "lang": "zh-CN",
        "csrf": "",
        "path": "/app/audit/data-quality",
        "days": 7,
        "first_day": "2026-12-01",
        "windows": [(7, "Last 7 days")],
        "rows": rows,
        "desks": [],
        "needing": rows,
        "attention_labels": ATTENTION,
        "level_labels": LEVEL_LABELS,
        "kind_labels": KIND_LABELS,
        "daily": days,
        "daily_chart": daily_chart(days),
        "totals": {"accepted": 90, "rejected": 10, "items": 3},
    }
    render(template, **values)  # templates compiled and cached before the count
    gc.collect()
    gc.disable()
    try:
        html = render(template, **values)
        del values, rows
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert "resident_id.check_digit" in html and "超过一天未上报" in html
    assert "快 60 分钟" in html and "边缘节点时钟偏差超过 5 分钟" in html
    assert "<svg" in html
