"""A lab test's trend as a server-rendered SVG line chart: the geometry only (the template
draws it, with a title and the table of the same values beside it)."""

from __future__ import annotations

from dataclasses import dataclass

from exchange.pages.physician_record import LabTest, numeric

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: float
    when: str | None


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    points: list[Point]
    line: str  # the polyline's points attribute
    ticks: list[tuple[float, str]]  # (y, label) on the value axis
    band: tuple[float, float] | None  # the reference range's (top y, height), if known
    left: int = LEFT
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM


def chart(test: LabTest) -> Chart | None:
    """The chart of a test's numeric results in time order, or None if it has none."""
    values = [(row.when, v) for row in test.rows if (v := numeric(row)) is not None]
    if not values:
        return None
    known = [v for _, v in values] + [b for b in (test.low, test.high) if b is not None]
    low, high = min(known), max(known)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    low, high = low - pad, high + pad
    span_x = WIDTH - LEFT - RIGHT
    span_y = HEIGHT - TOP - BOTTOM

    def y_of(value: float) -> float:
        return round(TOP + span_y * (high - value) / (high - low), 1)

    step = span_x / (len(values) - 1) if len(values) > 1 else 0.0
    points = [
        Point(round(LEFT + (i * step if len(values) > 1 else span_x / 2), 1), y_of(v), v, when)
        for i, (when, v) in enumerate(values)
    ]
    ticks = [
        (y_of(low + (high - low) * k / 4), f"{low + (high - low) * k / 4:.3g}") for k in range(5)
    ]
    band = None
    if test.low is not None and test.high is not None:
        band = (y_of(test.high), round(y_of(test.low) - y_of(test.high), 1))
    return Chart(
        WIDTH,
        HEIGHT,
        points,
        " ".join(f"{p.x},{p.y}" for p in points),
        ticks,
        band,
    )
