"""Offline tools against independent references: pixel counts drawn by hand, Fractions, the csv module."""
import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sport_fast.tools import Tool, ToolRegistry, default_registry
from sport_fast.tools import calculator as calc
from sport_fast.tools import files, image, ocr

RED, BLUE = image.PALETTE["red"], image.PALETTE["blue"]


def draw_shapes(path, seed):
    """Random non-touching rectangles of two colours; returns the true (colour -> list of areas)."""
    rng = random.Random(seed)
    im = Image.new("RGB", (300, 200), "white")
    d = ImageDraw.Draw(im)
    truth = {"red": [], "blue": []}
    for gx in range(5):
        for gy in range(3):
            if rng.random() < 0.5:
                continue
            w, h = rng.randint(8, 50), rng.randint(8, 55)
            x0, y0 = gx * 60 + rng.randint(1, 58 - w) if w < 57 else gx * 60 + 1, gy * 66 + rng.randint(1, 64 - h)
            colour = rng.choice(["red", "blue"])
            d.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=image.PALETTE[colour])
            truth[colour].append(w * h)
    im.save(path)
    return truth


@pytest.mark.parametrize("seed", range(5))
def test_count_objects_matches_the_drawn_truth(tmp_path, seed):
    path = str(tmp_path / "s.png")
    truth = draw_shapes(path, seed)
    for colour in ("red", "blue"):
        got = image.count_objects(path, color=colour, min_area=1)
        assert got["count"] == len(truth[colour])
        assert sorted(o["area"] for o in got["objects"]) == sorted(truth[colour])
    everything = image.count_objects(path, min_area=1)
    assert everything["count"] == len(truth["red"]) + len(truth["blue"])
    json.dumps(everything)


def test_components_join_a_u_shape_and_keep_diagonals_apart(tmp_path):
    mask = np.zeros((6, 7), bool)
    mask[0:5, 0] = mask[0:5, 4] = mask[4, 0:5] = True   # a U: one region though its arms meet late
    mask[5, 6] = True                                    # touches (4, 5)? no: (4,4)-(5,6) are not adjacent
    regions = image._components(mask)
    assert sorted(r["area"] for r in regions) == [1, 13]


def test_crop_size_and_colour_stats(tmp_path):
    path = str(tmp_path / "a.png")
    im = Image.new("RGB", (40, 20), image.PALETTE["blue"])
    ImageDraw.Draw(im).rectangle([0, 0, 9, 19], fill=RED)
    im.save(path)
    assert image.image_size(path) == {"width": 40, "height": 20, "mode": "RGB"}
    stats = image.color_stats(path)
    assert stats["colors"] == [{"color": "blue", "fraction": 0.75}, {"color": "red", "fraction": 0.25}]
    out = image.crop(path, [0, 0, 10, 20], out=str(tmp_path / "c.png"))
    assert image.color_stats(out)["colors"] == [{"color": "red", "fraction": 1.0}]
    with pytest.raises(ValueError, match="not inside"):
        image.crop(path, [0, 0, 50, 20])
    with pytest.raises(ValueError, match="unknown colour"):
        image.count_objects(path, color="chartreuse")


@pytest.mark.parametrize("expr, want", [("0.1 + 0.2", 0.3), ("2^10 / 4", 256), ("(3 + 4) * 5 // 2", 17),
                                        ("sqrt(16) + abs(-2)", 6), ("12.50 + 3.25 + 4.75", 20.5), ("-3 ** 2", -9),
                                        ("7 % 4", 3), ("max(1, 5, 3) - min(4, 2)", 3), ("round(2.675, 2)", 2.68)])  # exact tie, half to even; float round gives 2.67
def test_calculator_is_exact(expr, want):
    assert calc.calculator(expr) == want


@pytest.mark.parametrize("expr", ["__import__('os')", "open('x')", "9 ** 9 ** 9", "1 +", "x + 1"])
def test_calculator_refuses_what_is_not_arithmetic(expr):
    with pytest.raises(ValueError, match="calculator"):
        calc.calculator(expr)


def test_read_file_kinds(tmp_path):
    (tmp_path / "t.csv").write_text("name,qty\napple,3\npear,5\n")
    (tmp_path / "t.json").write_text('{"a": [1, 2]}')
    (tmp_path / "t.txt").write_text("hello")
    assert files.read_file(str(tmp_path / "t.csv")) == [{"name": "apple", "qty": "3"}, {"name": "pear", "qty": "5"}]
    assert files.read_file(str(tmp_path / "t.json")) == {"a": [1, 2]}
    assert files.read_file(str(tmp_path / "t.txt")) == "hello"


def test_read_file_pdf_text(tmp_path):
    pytest.importorskip("pypdf")
    im = Image.new("RGB", (10, 10), "white")
    im.save(tmp_path / "x.pdf")  # Pillow writes a valid PDF with one page and no text layer
    assert files.read_file(str(tmp_path / "x.pdf")).strip() == ""


def test_ocr_reads_printed_text_or_says_it_is_missing(tmp_path, monkeypatch):
    from PIL import ImageFont
    path = tmp_path / "r.png"
    im = Image.new("RGB", (420, 70), "white")
    ImageDraw.Draw(im).text((10, 15), "TOTAL 42.50", fill="black", font=ImageFont.load_default(size=32))
    im.save(path)
    if ocr.shutil.which("tesseract"):
        assert "TOTAL 42.50" in ocr.ocr(str(path))
    monkeypatch.setattr(ocr.shutil, "which", lambda _: None)
    with pytest.raises(RuntimeError, match="Tesseract is not installed"):
        ocr.ocr(str(path))


def test_registry_renders_signatures_and_refuses_bad_tools():
    reg = default_registry()
    text = reg.render()
    assert "- count_objects(path: str, color: str | None = None, min_area: int = 20)" in text
    assert text.endswith("- final_answer(answer): end the task with this answer")
    assert "visual_qa" not in reg and "web_search" not in reg, "model-backed tools must be absent unless configured"
    with pytest.raises(ValueError, match="already defined"):
        reg.add(Tool("crop", image.crop, "again"))
    with pytest.raises(ValueError, match="module-level"):
        ToolRegistry([Tool("f", lambda x: x, "lambda")])
    with_vqa = default_registry(vqa=lambda image, question, workdir: "a cat")
    assert with_vqa.host_names() == ["visual_qa"]
