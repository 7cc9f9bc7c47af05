"""Drawing the offline suite's images: shapes on a grid, bar charts, receipts and labels with printed text.

Shapes use exact palette colours and no anti-aliasing, so their true areas are plain pixel counts. Text uses
DejaVu Sans where installed (what Tesseract reads best), else Pillow's built-in scalable font.
"""
from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sport_fast.tools.image import PALETTE

SHAPE_COLOURS = ("red", "green", "blue", "yellow")
GRID = (4, 4)             # columns x rows of 80 x 60 cells in a 320 x 240 image: the midlines are cell edges
CELL = (80, 60)
_FONT_FILE = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def font(size: int):
    return ImageFont.truetype(str(_FONT_FILE), size) if _FONT_FILE.is_file() else ImageFont.load_default(size=size)


def draw_shapes(path: Path, rng: random.Random, fill_prob: float = 0.55) -> list[dict]:
    """Shapes, at most one per cell and never touching; returns [{colour, kind, cell, area}]."""
    im = Image.new("RGB", (GRID[0] * CELL[0], GRID[1] * CELL[1]), "white")
    draw = ImageDraw.Draw(im)
    shapes = []
    for cx in range(GRID[0]):
        for cy in range(GRID[1]):
            if rng.random() > fill_prob:
                continue
            w, h = rng.randint(16, CELL[0] - 12), rng.randint(14, CELL[1] - 10)
            x0, y0 = cx * CELL[0] + rng.randint(4, CELL[0] - w - 4), cy * CELL[1] + rng.randint(4, CELL[1] - h - 4)
            colour, kind = rng.choice(SHAPE_COLOURS), rng.choice(("rectangle", "ellipse"))
            getattr(draw, kind)([x0, y0, x0 + w - 1, y0 + h - 1], fill=PALETTE[colour])
            shapes.append({"colour": colour, "kind": kind, "cell": (cx, cy), "box": (x0, y0, x0 + w, y0 + h)})
    im.save(path)
    _measure_areas(im, shapes)
    return shapes


def _measure_areas(im: Image.Image, shapes: list[dict]) -> None:
    """Each shape's area: its colour's pixels inside its own box (boxes never overlap)."""
    px = im.load()
    for s in shapes:
        x0, y0, x1, y1 = s["box"]
        rgb = PALETTE[s["colour"]]
        s["area"] = sum(px[x, y] == rgb for x in range(x0, x1) for y in range(y0, y1))


def draw_bars(path: Path, heights: list[int], colours: list[str]) -> None:
    im = Image.new("RGB", (60 * len(heights) + 40, 240), "white")
    draw = ImageDraw.Draw(im)
    draw.line([(15, 225), (im.width - 10, 225)], fill=PALETTE["black"], width=2)
    for i, (h, colour) in enumerate(zip(heights, colours)):
        x0 = 30 + 60 * i
        draw.rectangle([x0, 224 - h, x0 + 35, 224], fill=PALETTE[colour])
    im.save(path)


def draw_text_lines(path: Path, lines: list[str], width: int = 460, size: int = 26) -> None:
    f = font(size)
    im = Image.new("RGB", (width, 30 + (size + 16) * len(lines)), "white")
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        draw.text((20, 15 + (size + 16) * i), line, fill=PALETTE["black"], font=f)
    im.save(path)
