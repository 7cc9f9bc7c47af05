"""``rounds.png``: the held-out rates from the evaluation before the first round through every round, on [0, 1]
whatever the values, each with its interval, the points named ``initial``, ``r0``, ``r1``; read back from the
image's pixels."""
from PIL import Image

from sport_fast.run.plot import BLUE, PANEL, RATES, Frame, plot_rounds

ROWS = [{"round": "initial", "heldout_AnsAcc": 0.25, "heldout_AnsAcc_ci95": [0.1, 0.4], "heldout_ToolAcc": 0.6,
         "heldout_CodeExec": 0.7},
        {"round": 0, "heldout_AnsAcc": 0.5, "heldout_AnsAcc_ci95": [0.3, 0.7], "heldout_ToolAcc": 0.62,
         "heldout_CodeExec": 0.72, "pairs": 40, "steps_with_a_pair": 0.8, "abstention_rate": 0.1, "loss_mean": 0.6},
        {"round": 1, "heldout_AnsAcc": 0.75, "heldout_AnsAcc_ci95": [0.55, 0.95], "heldout_ToolAcc": 0.64,
         "heldout_CodeExec": 0.74, "pairs": 55, "steps_with_a_pair": 0.9, "abstention_rate": 0.0, "loss_mean": 0.5}]


def blue_near(img: Image.Image, x: float, y: float, r: int = 1) -> bool:
    near = range(-r, r + 1)
    return any(img.getpixel((round(x) + dx, round(y) + dy)) == BLUE for dx in near for dy in near)


def test_every_rate_is_drawn_from_the_initial_evaluation_on_the_unit_interval(tmp_path):
    path = tmp_path / "rounds.png"
    plot_rounds(ROWS, path)
    img = Image.open(path).convert("RGB")
    assert img.size == (4 * PANEL[0], 2 * PANEL[1])
    for p, key in enumerate(RATES):
        frame = Frame(p * PANEL[0], 0, len(ROWS), (0.0, 1.0))
        for i, row in enumerate(ROWS):
            assert blue_near(img, frame.x(i), frame.y(row[key])), f"{key}: no point for {row['round']} at its value"
        # the axis is [0, 1] for every rate, not a range fitted to its values
        _, top, _, bottom = frame.box
        assert frame.y(1.0) == top and frame.y(0.0) == bottom


def test_the_intervals_are_drawn_and_visible_at_the_first_and_last_point(tmp_path):
    path = tmp_path / "rounds.png"
    plot_rounds(ROWS, path)
    img = Image.open(path).convert("RGB")
    frame = Frame(0, 0, len(ROWS), (0.0, 1.0))
    left, _, right, _ = frame.box
    assert frame.x(0) > left + 8 and frame.x(len(ROWS) - 1) < right - 8, "the end points sit on the frame"
    for i, row in enumerate(ROWS):
        lo, hi = row["heldout_AnsAcc_ci95"]
        for v in (lo + 0.01, hi - 0.01):
            assert blue_near(img, frame.x(i), frame.y(v), r=0), f"interval of {row['round']} not drawn at {v}"


def test_a_run_without_rounds_shows_its_initial_evaluation(tmp_path):
    path = tmp_path / "rounds.png"
    plot_rounds(ROWS[:1], path)
    img = Image.open(path).convert("RGB")
    frame = Frame(0, 0, 1, (0.0, 1.0))
    assert blue_near(img, frame.x(0), frame.y(0.25))
