"""Bar charts of the county's referral statistics as server-rendered SVG: the geometry only
(the template draws it, with a title, a description and the table of the same numbers beside
it). Pure: numbers in, coordinates out."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40
# One colour per series, distinguishable and each at least 3:1 against the white background.
COLOURS = ("#0b4f9c", "#b35900", "#2e7d32", "#6a1b9a")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: float
    series: int
    colour: str


@dataclass(frozen=True)
class Group:
    label: str
    centre: float
    bars: list[Bar]


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    groups: list[Group]
    ticks: list[tuple[float, str]]  # (y, label) on the value axis
    left: int = LEFT
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM


def _nice_top(largest: float) -> float:
    """The axis's top: the largest value rounded up to 1, 2 or 5 times a power of ten."""
    if largest <= 0:
        return 1.0
    scale = 10 ** (len(str(int(largest))) - 1) if largest >= 1 else 0.1
    for factor in (1, 2, 5, 10):
        if largest <= factor * scale:
            return float(factor * scale)
    return float(10 * scale)


def bar_chart(groups: list[tuple[str, list[float]]]) -> BarChart | None:
    """Grouped bars, one group per label with one bar per series; None without groups."""
    if not groups:
        return None
    series = max(len(values) for _, values in groups)
    top = _nice_top(max((v for _, values in groups for v in values), default=0.0))
    span_x = WIDTH - LEFT - RIGHT
    span_y = HEIGHT - TOP - BOTTOM
    slot = span_x / len(groups)
    bar_width = round(min(48.0, slot * 0.8 / series), 1)
    bottom = HEIGHT - BOTTOM
    drawn = []
    for i, (label, values) in enumerate(groups):
        centre = LEFT + slot * (i + 0.5)
        first = centre - bar_width * len(values) / 2
        bars = []
        for k, value in enumerate(values):
            height = round(span_y * value / top, 1)
            bars.append(
                Bar(
                    round(first + k * bar_width, 1),
                    round(bottom - height, 1),
                    bar_width,
                    height,
                    value,
                    k,
                    COLOURS[k % len(COLOURS)],
                )
            )
        drawn.append(Group(label, round(centre, 1), bars))
    ticks = [(round(bottom - span_y * k / 4, 1), f"{top * k / 4:.3g}") for k in range(5)]
    return BarChart(WIDTH, HEIGHT, drawn, ticks)
