"""plot, read back from its PNG: bar heights proportional to the values from a common baseline, scatter
points an affine image of the data, the line through those points, pie areas proportional to the values."""
import numpy as np
import pytest
from PIL import Image

from sport_fast.tools import image, plot

SERIES = np.array(plot.SERIES)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def series_regions(path) -> list[dict]:
    """Connected regions of exactly the series colour, left to right."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    regions = image._components((rgb == SERIES).all(-1))
    return sorted(regions, key=lambda r: r["bbox"][0])


@pytest.mark.parametrize("values", [[3, 7, 5, 10], [4, -2, 6, 0.5], [120, 80, 95]])
def test_bar_heights_are_proportional_to_the_values_from_one_baseline(values):
    bars = series_regions(plot.plot("bar", values, ["a", "b", "c", "d"][: len(values)], title="Sales"))
    assert len(bars) == len(values), f"{len(bars)} bars drawn for {len(values)} values"
    heights = np.array([b["bbox"][3] - b["bbox"][1] for b in bars])
    size = np.abs(values)
    scale = (heights * size).sum() / (size * size).sum()
    assert np.abs(heights - scale * size).max() <= 1, f"heights {heights} are not proportional to {values}"
    baseline = {b["bbox"][3] if v > 0 else b["bbox"][1] for b, v in zip(bars, values)}
    assert max(baseline) - min(baseline) <= 1, f"bars do not share a baseline: {baseline}"
    widths = {b["bbox"][2] - b["bbox"][0] for b in bars}
    assert max(widths) - min(widths) <= 1 and all(b["area"] == (b["bbox"][2] - b["bbox"][0]) * h
                                                  for b, h in zip(bars, heights)), "bars are not equal rectangles"


def scatter_centres(xs, ys) -> np.ndarray:
    markers = series_regions(plot.plot("scatter", ys, xs))
    assert len(markers) == len(xs), f"{len(markers)} markers for {len(xs)} points"
    return np.array([m["centroid"] for m in markers])


@pytest.mark.parametrize("seed", range(3))
def test_scatter_points_are_an_affine_image_of_the_data(seed):
    """Pixels must be linear in the data (x to the right, y up), whatever axis ranges the chart picked."""
    rng = np.random.default_rng(seed)
    xs = np.sort(rng.choice(np.arange(0, 60), 6, replace=False) * rng.uniform(0.1, 10)).tolist()
    ys = rng.uniform(-50, 200, 6).round(2).tolist()
    centres = scatter_centres(xs, ys)  # sorted by x, which is the data's order
    for data, axis, sign in ((np.array(xs), 0, 1), (np.array(ys), 1, -1)):
        a, b = np.polyfit(data, centres[:, axis], 1)
        residual = np.abs(a * data + b - centres[:, axis]).max()
        assert sign * a > 0 and residual < 0.75, f"axis {axis}: slope {a}, worst residual {residual:.2f} px"


def test_the_line_chart_passes_through_the_scatter_points_and_between_them():
    xs, ys = [1, 2, 3, 5, 8], [2, -1, 4, 3, 0.5]
    centres = scatter_centres(xs, ys)
    with Image.open(plot.plot("line", ys, xs)) as im:
        line = (np.asarray(im.convert("RGB")).astype(int) == SERIES).all(-1)

    def hit(x, y):
        x, y = int(round(x)), int(round(y))
        return line[y - 1:y + 2, x - 1:x + 2].any()
    assert all(hit(x, y) for x, y in centres), "a data point is not on the line chart"
    assert all(hit(*(p + q) / 2) for p, q in zip(centres[:-1], centres[1:])), "segments are not straight"


def test_pie_areas_are_proportional_to_the_values():
    values = [1, 2, 3, 4]
    with Image.open(plot.plot("pie", values, ["w", "x", "y", "z"], title="Share")) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    counts = np.array([(rgb == np.array(c)).all(-1).sum() for c in plot.PIE_COLORS[: len(values)]])
    shares = counts / counts.sum()
    assert np.abs(shares - np.array(values) / sum(values)).max() < 0.01, f"slice shares {shares.round(4)}"


@pytest.mark.parametrize("lo, hi", [(0, 10), (-1, 4.3), (0.001, 0.0137), (12_345, 98_765), (-7, -7), (3, 3.0001)])
def test_nice_ticks_cover_the_range_with_a_round_step(lo, hi):
    ticks = plot.nice_ticks(lo, hi)
    steps = np.diff(ticks)
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 12, ticks
    assert np.allclose(steps, steps[0]) and min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6, ticks


@pytest.mark.parametrize("args, match", [(("area", [1, 2]), "kind"), (("bar", []), "non-empty"),
                                         (("bar", [1, "2"]), "finite numbers"), (("line", [1, 2], [1]), "entries"),
                                         (("pie", [1, -1]), "non-negative"), (("line", [1, float("nan")]), "finite"),
                                         (("scatter", [1, 2], ["a", "b"]), "finite numbers")])
def test_bad_data_is_refused_with_a_reason(args, match):
    with pytest.raises(ValueError, match=match):
        plot.plot(*args)
