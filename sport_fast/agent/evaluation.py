"""Evaluation in the style of GTA and GAIA: run the agent on each task and report

- AnsAcc: the final answer is right, by GTA's whitelist rule where the task has one, else GAIA's rule
  (``answer_rules.py``); over the tasks that have a scorable answer (the count of the others is reported);
- ToolAcc: per task, the fraction of its expected tools that the chosen steps called, averaged over the
  tasks that name expected tools. A benchmark's own tool names (GTA's ``OCR``, ``TextToBbox``, ...) count
  through the tool set's mapping (``ToolRegistry.benchmark_names``); one this set lacks counts as missed,
  and the report names the tasks that needed a tool the set lacks;
- CodeExec: the fraction of chosen steps whose code parsed and ran without error. Chosen steps that hit the
  sandbox's wall-clock limit or were killed by a signal are counted apart (``steps_timed_out``,
  ``steps_killed``): on a loaded machine those can be the machine's failures, scored as the agent's.
Per-task logs (the whole trajectory) go to ``tasks.jsonl`` beside ``report.json``. The report states the
selection rule and K: with K > 1 it is test-time best-of-K step selection.

``python -m sport_fast.eval`` runs it from the command line.
"""
from __future__ import annotations

import json
from pathlib import Path

from sport_fast.agent.intervals import bootstrap_ci, mean_or_none
from sport_fast.sandbox.result import KILLED_BY
from sport_fast.tasks.answer_rules import task_answer_correct


def task_outcome(task, traj, names: dict | None = None) -> dict:
    """One task's result; ``names``: a benchmark tool name -> ours (None: the tool set lacks it)."""
    chosen = traj.followed_steps()
    called = sorted({c["name"] for step in chosen for c in step.tool_calls})
    names = names or {}
    ours = [names.get(t, t) for t in task.expected_tools]
    lacking = [t for t, mine in zip(task.expected_tools, ours) if mine is None or t.startswith("unavailable:")]
    return {"task_id": task.id, "answer": task.answer, "prediction": traj.final_answer, "finished": traj.finished,
            "correct": _correct(task, traj) if task.scored else None, "expected_tools": list(task.expected_tools),
            "called_tools": called, "lacking_tools": lacking,
            "tool_recall": (sum(t in called for t in ours) / len(ours)) if ours else None,
            "steps": len(chosen), "steps_ran": sum(c.ran for c in chosen), "stop_reason": traj.stop_reason,
            "steps_timed_out": sum(c.timed_out for c in chosen),
            "steps_killed": sum((c.error or "").startswith(KILLED_BY) for c in chosen)}


def _correct(task, traj) -> bool:
    if not traj.finished:
        return False
    return task_answer_correct(task, traj.final_answer)


def summarise(outcomes: list[dict], k: int, selection: str) -> dict:
    """The report: the three rates with 95% bootstrap intervals over tasks, and each task's outcome (so
    that arms on the same tasks can be compared pairwise)."""
    scored = [o for o in outcomes if o["correct"] is not None]
    with_tools = [o for o in outcomes if o["tool_recall"] is not None]
    return {"tasks": len(outcomes), "scored_tasks": len(scored), "unscored_tasks": len(outcomes) - len(scored),
            "AnsAcc": ans_acc(scored), "AnsAcc_ci95": bootstrap_ci(scored, ans_acc),
            "ToolAcc": tool_acc(with_tools), "ToolAcc_ci95": bootstrap_ci(with_tools, tool_acc),
            "CodeExec": code_exec(outcomes), "CodeExec_ci95": bootstrap_ci(outcomes, code_exec),
            "finished": sum(o["finished"] for o in outcomes), "k": k, "selection": selection,
            "steps_timed_out": sum(o["steps_timed_out"] for o in outcomes),
            "steps_killed": sum(o["steps_killed"] for o in outcomes),
            "best_of_k": k > 1,
            "unavailable_expected_tools": sum(len(o["lacking_tools"]) for o in outcomes),
            "tasks_needing_lacking_tools": {o["task_id"]: o["lacking_tools"] for o in outcomes if o["lacking_tools"]},
            "per_task": [{key: o[key] for key in ("task_id", "correct", "tool_recall", "steps", "steps_ran",
                                                  "steps_timed_out", "steps_killed")}
                         for o in outcomes]}


def ans_acc(outcomes: list[dict]) -> float | None:
    return mean_or_none([o["correct"] for o in outcomes])


def tool_acc(outcomes: list[dict]) -> float | None:
    return mean_or_none([o["tool_recall"] for o in outcomes])


def code_exec(outcomes: list[dict]) -> float | None:
    """Chosen steps whose code ran, over all chosen steps (of the tasks given)."""
    steps = sum(o["steps"] for o in outcomes)
    return sum(o["steps_ran"] for o in outcomes) / steps if steps else None


def evaluate(tasks, agent, out_dir: str | Path | None = None, progress=None, batch: int = 1) -> dict:
    """Run ``agent`` on every task, ``batch`` tasks in lockstep (their wall time shared equally); write
    per-task logs and the report under ``out_dir`` if given."""
    from sport_fast.agent.agent import lockstep_batches
    results = run_tasks(lockstep_batches(tasks, batch), agent, progress, total=len(tasks))
    report = summarise([outcome for outcome, _ in results], agent.config.k, agent.selection_name)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({**o, "trajectory": t}, default=repr) + "\n" for o, t in results]
        (out / "tasks.jsonl").write_text("".join(lines))
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def run_tasks(chunks, agent, progress=None, total: int | None = None) -> list[tuple[dict, dict]]:
    """(outcome, trajectory as JSON) of every task of ``chunks`` (lockstep batches), in order; a rank of a
    data-parallel run evaluates its share of the batches this way."""
    results, names = [], getattr(agent.tools, "benchmark_names", None)
    for chunk, trajectories, wall in agent.run_batches(chunks):
        for task, traj in zip(chunk, trajectories):
            results.append(({**task_outcome(task, traj, names), "wall_s": round(wall, 3)}, traj.to_json()))
            if progress:
                progress(len(results), total or len(results), results[-1][0])
    return results


def load_any(path: str, fmt: str):
    """Tasks of a suite file, or of a GTA or GAIA directory."""
    from sport_fast.tasks.benchmark_formats import load_gaia, load_gta
    from sport_fast.tasks.task import load_tasks
    return {"suite": load_tasks, "gta": load_gta, "gaia": load_gaia}[fmt](path)
