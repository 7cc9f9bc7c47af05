"""What a run shows: round metrics as JSON lines, TensorBoard scalars, a PNG plot, a one-line summary.

TensorBoard goes through ``tensorboardX`` (protobuf only, no TensorFlow); without it the run says so
once and writes the other three. The plot is drawn with Pillow (already a dependency): one small panel
per metric, one point per round, so it can be read at a glance in the run directory.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from sport_fast.run.durable import append_jsonl, read_jsonl

PLOTTED = ("heldout_AnsAcc", "heldout_CodeExec", "pairs", "abstention_rate", "loss_mean", "reward_accuracy",
           "explore_tokens_per_s", "train_tokens_per_s")


class RunMetrics:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / "metrics.jsonl"
        self.tb = _tensorboard(self.root / "tensorboard")

    def rows(self) -> list[dict]:
        return [rec for _, rec in read_jsonl(self.path)]

    def log_round(self, row: dict) -> None:
        """Append the round's row (once: a resumed round that already logged is not logged again)."""
        if any(r.get("round") == row["round"] for r in self.rows()):
            return
        append_jsonl(self.path, row)
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "round":
                self.tb.add_scalar(f"round/{key}", value, row["round"])
        self.tb.flush()
        plot_rounds(self.rows(), self.root / "rounds.png")

    def log_step(self, tag: str, values: dict, step: int) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.tb.add_scalar(f"{tag}/{key}", value, step)


def cache_reuse(path: Path) -> float:
    """Share of context tokens the sampler served from cache rather than prefilling, over the round."""
    trajectories = [rec["trajectory"] for _, rec in read_jsonl(path)]
    steps = [s for t in trajectories for s in t["steps"]]
    total = sum(s["context_tokens"] for s in steps)
    prefilled = sum(len(t["context_ids"]) for t in trajectories)
    prefilled += sum(len(s["observation_ids"]) + 1 for s in steps if s["followed"] is not None)
    return max(0.0, 1 - prefilled / total) if total else 0.0


def round_row(run_dir, r, before, seconds) -> dict:
    """The round's one row of metrics (``metrics.jsonl``, TensorBoard, the plot), read off its manifest."""
    explore, train = run_dir.done(r, "explore") or {}, run_dir.done(r, "train") or {}
    evaluation = run_dir.done(r, "eval") or {}
    steps = max(1, explore.get("judge_steps", 0))
    return {"round": r, "tasks": explore.get("tasks"), "steps": explore.get("steps"),
            "pairs": train.get("pairs", 0), "groups": explore.get("groups"),
            "abstentions": explore.get("abstentions"), "abstention_rate": explore.get("abstentions", 0) / steps,
            "disagreement_rate": explore.get("disagreements", 0) / steps, "judge_time_s": explore.get("judge_time_s"),
            "cache_reuse": explore.get("cache_reuse"),
            "explore_tokens_per_s": explore.get("generated_tokens", 0) / max(1e-9, explore.get("explore_s", 0)),
            "explore_s": explore.get("explore_s"), "loss_mean": train.get("loss_mean"),
            "reward_accuracy": train.get("reward_accuracy"), "train_tokens_per_s": train.get("train_tokens_per_s"),
            "train_s": train.get("train_s"), "refused_steps": train.get("refused_steps"),
            "heldout_AnsAcc": evaluation.get("AnsAcc"), "heldout_CodeExec": evaluation.get("CodeExec"),
            "heldout_AnsAcc_before": before, "round_s": round(seconds, 1)}


def summary_line(row: dict) -> str:
    def f(key, fmt="{:.3g}"):
        v = row.get(key)
        return "-" if v is None else fmt.format(v) if isinstance(v, float) else str(v)
    return (f"round {row['round']}: tasks {f('tasks')}, steps {f('steps')}, pairs {f('pairs')}, abstentions "
            f"{f('abstentions')}, judge {f('judge_time_s')}s, cache reuse {f('cache_reuse')}, explore "
            f"{f('explore_tokens_per_s')} tok/s, train {f('train_tokens_per_s')} tok/s, loss {f('loss_mean')}, "
            f"reward acc {f('reward_accuracy')}, held-out AnsAcc {f('heldout_AnsAcc')} "
            f"(before {f('heldout_AnsAcc_before')}), {f('round_s')}s")


def plot_rounds(rows: list[dict], path: Path, panel=(260, 150)) -> None:
    keys = [k for k in PLOTTED if any(isinstance(r.get(k), (int, float)) for r in rows)]
    if not keys:
        return
    cols = 4
    w, h = panel
    img = Image.new("RGB", (cols * w, math.ceil(len(keys) / cols) * h), "white")
    draw = ImageDraw.Draw(img)
    for i, key in enumerate(keys):
        _panel(draw, (i % cols) * w, (i // cols) * h, w, h, key,
               [(r["round"], r[key]) for r in rows if isinstance(r.get(key), (int, float))])
    tmp = path.with_name("." + path.name + ".tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)


def _panel(draw, x0, y0, w, h, title, points) -> None:
    left, top, right, bottom = x0 + 40, y0 + 22, x0 + w - 12, y0 + h - 22
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((x0 + 6, y0 + 4), title, fill="black")
    ys = [float(v) for _, v in points]
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1.0
    xs = [r for r, _ in points]
    xmax = max(max(xs), 1)
    coords = [(left + (r / xmax) * (right - left), bottom - (float(v) - lo) / (hi - lo) * (bottom - top))
              for r, v in points]
    if len(coords) > 1:
        draw.line(coords, fill=(31, 119, 180), width=2)
    for cx, cy in coords:
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(31, 119, 180))
    draw.text((x0 + 2, top - 2), f"{hi:.3g}", fill="gray")
    draw.text((x0 + 2, bottom - 10), f"{lo:.3g}", fill="gray")
    draw.text((right - 40, bottom + 4), f"round {xmax}", fill="gray")


class _NoTensorBoard:
    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass


def _tensorboard(folder: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        print("sport_fast: tensorboardX is not installed; TensorBoard logs are OFF (pip install tensorboardX). "
              "metrics.jsonl and rounds.png are still written.", file=sys.stderr)
        return _NoTensorBoard()
    return SummaryWriter(str(folder))
