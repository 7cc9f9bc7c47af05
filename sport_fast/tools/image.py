"""Image inspection with Pillow and numpy: size, crop, colour statistics, counting objects.

Colours are named by the nearest entry of ``PALETTE`` (Euclidean in RGB), so anti-aliased edges join the
region they border. ``count_objects`` labels 4-connected regions with a run-length union-find: each row's
runs of matching pixels are found with numpy, and runs that overlap a run of the row above are joined.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from sport_fast.tools.regions import parse_box

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # what counts as an image file
PALETTE = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "red": (220, 30, 30),
    "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (240, 220, 30), "orange": (245, 140, 20),
    "purple": (140, 50, 180), "cyan": (30, 200, 220), "magenta": (230, 40, 200), "brown": (130, 80, 30),
}
_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.int32)


def image_size(path: str) -> dict:
    """width, height and colour mode of an image file

    Args:
        path: the image file
    """
    with Image.open(path) as im:
        return {"width": im.width, "height": im.height, "mode": im.mode}


def crop(path: str, box: list | str, out: str | None = None) -> str:
    """crop box=(x1, y1, x2, y2) out of an image, save it, return the new path

    Args:
        path: the image file
        box: (x1, y1, x2, y2) in pixels, right and bottom excluded, as a list or a string like "(10, 20, 110, 90)";
            or fractions 0-1 of the width and height; or a detection dict with a "box"
        out: name of the file to write (default: derived from the box and the input's name)
    """
    with Image.open(path) as im:
        left, top, right, bottom = parse_box(box, im.width, im.height)
        out = out or f"crop_{left}_{top}_{right}_{bottom}_{path.rsplit('/', 1)[-1]}"
        im.crop((left, top, right, bottom)).save(out)
    return out


def color_stats(path: str, box: list | str | None = None) -> dict:
    """mean colour and the main named colours of an image (or of a box in it)

    Args:
        path: the image file
        box: only this region (x1, y1, x2, y2), like crop's box
    """
    labels, rgb = _labelled(path, box)
    counts = np.bincount(labels.ravel(), minlength=len(_NAMES))
    order = np.argsort(-counts)
    main = [{"color": _NAMES[i], "fraction": round(float(counts[i]) / labels.size, 4)}
            for i in order[:5] if counts[i] > 0]
    return {"mean_rgb": [round(float(v), 1) for v in rgb.reshape(-1, 3).mean(0)], "colors": main}


def count_objects(path: str, color: str | None = None, min_area: int = 20) -> dict:
    """connected regions of one named colour (or of any non-background colour): count, and per region its
    colour, bounding box, area in pixels and centroid

    Args:
        path: the image file
        color: a colour name (black, white, gray, red, green, blue, yellow, orange, purple, cyan, magenta, brown);
            default: every colour but the background (the commonest)
        min_area: smaller regions (in pixels) are ignored

    Regions are 4-connected; bounding boxes are [left, top, right, bottom) like ``crop``'s.
    """
    labels, _ = _labelled(path, None)
    if color is not None and color.lower() not in PALETTE:
        raise ValueError(f"unknown colour {color!r}; known: {', '.join(_NAMES)}")
    wanted = [_NAMES.index(color.lower())] if color else _non_background(labels)
    objects = []
    for idx in wanted:
        for region in _components(labels == idx):
            if region["area"] >= min_area:
                objects.append({"color": _NAMES[idx], **region})
    objects.sort(key=lambda o: (o["bbox"][1], o["bbox"][0]))
    return {"count": len(objects), "objects": objects}


def _labelled(path: str, box) -> tuple[np.ndarray, np.ndarray]:
    """(palette index per pixel (H, W), RGB pixels (H, W, 3))."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        rgb = np.asarray(im.crop(parse_box(box, im.width, im.height)) if box is not None else im, dtype=np.int32)
    dist = ((rgb[:, :, None, :] - _RGB[None, None]) ** 2).sum(-1)  # (H, W, P)
    return dist.argmin(-1), rgb


def _non_background(labels: np.ndarray) -> list[int]:
    counts = np.bincount(labels.ravel(), minlength=len(_NAMES))
    return [i for i in range(len(_NAMES)) if counts[i] and i != counts.argmax()]


def _components(mask: np.ndarray) -> list[dict]:
    """4-connected regions of ``mask``: area, bbox [left, top, right, bottom) and centroid (x, y)."""
    runs, parent = [], []  # runs: (row, start, end) with end exclusive

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prev: list[int] = []
    for y, row in enumerate(mask):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        current = []
        for start, end in zip(edges[::2], edges[1::2]):
            runs.append((y, int(start), int(end)))
            parent.append(len(runs) - 1)
            current.append(len(runs) - 1)
            for j in prev:
                if runs[j][1] < end and start < runs[j][2]:
                    parent[find(j)] = find(len(runs) - 1)
        prev = current
    return _summaries(runs, [find(i) for i in range(len(runs))])


def _summaries(runs: list[tuple[int, int, int]], roots: list[int]) -> list[dict]:
    regions: dict[int, list] = {}
    for (y, x0, x1), root in zip(runs, roots):
        r = regions.setdefault(root, [0, x0, y, x1, y + 1, 0.0, 0.0])
        n = x1 - x0
        r[0] += n
        r[1], r[2], r[3], r[4] = min(r[1], x0), min(r[2], y), max(r[3], x1), max(r[4], y + 1)
        r[5] += n * (x0 + x1 - 1) / 2
        r[6] += n * y
    return [{"bbox": [r[1], r[2], r[3], r[4]], "area": r[0], "centroid": [round(r[5] / r[0], 1), round(r[6] / r[0], 1)]}
            for r in regions.values()]
