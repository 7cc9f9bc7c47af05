"""The exploration phase of a round: the agent (K candidates per step, sandboxed, judged) on the tasks,
a batch of them in lockstep, each trajectory's step groups appended to the round's store, resumable.

Per task, in a fixed order: append its step groups to the ``StepStore`` (deduplicated by content), then
append the trajectory (with the judge's counters read off its verdicts) to ``trajectories.jsonl``. A task
whose trajectory line exists is done; a crash re-runs the unfinished batch, whose seeds (run, round, task,
step, candidate) and fixed membership make it produce the same trajectories and groups; recorded tasks are
skipped and the store skips groups it has. Images a vision-language policy was shown are copied into the
store (by content hash) before the groups that refer to them. So no record is lost or duplicated, and the
data equals that of an uninterrupted run.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sport_fast.run.durable import append_jsonl, read_jsonl
from sport_fast.run.crash_points import crash_point
from sport_fast.judge.step_judge import JudgeStats
from sport_fast.data.rejection import step_groups
from sport_fast.data.store import StepStore


def explore(tasks, agent, store: StepStore, path, *, rule: str, bleu_threshold: float, round_: int,
            batch: int = 1, progress=None) -> dict:
    """Run every task not yet recorded in ``path``, ``batch`` tasks in lockstep; returns the round's summary.

    Batches are fixed slices of ``tasks`` (not of the tasks left), so a batch re-run after a crash has the
    same members, hence the same decode batches and the same data, as in an uninterrupted run."""
    done = {rec["task_id"]: rec for _, rec in read_jsonl(path)}
    recorded = lambda chunk: all(t.id in done for t in chunk)  # noqa: E731
    for chunk, trajectories, wall in agent.run_batches(tasks, batch, skip=recorded):
        for task, traj in zip(chunk, trajectories or ()):
            if task.id not in done:  # else: recorded before a crash, and this re-run reproduced it
                done[task.id] = _record(task, traj, store, path, rule, bleu_threshold, round_, wall)
        _tick(progress, len(chunk), **({} if trajectories is None else
                                      {"groups": sum(len(done[t.id]["groups"]) for t in chunk)}))
    return summarise([done[t.id] for t in tasks if t.id in done])


def _record(task, traj, store: StepStore, path, rule: str, bleu_threshold: float, round_: int, wall: float) -> dict:
    """Append ``traj``'s step groups (images first) to the store, then its trajectory line; the record."""
    images = [store.put_image(Path(f).read_bytes(), Path(f).suffix) for f in traj.images]
    groups = step_groups(traj, rule, bleu_threshold, meta={"round": round_}, images=images)
    for g in groups:
        store.append(g)
    crash_point("explore.groups_written")
    verdicts = [s.verdict for s in traj.steps if s.verdict is not None]
    record = {"task_id": task.id, "trajectory": traj.to_json(), "groups": [g.content_hash() for g in groups],
              "wall_s": round(wall, 3), "judge": asdict(JudgeStats.of(verdicts))}
    append_jsonl(path, record)
    crash_point("explore.task_done")
    return record


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


def _tick(progress, n: int, **postfix) -> None:
    if progress is not None:
        progress.update(n)
        if postfix:
            progress.set_postfix(**postfix)
