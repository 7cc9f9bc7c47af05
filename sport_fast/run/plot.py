"""``rounds.png``: whether the loop is teaching, at a glance.

The first row of panels is the held-out evaluation (AnsAcc, ToolAcc, CodeExec) from the evaluation before the
first round through every round, each point with its 95% bootstrap interval, rates on [0, 1]. The second row:
pairs per round, the share of steps that yielded a pair, judge abstentions, and the training loss. Drawn
with Pillow (already a dependency); the x axis names the points (``initial``, ``r0``, ``r1``, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

RATES = ("heldout_AnsAcc", "heldout_ToolAcc", "heldout_CodeExec")
OTHERS = ("pairs", "steps_with_a_pair", "abstention_rate", "loss_mean")
PANEL = (300, 170)
INSET = 16  # pixels between the frame and the first and last points
BLUE, GRAY = (31, 119, 180), (120, 120, 120)


def plot_rounds(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    w, h = PANEL
    img = Image.new("RGB", (4 * w, 2 * h), "white")
    draw = ImageDraw.Draw(img)
    labels = ["initial" if r["round"] == "initial" else f"r{r['round']}" for r in rows]
    for i, key in enumerate(RATES):
        points = [(x, r.get(key), r.get(f"{key}_ci95")) for x, r in enumerate(rows)]
        _panel(draw, i * w, 0, key.removeprefix("heldout_") + " (held-out)", points, labels, (0.0, 1.0))
    for i, key in enumerate(OTHERS):
        points = [(x, r.get(key), None) for x, r in enumerate(rows) if r["round"] != "initial"]
        _panel(draw, i * w, h, key, points, labels, _range([v for _, v, _ in points]))
    tmp = path.with_name("." + path.name + ".tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)


def _range(values) -> tuple[float, float]:
    """A y range that holds the values, from 0 for non-negative ones, padded so that one value is visible."""
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    lo, hi = (0.0 if min(values) >= 0 else min(values)), max(values)
    return (lo, hi * 1.1) if hi > lo else (lo - 0.5, lo + 0.5)


@dataclass(frozen=True)
class Frame:
    """Where a panel's points go: point i of n at ``x(i)`` (inset from the frame, so an interval at the first or
    last point is not hidden by it), value v at ``y(v)`` on ``y_range``."""
    x0: int
    y0: int
    n: int
    y_range: tuple[float, float]

    @property
    def box(self) -> tuple[int, int, int, int]:
        w, h = PANEL
        return self.x0 + 44, self.y0 + 22, self.x0 + w - 12, self.y0 + h - 26

    def x(self, i: int) -> float:
        left, _, right, _ = self.box
        left, right = left + INSET, right - INSET
        return left + i / (self.n - 1) * (right - left) if self.n > 1 else (left + right) / 2

    def y(self, v: float) -> float:
        _, top, _, bottom = self.box
        lo, hi = self.y_range
        return bottom - (float(v) - lo) / (hi - lo) * (bottom - top)


def _panel(draw, x0, y0, title, points, labels, y_range) -> None:
    frame = Frame(x0, y0, len(labels), y_range)
    left, top, right, bottom = frame.box
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((x0 + 6, y0 + 4), title, fill="black")
    lo, hi = y_range
    draw.text((x0 + 2, top - 4), f"{hi:.3g}", fill=GRAY)
    draw.text((x0 + 2, bottom - 8), f"{lo:.3g}", fill=GRAY)
    for i, label in enumerate(labels):
        draw.text((frame.x(i) - 12, bottom + 6), label, fill=GRAY)
    coords = [(frame.x(i), frame.y(v)) for i, v, _ in points if isinstance(v, (int, float))]
    if len(coords) > 1:
        draw.line(coords, fill=BLUE, width=2)
    for i, v, ci in points:
        if ci:
            draw.line([(frame.x(i), frame.y(ci[0])), (frame.x(i), frame.y(ci[1]))], fill=BLUE, width=1)
        if isinstance(v, (int, float)):
            cx, cy = frame.x(i), frame.y(v)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=BLUE)
