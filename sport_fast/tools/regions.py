"""Boxes as the agent writes them, in the conventions of the benchmarks, turned into pixel boxes.

A box is ``(x1, y1, x2, y2)``: left, top, right, bottom, with the right column and bottom row excluded
(``crop``'s and GTA's convention: GTA's tools cut ``image[y1:y2, x1:x2]``). Accepted spellings:

- a list or tuple of four numbers: ``[10, 20, 110, 90]``;
- a string, as GTA's tools take it: ``"(10, 20, 110, 90)"`` or ``"[10, 20, 110, 90]"``;
- a detection: a dict with a ``"box"`` or ``"bbox"`` entry (what ``detect_objects`` and ``count_objects`` return);
- fractions of the width and height: all four values in [0, 1] and at least one written as a float
  (``[0.25, 0.0, 0.75, 1.0]``); whole numbers are always pixels, so ``[0, 0, 1, 1]`` is one pixel.

Fractional pixel values (a detector's 173.91) round outwards, to the smallest pixel box that contains them.
"""
from __future__ import annotations

import math
import numbers
import re

_NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def parse_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in pixels of a ``width`` x ``height`` image; ValueError if it is not a box
    inside the image."""
    values, fractional = _numbers(box)
    if fractional and all(0.0 <= v <= 1.0 for v in values):
        values = [values[0] * width, values[1] * height, values[2] * width, values[3] * height]
    left, top = math.floor(values[0] + 1e-6), math.floor(values[1] + 1e-6)
    right, bottom = math.ceil(values[2] - 1e-6), math.ceil(values[3] - 1e-6)
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(f"box {box} is not inside the {width}x{height} image (boxes are (x1, y1, x2, y2) with "
                         "x1 < x2 and y1 < y2)")
    return left, top, right, bottom


def _numbers(box) -> tuple[list[float], bool]:
    """The four values, and whether any was written as a float."""
    if isinstance(box, dict):
        inner = box.get("box", box.get("bbox"))
        if inner is None:
            raise ValueError(f"box {box} has no 'box' or 'bbox' entry")
        box = inner
    if isinstance(box, str):
        tokens = _NUMBER.findall(box)
        values, fractional = [float(t) for t in tokens], any(c in t for t in tokens for c in ".eE")
    elif isinstance(box, (list, tuple)) and all(_is_number(v) for v in box):
        values, fractional = [float(v) for v in box], any(not isinstance(v, numbers.Integral) for v in box)
    else:
        raise ValueError(f"box {box!r} is not four numbers (x1, y1, x2, y2)")
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"box {box!r} is not four numbers (x1, y1, x2, y2)")
    return values, fractional


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)   # numpy scalars register as Real too


def parse_point(point) -> tuple[float, float]:
    """(x, y) from ``[x, y]``, ``(x, y)`` or the string ``"(x, y)"``."""
    if isinstance(point, str):
        values = [float(t) for t in _NUMBER.findall(point)]
    elif isinstance(point, (list, tuple)) and all(_is_number(v) for v in point):
        values = [float(v) for v in point]
    else:
        values = []
    if len(values) != 2:
        raise ValueError(f"point {point!r} is not two numbers (x, y)")
    return values[0], values[1]


def clip_box(box, width: int, height: int) -> list[float]:
    """A model's (x1, y1, x2, y2) clipped to the image, to 0.1 pixel: detectors may overshoot the edges."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(min(max(x1, 0.0), width), 1), round(min(max(y1, 0.0), height), 1),
            round(min(max(x2, 0.0), width), 1), round(min(max(y2, 0.0), height), 1)]
