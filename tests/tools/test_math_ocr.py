"""math_ocr on expressions drawn with Pillow, checked against the value of the expression that was drawn;
the text-to-Python step on its own."""
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from sport_fast.tools.ocr import math_ocr, python_expression
from sport_fast.tools.solver import solver

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="Tesseract is not installed")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")   # has × and −; Pillow's own font lacks them


def draw(path, text, font=None, size=(0, 0), at=(20, 20)):
    font = font or ImageFont.load_default(size=40)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    im = Image.new("RGB", (max(size[0], right + 2 * at[0]), max(size[1], bottom + 2 * at[1])), "white")
    ImageDraw.Draw(im).text(at, text, fill="black", font=font)
    im.save(path)
    return path


@needs_tesseract
@pytest.mark.parametrize("text, value", [("(12 + 3) * 4 - 6 / 2", 57), ("45 + 37 = ?", 82), ("125 / 4 + 0.75", 32),
                                         ("2 * (7 - 3) * 11", 88)])
def test_printed_arithmetic_is_read_and_evaluated(tmp_path, text, value):
    got = math_ocr(draw(tmp_path / "m.png", text))
    assert got["value"] == value, got


@needs_tesseract
@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu Sans is not installed")
def test_times_and_minus_signs_become_python_operators(tmp_path):
    got = math_ocr(draw(tmp_path / "m.png", "17 × 23 − 41", font=ImageFont.truetype(str(DEJAVU), 40)))
    assert got["expression"] == "17*23-41" and got["value"] == 350, got


@needs_tesseract
def test_an_equation_is_read_for_the_solver_and_has_no_value(tmp_path):
    got = math_ocr(draw(tmp_path / "m.png", "3x + 5 = 20"))
    assert got["expression"] == "3x+5=20" and got["value"] is None, got
    assert solver(got["expression"])["solutions"] == [{"x": "5"}]


@needs_tesseract
def test_a_box_reads_only_its_region(tmp_path):
    path = draw(tmp_path / "m.png", "7 + 8", size=(600, 200), at=(20, 20))
    with Image.open(path) as im:
        ImageDraw.Draw(im).text((300, 120), "100 - 1", fill="black", font=ImageFont.load_default(size=40))
        im.save(path)
    assert math_ocr(path, box=[0, 0, 280, 100])["value"] == 15
    assert math_ocr(path, box="(280, 100, 600, 200)")["value"] == 99


@pytest.mark.parametrize("text, want", [("17 x 23", "17*23"), ("3x + 5", "3x+5"), ("12 ÷ 4", "12/4"),
                                        ("[2 + 3] × 4", "(2+3)*4"), ("9 − 4\n+ 1", "9-4+1"), ("(1+2)x(3)", "(1+2)*(3)")])
def test_python_expression(text, want):
    assert python_expression(text) == want
