"""draw_box, add_text and the box conventions, against pixels: masks built by hand, and Tesseract reading the
drawn text back."""
import shutil

import numpy as np
import pytest
from PIL import Image

from sport_fast.tools import drawing, image, ocr
from sport_fast.tools.regions import parse_box

RED = np.array(image.PALETTE["red"])
HAS_TESSERACT = shutil.which("tesseract") is not None


@pytest.fixture
def noise(tmp_path, monkeypatch):
    """A 120x80 image of random pixels (so "untouched" means something), in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save("noise.png")
    return pixels


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def ring(shape, box, width) -> np.ndarray:
    """Mask of the band ``width`` pixels wide just inside box [x1, x2) x [y1, y2)."""
    x1, y1, x2, y2 = box
    outer, inner = np.zeros(shape, bool), np.zeros(shape, bool)
    outer[y1:y2, x1:x2] = True
    inner[y1 + width:y2 - width, x1 + width:x2 - width] = True
    return outer & ~inner


def test_draw_box_draws_the_outline_inside_the_box_and_nothing_else(noise):
    box = (20, 15, 90, 60)
    out = drawing.draw_box("noise.png", list(box))
    got, width = pixels(out), 2   # line width: max(2, 120 / 150)
    band = ring(got.shape[:2], box, width)
    assert out == "noise_box.png" and got.shape == noise.shape
    assert (got[band] == RED).all(), "the outline is not red all round the inside of the box"
    assert (got[~band] == noise[~band]).all(), f"{(got[~band] != noise[~band]).any(-1).sum()} pixels off the outline changed"


@pytest.mark.parametrize("spelling", ["(20, 15, 90, 60)", "[20, 15, 90, 60]", [20.0 / 120, 15 / 80.0, 0.75, 0.75],
                                      {"box": [20, 15, 90, 60], "score": 0.9}, (20.0, 15.0, 89.2, 59.01)])
def test_every_box_spelling_draws_the_same_box(noise, spelling):
    """GTA's strings, fractions of the size, a detection dict, and sub-pixel values rounding outwards."""
    reference = pixels(drawing.draw_box("noise.png", [20, 15, 90, 60]))
    assert (pixels(drawing.draw_box("noise.png", spelling)) == reference).all()


def test_outputs_get_fresh_names_and_are_png(noise):
    Image.fromarray(noise).save("photo.jpg")
    first, second = drawing.draw_box("photo.jpg", [0, 0, 10, 10]), drawing.draw_box("photo.jpg", [0, 0, 10, 10])
    assert (first, second) == ("photo_box.png", "photo_box_2.png")
    with Image.open(first) as im:
        assert im.format == "PNG"


def test_draw_box_label_goes_above_the_box_or_below_when_there_is_no_room(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (400, 300), "white").save("w.png")
    box = (50, 80, 300, 250)
    got = pixels(drawing.draw_box("w.png", list(box), label="TARGET"))
    changed = (got != 255).any(-1) & ~ring(got.shape[:2], box, 3)
    ys, xs = np.nonzero(changed)
    assert ys.max() < box[1] and xs.min() >= box[0] - 1, "label pixels are not above the box, from its left edge"
    if HAS_TESSERACT:
        assert "TARGET" in ocr.ocr("w_box.png", [box[0], 0, box[2], box[1]])
    below = pixels(drawing.draw_box("w.png", [50, 0, 300, 200], label="TARGET"))
    ys, _ = np.nonzero((below != 255).any(-1) & ~ring(below.shape[:2], (50, 0, 300, 200), 3))
    assert ys.min() >= 200, "with no room above, the label is not below the box"


def test_add_text_at_a_point_puts_the_text_left_bottom_corner_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (400, 200), "white").save("w.png")
    got = pixels(drawing.add_text("w.png", "HELLO 42", "(30, 120)", color="blue"))
    ys, xs = np.nonzero((got != 255).any(-1))
    assert abs(xs.min() - 30) <= 1 and abs(ys.max() - 119) <= 1, (xs.min(), ys.max())
    darkest = got[ys, xs][np.argmax(np.abs(got[ys, xs] - 255).sum(-1))]
    assert np.abs(darkest - np.array(image.PALETTE["blue"])).max() <= 10, f"text colour {darkest} is not blue"
    if HAS_TESSERACT:
        assert "HELLO 42" in ocr.ocr("w_text.png")


@pytest.mark.parametrize("code", drawing.POSITIONS)
def test_add_text_position_codes_place_the_text_a_margin_from_the_named_edges(tmp_path, monkeypatch, code):
    monkeypatch.chdir(tmp_path)
    w, h, margin = 400, 240, 12   # margin: 1/20 of the smaller side
    Image.new("RGB", (w, h), "white").save("w.png")
    got = pixels(drawing.add_text("w.png", "Label\ntwo lines", code))
    ys, xs = np.nonzero((got != 255).any(-1))
    left, top, right, bottom = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    expect_x = {"l": (left, margin), "m": ((left + right) / 2, w / 2), "r": (right, w - margin)}[code[0]]
    expect_y = {"t": (top, margin), "m": ((top + bottom) / 2, h / 2), "b": (bottom, h - margin)}[code[1]]
    assert abs(expect_x[0] - expect_x[1]) <= 2 and abs(expect_y[0] - expect_y[1]) <= 2, (code, left, top, right, bottom)


def test_bad_arguments_are_refused_with_a_reason(noise):
    with pytest.raises(ValueError, match="not inside"):
        drawing.draw_box("noise.png", [0, 0, 500, 10])
    with pytest.raises(ValueError, match="four numbers"):
        drawing.draw_box("noise.png", "the dog")
    with pytest.raises(ValueError, match="unknown colour"):
        drawing.draw_box("noise.png", [0, 0, 5, 5], color="blurple")
    with pytest.raises(ValueError, match="neither"):
        drawing.add_text("noise.png", "x", "top left")


def test_crop_takes_gta_boxes_and_keeps_todays_calls(noise):
    today = pixels(image.crop("noise.png", [20, 15, 90, 60], out="a.png"))
    assert (today == noise[15:60, 20:90]).all()
    for spelling in ("(20, 15, 90, 60)", [1 / 6, 0.1875, 0.75, 0.75], {"bbox": [20, 15, 90, 60]}):
        assert (pixels(image.crop("noise.png", spelling, out="b.png")) == today).all(), spelling
    assert image.color_stats("noise.png", "(20, 15, 90, 60)") == image.color_stats("a.png")


@pytest.mark.parametrize("box, want", [([0, 0, 1, 1], (0, 0, 1, 1)), ([0.0, 0.0, 1.0, 1.0], (0, 0, 120, 80)),
                                       ("0.5,0.5,1,1", (60, 40, 120, 80)), ([10.2, 3.9, 20.5, 7.0], (10, 3, 21, 7)),
                                       (np.array([1, 2, 3, 4]).tolist(), (1, 2, 3, 4))])
def test_parse_box_conventions(box, want):
    """Whole numbers are pixels (so [0, 0, 1, 1] is one pixel); floats in [0, 1] are fractions."""
    assert parse_box(box, 120, 80) == want
