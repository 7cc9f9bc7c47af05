"""The offline suite: multimodal tool-use tasks with known answers, drawn locally, no network.

Seven families, each needing the tools (several steps for most): counting shapes of a colour, the total
area of a colour, shapes in one quadrant (size -> crop -> count), the tallest bar of a chart, a receipt's
total (OCR -> sum), a table's best row (read CSV -> sum), a printed order number (OCR). Answers come from
what was drawn, not from the tools. Each task carries a reference program; a test runs them all through
the sandbox and checks that they reach the stated answer, so every task is solvable with its tools.

Splits: train and held-out tasks come from independent random streams of one seed, so they never share
an image. ``python -m sport_fast.task_suite OUT_DIR --train 40 --heldout 20 --seed 0`` writes one.
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

from sport_fast.tasks.drawing import GRID, SHAPE_COLOURS, draw_bars, draw_shapes, draw_text_lines
from sport_fast.tasks.task import Task, save_tasks

ITEMS = ("COFFEE", "BAGEL", "TEA", "MUFFIN", "JUICE", "SALAD", "SOUP", "COOKIE", "WATER", "TOAST")
PRODUCTS = ("Widget", "Gadget", "Sprocket", "Gizmo", "Doohickey", "Flange")
QUADRANTS = {"top-left": (0, 0), "top-right": (1, 0), "bottom-left": (0, 1), "bottom-right": (1, 1)}


def count_colour(rng: random.Random, folder: Path) -> dict:
    shapes = draw_shapes(folder / "shapes.png", rng)
    colour = rng.choice(SHAPE_COLOURS)
    n = sum(s["colour"] == colour for s in shapes)
    return {"question": f"How many {colour} shapes are there in shapes.png?", "answer": str(n),
            "files": ["shapes.png"], "tools": ["count_objects"],
            "captions": {"shapes.png": _shapes_caption(shapes)},
            "steps": [f"r = count_objects('shapes.png', color='{colour}')\nprint(r['count'])",
                      f"final_answer(count_objects('shapes.png', color='{colour}')['count'])"]}


def colour_area(rng: random.Random, folder: Path) -> dict:
    shapes = draw_shapes(folder / "shapes.png", rng, fill_prob=0.7)
    colour = rng.choice(sorted({s["colour"] for s in shapes}) or ["red"])
    area = sum(s["area"] for s in shapes if s["colour"] == colour)
    return {"question": f"What is the total area, in pixels, of all {colour} shapes in shapes.png?",
            "answer": str(area), "files": ["shapes.png"], "tools": ["count_objects"],
            "captions": {"shapes.png": _shapes_caption(shapes)},
            "steps": [f"objs = count_objects('shapes.png', color='{colour}', min_area=1)['objects']\n"
                      "print([o['area'] for o in objs])",
                      "final_answer(sum(o['area'] for o in objs))"]}


def quadrant_count(rng: random.Random, folder: Path) -> dict:
    shapes = draw_shapes(folder / "shapes.png", rng)
    name, (qx, qy) = rng.choice(sorted(QUADRANTS.items()))
    half = (GRID[0] // 2, GRID[1] // 2)
    n = sum(s["cell"][0] // half[0] == qx and s["cell"][1] // half[1] == qy for s in shapes)
    return {"question": f"How many shapes are in the {name} quarter of shapes.png?", "answer": str(n),
            "files": ["shapes.png"], "tools": ["image_size", "crop", "count_objects"],
            "captions": {"shapes.png": _shapes_caption(shapes)},
            "steps": ["size = image_size('shapes.png')\nprint(size)",
                      f"w, h = size['width'] // 2, size['height'] // 2\nx, y = {qx} * w, {qy} * h\n"
                      "part = crop('shapes.png', [x, y, x + w, y + h])\nprint(part)",
                      "final_answer(count_objects(part)['count'])"]}


def tallest_bar(rng: random.Random, folder: Path) -> dict:
    k = rng.randint(3, 5)
    colours = rng.sample(("red", "green", "blue", "yellow", "orange", "purple"), k)
    heights = rng.sample(range(40, 200, 12), k)
    draw_bars(folder / "chart.png", heights, colours)
    best = colours[heights.index(max(heights))]
    return {"question": "Which colour is the tallest bar in the bar chart chart.png?", "answer": best,
            "files": ["chart.png"], "tools": ["count_objects"],
            "captions": {"chart.png": f"A bar chart on a white background with {k} vertical bars of different "
                                      f"colours ({', '.join(sorted(colours))}) standing on a black base line."},
            "steps": ["bars = [o for o in count_objects('chart.png')['objects'] if o['color'] != 'black']\n"
                      "print([(o['color'], o['bbox'][3] - o['bbox'][1]) for o in bars])",
                      "final_answer(max(bars, key=lambda o: o['bbox'][3] - o['bbox'][1])['color'])"]}


def receipt_total(rng: random.Random, folder: Path) -> dict:
    items = rng.sample(ITEMS, rng.randint(2, 4))
    cents = [rng.randint(100, 1999) for _ in items]
    lines = ["RECEIPT"] + [f"{name} {c // 100}.{c % 100:02d}" for name, c in zip(items, cents)]
    draw_text_lines(folder / "receipt.png", lines)
    total = sum(cents)
    return {"question": "What is the total price of all the items on receipt.png? Answer with the number only.",
            "answer": f"{total // 100}.{total % 100:02d}", "files": ["receipt.png"], "tools": ["ocr", "calculator"],
            "captions": {"receipt.png": "A printed shop receipt in black text on white: a RECEIPT header, then one "
                                        "line per item with its name and price."},
            "steps": ["text = ocr('receipt.png')\nprint(text)",
                      "prices = [line.split()[-1] for line in text.splitlines()[1:]]\n"
                      "final_answer('%.2f' % calculator(' + '.join(prices)))"]}


def table_best(rng: random.Random, folder: Path) -> dict:
    products = rng.sample(PRODUCTS, rng.randint(3, 5))
    rows = [{"product": p, **{f"Q{q}": rng.randint(50, 900) for q in range(1, 5)}} for p in products]
    with open(folder / "sales.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["product", "Q1", "Q2", "Q3", "Q4"])
        writer.writeheader()
        writer.writerows(rows)
    totals = {r["product"]: sum(r[f"Q{q}"] for q in range(1, 5)) for r in rows}
    while list(totals.values()).count(max(totals.values())) > 1:  # a tie has no single answer: redraw
        return table_best(rng, folder)
    best = max(totals, key=totals.get)
    return {"question": "In sales.csv, which product had the highest total sales over the four quarters, and what "
                        "was that total? Answer as: product, total", "answer": f"{best}, {totals[best]}",
            "files": ["sales.csv"], "tools": ["read_file"],
            "captions": {"sales.csv": "A CSV table of quarterly sales (Q1 to Q4) with one row per product."},
            "steps": ["rows = read_file('sales.csv')\nprint(rows)",
                      "totals = {r['product']: sum(int(r[q]) for q in ('Q1', 'Q2', 'Q3', 'Q4')) for r in rows}\n"
                      "best = max(totals, key=totals.get)\nfinal_answer(f'{best}, {totals[best]}')"]}


def order_number(rng: random.Random, folder: Path) -> dict:
    number = rng.randint(10000, 99999)
    lines = [f"ITEMS: {rng.randint(1, 9)}", f"ORDER NO. {number}", f"WEIGHT: {rng.randint(1, 9)}.{rng.randint(0, 9)} KG"]
    rng.shuffle(lines)
    draw_text_lines(folder / "label.png", ["SHIPPING LABEL"] + lines)
    return {"question": "What is the order number printed on label.png?", "answer": str(number),
            "files": ["label.png"], "tools": ["ocr"],
            "captions": {"label.png": "A shipping label in black text on white: a SHIPPING LABEL header and lines "
                                      "giving the number of items, an order number and a weight."},
            "steps": ["text = ocr('label.png')\nprint(text)",
                      "line = [l for l in text.splitlines() if 'ORDER' in l][0]\nfinal_answer(line.split()[-1])"]}


def _shapes_caption(shapes: list[dict]) -> str:
    colours = sorted({s["colour"] for s in shapes})
    kinds = sorted({s["kind"] for s in shapes})
    return (f"A white image with separate coloured shapes ({', '.join(kinds)}) scattered on a grid, in "
            f"{', '.join(colours)}.")


FAMILIES = (count_colour, colour_area, quadrant_count, tallest_bar, receipt_total, table_best, order_number)


def generate_suite(out_dir: str | Path, n_train: int = 28, n_heldout: int = 14, seed: int = 0) -> dict[str, list[Task]]:
    """Write ``train.jsonl`` and ``heldout.jsonl`` (and the files) under ``out_dir``; same seed, same bytes."""
    out = Path(out_dir)
    suite = {}
    for split, n in (("train", n_train), ("heldout", n_heldout)):
        rng = random.Random(f"sport_fast-suite-{seed}-{split}")
        suite[split] = [_task(FAMILIES[i % len(FAMILIES)], rng, out, f"{split}-{i:04d}", split) for i in range(n)]
        save_tasks(out / f"{split}.jsonl", suite[split])
    return suite


def _task(family, rng: random.Random, out: Path, tid: str, split: str) -> Task:
    folder = out / "files" / tid
    folder.mkdir(parents=True, exist_ok=True)
    spec = family(rng, folder)
    return Task(id=f"{tid}-{family.__name__}", question=spec["question"], answer=spec["answer"],
                files={name: str(folder / name) for name in spec["files"]}, expected_tools=spec["tools"],
                split=split, source=f"suite:{family.__name__}", reference_steps=spec["steps"],
                captions=spec["captions"])
