"""Marking up images (GTA's DrawBox and AddText): each call writes a new PNG and returns its path.

Outputs are PNG whatever the input, so what was drawn is exactly what is read back. Colour names are the
``image.PALETTE`` ones first (so ``count_objects``/``color_stats`` name them back), then any colour Pillow
knows (``"navy"``, ``"#ff8800"``). The font is Pillow's built-in one, sized from the image's height.
Positions follow GTA's AddText: a point is the text's left-bottom corner, or a code of two letters,
l/m/r (left, middle, right) then t/m/b (top, middle, bottom), placed a margin of 1/20 of the smaller side
in from the edges.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from sport_fast.tools.image import PALETTE
from sport_fast.tools.regions import parse_box, parse_point

POSITIONS = ("lt", "lm", "lb", "mt", "mm", "mb", "rt", "rm", "rb")


def draw_box(image: str, box: list | str, label: str | None = None, color: str = "red") -> str:
    """draw a box outline (and a label) on a copy of an image; returns the copy's path

    Args:
        image: the image file
        box: (x1, y1, x2, y2) in pixels, right and bottom excluded, like crop's box
        label: text written just above the box (below it when there is no room above)
        color: a colour name or "#rrggbb"

    The outline is drawn inside the box, ``line_width`` pixels thick; the inside is left untouched. The copy
    is ``<input's stem>_box.png`` (``_box_2.png``, ... when that exists).
    """
    with Image.open(image) as im:
        im = im.convert("RGB")
    x1, y1, x2, y2 = parse_box(box, im.width, im.height)
    rgb, draw = color_rgb(color), ImageDraw.Draw(im)
    draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=rgb, width=min(line_width(im), x2 - x1, y2 - y1))
    if label:
        font = _font(im)
        _, top, _, bottom = draw.textbbox((0, 0), label, font=font, anchor="ld")
        above = y1 - 2 >= bottom - top
        draw.text((x1, y1 - 2) if above else (x1, y2 + 2), label, fill=rgb, font=font, anchor="ld" if above else "la")
    return _save(im, output_name(image, "box"))


def add_text(image: str, text: str, position: list | str = "lt", color: str = "red") -> str:
    """write text on a copy of an image; returns the copy's path

    Args:
        image: the image file
        text: what to write (may have several lines)
        position: (x, y) of the text's left-bottom corner, or lt, lm, lb, mt, mm, mb, rt, rm, rb
            (l/m/r: left/middle/right, then t/m/b: top/middle/bottom)
        color: a colour name or "#rrggbb"

    The font is 1/18 of the image's height; the copy is ``<input's stem>_text.png`` (or ``_text_2.png``, ...).
    """
    with Image.open(image) as im:
        im = im.convert("RGB")
    font = _font(im)
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    x, y = _text_origin(position, im.size, (right - left, bottom - top))
    draw.multiline_text((x - left, y - top), text, fill=color_rgb(color), font=font)
    return _save(im, output_name(image, "text"))


def _text_origin(position, image_size: tuple[int, int], text_size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the text's ink box for a position code or a left-bottom point."""
    (w, h), (tw, th) = image_size, text_size
    if isinstance(position, str) and position.strip().lower() in POSITIONS:
        horizontal, vertical = position.strip().lower()
        margin = max(2, min(w, h) // 20)
        x = {"l": margin, "m": (w - tw) // 2, "r": w - margin - tw}[horizontal]
        y = {"t": margin, "m": (h - th) // 2, "b": h - margin - th}[vertical]
        return x, y
    try:
        px, py = parse_point(position)
    except ValueError:
        raise ValueError(f"position {position!r} is neither (x, y) nor one of {', '.join(POSITIONS)}") from None
    return round(px), round(py) - th


def color_rgb(color: str) -> tuple[int, int, int]:
    if color.lower() in PALETTE:
        return PALETTE[color.lower()]
    try:
        return ImageColor.getrgb(color)[:3]
    except ValueError:
        raise ValueError(f"unknown colour {color!r}: use a name such as red or blue, or '#rrggbb'") from None


def line_width(im: Image.Image) -> int:
    return max(2, round(max(im.size) / 150))


def output_name(source: str, tag: str) -> str:
    """``<stem>_<tag>.png`` beside nothing else of that name: ``_2``, ``_3``, ... are added as needed."""
    stem = Path(source).stem
    name, n = f"{stem}_{tag}.png", 1
    while Path(name).exists():
        n += 1
        name = f"{stem}_{tag}_{n}.png"
    return name


def _font(im: Image.Image) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(10, round(im.height / 18)))


def _save(im: Image.Image, out: str) -> str:
    im.save(out, format="PNG")
    return out
