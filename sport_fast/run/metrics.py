"""What a run shows: a row of metrics per round (and one for the evaluation before the first round) as JSON
lines, TensorBoard scalars, the plot (``plot.py``), a one-line summary.

TensorBoard goes through ``tensorboardX`` (protobuf only, no TensorFlow); without it the run says so
once and writes the other three.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from sport_fast.run.durable import append_jsonl, read_jsonl
from sport_fast.run.plot import plot_rounds

HELDOUT = ("AnsAcc", "ToolAcc", "CodeExec")


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
        step = -1 if row["round"] == "initial" else row["round"]
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "round":
                self.tb.add_scalar(f"round/{key}", value, step)
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


def heldout_fields(report: dict) -> dict:
    """The held-out evaluation's rates and their 95% intervals, as a row's ``heldout_*`` fields."""
    out = {}
    for name in HELDOUT:
        out[f"heldout_{name}"] = report.get(name)
        out[f"heldout_{name}_ci95"] = report.get(f"{name}_ci95")
    return out


def initial_row(run_dir) -> dict | None:
    """The evaluation before the first round (after the warm start, if any), as the plot's first point."""
    report = run_dir.done("initial", "eval")
    return None if report is None else {"round": "initial", **heldout_fields(report)}


def round_row(run_dir, r, before, seconds) -> dict:
    """The round's one row of metrics (``metrics.jsonl``, TensorBoard, the plot), read off its manifest."""
    explore, train = run_dir.done(r, "explore") or {}, run_dir.done(r, "train") or {}
    evaluation = run_dir.done(r, "eval") or {}
    steps = max(1, explore.get("judge_steps", 0))
    return {"round": r, "tasks": explore.get("tasks"), "steps": explore.get("steps"),
            "pairs": train.get("pairs", 0), "groups": explore.get("groups"),
            "steps_with_a_pair": explore.get("groups", 0) / max(1, explore.get("steps") or 0),
            "steps_redrawn": explore.get("steps_redrawn"), "steps_revived": explore.get("steps_revived"),
            "abstentions": explore.get("abstentions"), "abstention_rate": explore.get("abstentions", 0) / steps,
            "disagreement_rate": explore.get("disagreements", 0) / steps, "judge_time_s": explore.get("judge_time_s"),
            "cache_reuse": explore.get("cache_reuse"),
            "explore_tokens_per_s": explore.get("generated_tokens", 0) / max(1e-9, explore.get("explore_s", 0)),
            "explore_s": explore.get("explore_s"), "loss_mean": train.get("loss_mean"),
            "reward_accuracy": train.get("reward_accuracy"), "train_tokens_per_s": train.get("train_tokens_per_s"),
            "train_s": train.get("train_s"), "refused_steps": train.get("refused_steps"),
            **heldout_fields(evaluation), "heldout_AnsAcc_before": before, "round_s": round(seconds, 1)}


def summary_line(row: dict) -> str:
    def f(key, fmt="{:.3g}"):
        v = row.get(key)
        return "-" if v is None else fmt.format(v) if isinstance(v, float) else str(v)
    held = (f"held-out AnsAcc {f('heldout_AnsAcc')} {_interval(row.get('heldout_AnsAcc_ci95'))}, ToolAcc "
            f"{f('heldout_ToolAcc')}, CodeExec {f('heldout_CodeExec')}")
    if row["round"] == "initial":
        return f"before the first round: {held}"
    redrawn = f", redrawn {f('steps_redrawn')} (ran then {f('steps_revived')})" if row.get("steps_redrawn") else ""
    return (f"round {row['round']}: tasks {f('tasks')}, steps {f('steps')}{redrawn}, pairs {f('pairs')}, abstentions "
            f"{f('abstentions')}, judge {f('judge_time_s')}s, cache reuse {f('cache_reuse')}, explore "
            f"{f('explore_tokens_per_s')} tok/s, train {f('train_tokens_per_s')} tok/s, loss {f('loss_mean')}, "
            f"reward acc {f('reward_accuracy')}, {held} (AnsAcc before {f('heldout_AnsAcc_before')}), "
            f"{f('round_s')}s")


def _interval(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


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
