"""OCR through the Tesseract command-line program, when it is installed (``make`` installs it where it can).

``math_ocr`` reads one printed expression or equation: Tesseract restricted to the characters of arithmetic
and single-letter variables (which removes the stray spaces and look-alike letters it otherwise reads), then
the reading is turned into Python syntax (``17x23`` and ``17 × 23`` are products; ``−`` is a minus) and
evaluated exactly by ``calculator`` when it is plain arithmetic. What Tesseract cannot read: handwriting,
stacked fractions, exponents set as superscripts, and symbols the font draws as boxes.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Iterator

from PIL import Image

from sport_fast.tools.calculator import calculator
from sport_fast.tools.regions import parse_box

MATH_CHARACTERS = "0123456789+-*/=()[].,^?×÷−abcdefghijklmnopqrstuvwxyz"
_TIMES = re.compile(r"(?<=[\d)])\s*[x×X]\s*(?=[\d(])")


def ocr(path: str, box: list | str | None = None) -> str:
    """text printed in an image (or in a box of it), read by Tesseract

    Args:
        path: the image file
        box: only this region (x1, y1, x2, y2), like crop's box
    """
    with _image(path, box) as im:
        return _tesseract(im, 2, [])[0]


def math_ocr(path: str, box: list | str | None = None) -> dict:
    """printed math read from an image: {"text", "expression" (Python syntax), "value" (None unless arithmetic)}

    Args:
        path: the image file
        box: only this region (x1, y1, x2, y2), like crop's box

    Read at the image's own scale and at twice it, keeping the reading Tesseract is surer of: doubling helps
    small print, and misreads large glyphs (a 7 becomes /7).
    """
    whitelist = ["-c", f"tessedit_char_whitelist={MATH_CHARACTERS}"]
    with _image(path, box) as im:
        text, _ = max((_tesseract(im, scale, whitelist) for scale in (1, 2)), key=lambda reading: reading[1])
    expression = python_expression(text)
    return {"text": text, "expression": expression, "value": _value(expression)}


def python_expression(text: str) -> str:
    """OCR'd math in Python syntax: one line, operators ASCII, products explicit, ``= ?`` kept as ``=?``."""
    line = " ".join(text.split())
    line = line.replace("−", "-").replace("–", "-").replace("÷", "/").replace("[", "(").replace("]", ")")
    line = _TIMES.sub("*", line)
    return line.replace("×", "*").replace(" ", "")


def _value(expression: str) -> int | float | None:
    """The exact value of plain arithmetic (a trailing ``=`` or ``=?`` dropped); None for anything else."""
    body = re.sub(r"=\??$", "", expression)
    if not body or "=" in body:
        return None
    try:
        return calculator(body)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None


@contextmanager
def _image(path: str, box) -> Iterator[Image.Image]:
    with Image.open(path) as im:
        im = im.convert("RGB")
        yield im.crop(parse_box(box, im.width, im.height)) if box is not None else im


def _tesseract(im: Image.Image, scale: int, extra: list[str]) -> tuple[str, float]:
    """(text, mean word confidence 0-100) of Tesseract reading ``im`` enlarged ``scale`` times."""
    exe = shutil.which("tesseract")
    if exe is None:
        raise RuntimeError("ocr: Tesseract is not installed on this machine (Debian/Ubuntu: apt-get install "
                           "tesseract-ocr)")
    with tempfile.NamedTemporaryFile(suffix=".png", dir=".") as tmp:
        im.resize((im.width * scale, im.height * scale), Image.LANCZOS).save(tmp.name)
        done = subprocess.run([exe, tmp.name, "stdout", "--psm", "6", *extra, "tsv"], capture_output=True,
                              text=True, timeout=60, env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise RuntimeError(f"ocr: tesseract failed: {done.stderr.strip()[-300:]}")
    return _tsv_text(done.stdout)


def _tsv_text(tsv: str) -> tuple[str, float]:
    """Words of Tesseract's TSV joined into their lines, and their mean confidence."""
    lines: dict[tuple, list[str]] = {}
    confidences = []
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 12 and cells[0] == "5" and cells[11].strip():
            lines.setdefault(tuple(cells[1:5]), []).append(cells[11].strip())
            confidences.append(float(cells[10]))
    text = "\n".join(" ".join(words) for words in lines.values())
    return text, sum(confidences) / len(confidences) if confidences else 0.0
