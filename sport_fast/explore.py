"""The exploration phase of a round: the agent (K candidates per step, sandboxed, judged) on each task,
each trajectory's step groups appended to the round's store, resumable task by task.

Per task, in a fixed order: run the agent, append its step groups to the ``StepStore`` (deduplicated by
content), then append the trajectory (with the judge's counters for it) to ``trajectories.jsonl``. A task
whose trajectory line exists is done; a crash between the two appends re-runs that task, whose seeds
(run, round, task, step, candidate) make it produce the same groups, which the store then skips. So no
record is lost or duplicated, and the data equals that of an uninterrupted run.
"""
from __future__ import annotations

import time
from dataclasses import asdict

from sport_fast.durable import append_jsonl, read_jsonl
from sport_fast.faults import crash_point
from sport_fast.labels import step_groups
from sport_fast.store import StepStore


def explore(tasks, agent, judge, store: StepStore, path, *, rule: str, bleu_threshold: float, round_: int,
            progress=None) -> dict:
    """Run every task not yet recorded in ``path``; returns the round's exploration summary."""
    done = {rec["task_id"]: rec for _, rec in read_jsonl(path)}
    for task in tasks:
        if task.id in done:
            _tick(progress)
            continue
        before = asdict(judge.stats) if judge is not None else {}
        t0 = time.perf_counter()
        traj = agent.run(task)
        wall = time.perf_counter() - t0
        groups = step_groups(traj, rule, bleu_threshold, meta={"round": round_})
        for g in groups:
            store.append(g)
        crash_point("explore.groups_written")
        record = {"task_id": task.id, "trajectory": traj.to_json(), "groups": [g.content_hash() for g in groups],
                  "wall_s": round(wall, 3), "judge": _delta(before, asdict(judge.stats)) if judge else {}}
        append_jsonl(path, record)
        done[task.id] = record
        crash_point("explore.task_done")
        _tick(progress, groups=len(groups))
    return summarise([done[t.id] for t in tasks if t.id in done])


def summarise(records: list[dict]) -> dict:
    steps = sum(len(r["trajectory"]["steps"]) for r in records)
    judge = {}
    for r in records:
        for key, value in r["judge"].items():
            if isinstance(value, (int, float)):
                judge[key] = judge.get(key, 0) + value
    cands = [c for r in records for s in r["trajectory"]["steps"] for c in s["candidates"]]
    return {"tasks": len(records), "steps": steps, "groups": sum(len(r["groups"]) for r in records),
            "candidates": len(cands), "generated_tokens": sum(len(c["token_ids"]) for c in cands),
            "explore_s": round(sum(r["wall_s"] for r in records), 3),
            "judge_steps": judge.get("steps", 0), "judge_calls": judge.get("calls", 0),
            "judge_time_s": round(judge.get("latency_s", 0.0), 3), "abstentions": judge.get("abstained", 0),
            "disagreements": judge.get("disagreements", 0), "judge_cache_hits": judge.get("cached", 0),
            "decided_by_rule": judge.get("by_rule", 0)}


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], (int, float))}


def _tick(progress, **postfix) -> None:
    if progress is not None:
        progress.update(1)
        if postfix:
            progress.set_postfix(**postfix)
