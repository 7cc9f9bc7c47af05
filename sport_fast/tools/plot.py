"""Charts from data, drawn with Pillow (GTA's Plot; no matplotlib): line, bar, scatter and pie, as a PNG.

Layout: a 640x480 canvas; the plot area is the rectangle inside fixed margins. The value axis spans "nice"
ticks (steps of 1, 2 or 5 times a power of ten) that cover the data, and 0 for bar charts, whose bars grow
from 0. So a value ``v`` sits at ``bottom - (v - lo) / (hi - lo) * height``: pixels are linear in the data,
which is what the tests measure. Series are drawn in ``PALETTE`` blue, text in black, grid lines light gray.
"""
from __future__ import annotations

import math
import numbers

from PIL import Image, ImageDraw, ImageFont

from sport_fast.tools.drawing import output_name
from sport_fast.tools.image import PALETTE

SIZE = (640, 480)
MARGINS = (70, 40, 20, 60)   # left, top, right, bottom
SERIES = PALETTE["blue"]
PIE_COLORS = [PALETTE[n] for n in ("blue", "orange", "green", "red", "purple", "cyan", "magenta", "brown",
                                   "yellow", "gray")]
_GRID = (225, 225, 225)
KINDS = ("line", "bar", "scatter", "pie")


def plot(kind: str, y: list, x: list | None = None, title: str | None = None) -> str:
    """line, bar, scatter or pie chart of the data as a PNG; returns its path

    Args:
        kind: "line", "bar", "scatter" or "pie"
        y: the values (numbers)
        x: x positions (line, scatter: numbers) or labels (bar, pie); default 0, 1, 2, ...
        title: written above the chart

    The file is ``plot_<kind>_chart.png`` (``_chart_2.png``, ... when that exists).
    """
    if kind not in KINDS:
        raise ValueError(f"plot: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    values = _numbers(y, "y")
    labels = list(x) if x is not None else list(range(len(values)))
    if len(labels) != len(values):
        raise ValueError(f"plot: x has {len(labels)} entries but y has {len(values)}")
    im = Image.new("RGB", SIZE, "white")
    draw, font = ImageDraw.Draw(im), ImageFont.load_default(size=14)
    if title:
        draw.text((SIZE[0] // 2, 10), str(title), fill="black", font=ImageFont.load_default(size=18), anchor="mt")
    if kind == "pie":
        _pie(draw, font, values, labels)
    elif kind == "bar":
        _bars(draw, font, values, [str(v) for v in labels])
    else:
        _points(draw, font, values, _numbers(labels, "x"), joined=kind == "line")
    name = output_name(f"plot_{kind}", "chart")
    im.save(name, format="PNG")
    return name


def _numbers(values, name: str) -> list[float]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"plot: {name} must be a non-empty list of numbers")
    bad = [v for v in values if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v)]
    if bad:
        raise ValueError(f"plot: {name} must hold finite numbers; got {bad[:3]}")
    return [float(v) for v in values]


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Ticks at a step of 1, 2 or 5 x 10^k covering [lo, hi] with about ``target`` intervals."""
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


class _Axis:
    """Linear map from data to pixels along one side of the plot area."""

    def __init__(self, ticks: list[float], start: float, end: float):
        self.ticks, self.lo, self.hi, self.start, self.end = ticks, ticks[0], ticks[-1], start, end

    def __call__(self, v: float) -> float:
        return self.start + (v - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def _area() -> tuple[int, int, int, int]:
    left, top, right, bottom = MARGINS
    return left, top, SIZE[0] - right, SIZE[1] - bottom


def _value_axis(draw: ImageDraw.ImageDraw, font, values: list[float], with_zero: bool) -> _Axis:
    left, top, right, bottom = _area()
    lo, hi = min(values + [0.0] * with_zero), max(values + [0.0] * with_zero)
    axis = _Axis(nice_ticks(lo, hi), bottom, top)
    for t in axis.ticks:
        py = round(axis(t))
        draw.line([left, py, right, py], fill=_GRID)
        draw.text((left - 6, py), _label(t), fill="black", font=font, anchor="rm")
    draw.line([left, top, left, bottom], fill="black")
    draw.line([left, bottom, right, bottom], fill="black")
    return axis


def _bars(draw, font, values: list[float], labels: list[str]) -> None:
    left, _, right, bottom = _area()
    axis = _value_axis(draw, font, values, with_zero=True)
    slot = (right - left) / len(values)
    zero = round(axis(0.0))
    for i, (v, label) in enumerate(zip(values, labels)):
        x0, x1 = round(left + (i + 0.2) * slot), round(left + (i + 0.8) * slot) - 1
        y = round(axis(v))
        if y != zero:
            draw.rectangle([x0, min(y, zero), x1, max(y, zero) - 1], fill=SERIES)
        draw.text(((x0 + x1) / 2, bottom + 6), label, fill="black", font=font, anchor="mt")


def _points(draw, font, values: list[float], xs: list[float], joined: bool) -> None:
    left, _, right, bottom = _area()
    y_axis = _value_axis(draw, font, values, with_zero=False)
    x_axis = _Axis(nice_ticks(min(xs), max(xs)), left, right)
    for t in x_axis.ticks:
        draw.text((x_axis(t), bottom + 6), _label(t), fill="black", font=font, anchor="mt")
    points = [(x_axis(x), y_axis(v)) for x, v in zip(xs, values)]
    if joined and len(points) > 1:
        draw.line(points, fill=SERIES, width=2)
    for px, py in points:
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=SERIES)


def _pie(draw, font, values: list[float], labels: list) -> None:
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError("plot: a pie needs non-negative values with a positive sum")
    left, top, _, bottom = _area()
    radius = (bottom - top) // 2
    cx, cy = left + radius, top + radius
    angle, total = -90.0, sum(values)
    for i, (v, label) in enumerate(zip(values, labels)):
        colour = PIE_COLORS[i % len(PIE_COLORS)]
        sweep = 360.0 * v / total
        if sweep > 0:
            draw.pieslice([cx - radius, cy - radius, cx + radius, cy + radius], angle, angle + sweep, fill=colour)
        angle += sweep
        ly = top + 10 + 22 * i
        draw.rectangle([cx + radius + 30, ly, cx + radius + 41, ly + 11], fill=colour)
        draw.text((cx + radius + 48, ly + 6), f"{label} ({100 * v / total:.1f}%)", fill="black", font=font,
                  anchor="lm")


def _label(v: float) -> str:
    return f"{v:g}"
