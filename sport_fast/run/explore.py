"""The exploration phase of a round: every rank explores its share of the round's lockstep batches, and rank 0
merges what they found into the round's store, in the round's order.

1. Sharing out (``explore_share``, on every rank). The round's tasks are cut into fixed lockstep batches of
   ``explore.batch`` (``agent.lockstep_batches``) and whole batches are assigned to ranks by a seeded, fixed
   permutation (``assign``); a batch decodes with the same rows wherever it runs, so its rounding (hence its
   data) is the same as in one process. A rank explores its batches (the agent: K candidates per step,
   sandboxed, judged) and writes each finished batch whole, atomically, to ``explore/batch_<b>.json``:
   a batch is recorded entirely or not at all, and a recorded batch is never explored again, whoever
   resumes it. Only its owner writes a batch's file.
2. Merging (``merge_round``, on rank 0, after every rank is done). Per task in the round's order: its step
   groups (images first, copied into the store by content hash) appended to the ``StepStore`` (deduplicated
   by content), then its trajectory (with the judge's counters read off its verdicts) to
   ``trajectories.jsonl``. A task whose trajectory line exists is done; a crash in the merge resumes it
   (the store skips groups it has).
So the round's data equals, record for record, what one process produces with the same seeds (run, round,
task, step, candidate), whatever the number of ranks, and a crash anywhere loses or duplicates nothing.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

from sport_fast.agent.agent import lockstep_batches
from sport_fast.agent.records import CandidateRecord, TrajectoryRecord
from sport_fast.data.rejection import step_groups
from sport_fast.data.store import StepStore
from sport_fast.judge.step_judge import JudgeStats
from sport_fast.run.crash_points import crash_point
from sport_fast.run.durable import append_jsonl, atomic_write, read_jsonl


def explore(tasks, agent, store: StepStore, path, *, rule: str, bleu_threshold: float, round_: int,
            batch: int = 1, progress=None) -> dict:
    """In one process: explore every batch (files beside ``path``, in ``explore/``), then merge them into
    ``store`` and ``path``; the round's summary."""
    path = Path(path)
    explore_share(tasks, agent, path.parent / "explore", path, batch=batch, progress=progress)
    return merge_round(tasks, path.parent / "explore", store, path, rule=rule, bleu_threshold=bleu_threshold,
                       round_=round_)


def assign(n_batches: int, rank: int, world: int, seed: int) -> list[int]:
    """Rank ``rank``'s batches of ``n_batches``: every world-th of a permutation drawn from ``seed`` (so that
    ranks get a mix of early and late tasks), in increasing order."""
    order = random.Random(f"{seed}:assign").sample(range(n_batches), n_batches)
    return sorted(order[rank::world])


def explore_share(tasks, agent, folder: Path, recorded: Path, *, batch: int, rank: int = 0, world: int = 1,
                  seed: int = 0, progress=None) -> dict:
    """Explore this rank's batches of ``tasks`` not yet recorded (in ``folder``, or in the round's merged
    ``recorded`` trajectories); returns what this rank did."""
    folder.mkdir(parents=True, exist_ok=True)
    # rank 0, its only writer, repairs a torn tail before the others read it (phases.explore_round)
    merged = {rec["task_id"] for _, rec in read_jsonl(recorded, repair=world == 1)}
    chunks = lockstep_batches(tasks, batch)
    todo = [b for b in assign(len(chunks), rank, world, seed)
            if not _batch_file(folder, b).exists() and not all(t.id in merged for t in chunks[b])]
    t0, done = time.perf_counter(), 0
    for b, (chunk, trajectories, wall) in zip(todo, agent.run_batches([chunks[b] for b in todo])):
        records = [_shard_record(task, traj, wall) for task, traj in zip(chunk, trajectories)]
        atomic_write(_batch_file(folder, b), json.dumps({"batch": b, "records": records}, separators=(",", ":")))
        crash_point("explore.batch_written")
        done += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    return {"rank": rank, "batches": len(todo), "tasks": done, "wall_s": round(time.perf_counter() - t0, 3)}


def share_size(tasks, batch: int, rank: int, world: int, seed: int) -> int:
    """How many of ``tasks`` rank ``rank`` explores (its progress bar's length)."""
    chunks = lockstep_batches(tasks, batch)
    return sum(len(chunks[b]) for b in assign(len(chunks), rank, world, seed))


def _batch_file(folder: Path, b: int) -> Path:
    return folder / f"batch_{b:05d}.json"


def _shard_record(task, traj, wall: float) -> dict:
    verdicts = [s.verdict for s in traj.steps if s.verdict is not None]
    return {"task_id": task.id, "trajectory": traj.to_json(), "wall_s": round(wall, 3),
            "judge": asdict(JudgeStats.of(verdicts))}


def merge_round(tasks, folder: Path, store: StepStore, path: Path, *, rule: str, bleu_threshold: float,
                round_: int) -> dict:
    """Every task's trajectory, from the batch files in ``folder``, into ``store`` and ``path`` in the order of
    ``tasks`` (those already there are kept); returns the round's summary."""
    done = {rec["task_id"]: rec for _, rec in read_jsonl(path)}
    explored: dict[str, dict] = {}
    for batch_file in sorted(folder.glob("batch_*.json")):
        for rec in json.loads(batch_file.read_text())["records"]:
            explored.setdefault(rec["task_id"], rec)
    for task in tasks:
        if task.id in done:
            continue
        if task.id not in explored:
            raise RuntimeError(f"task {task.id} was explored by no rank (no batch file in {folder} holds it)")
        done[task.id] = _record(explored[task.id], store, path, rule, bleu_threshold, round_)
    return summarise([done[t.id] for t in tasks])


def _record(shard: dict, store: StepStore, path, rule: str, bleu_threshold: float, round_: int) -> dict:
    """Append a trajectory's step groups (images first) to the store, then its trajectory line; the record."""
    traj = TrajectoryRecord.from_json(shard["trajectory"])
    images = [store.put_image(Path(f).read_bytes(), Path(f).suffix) for f in traj.images]
    groups = step_groups(traj, rule, bleu_threshold, meta={"round": round_}, images=images)
    for g in groups:
        store.append(g)
    crash_point("explore.groups_written")
    record = {"task_id": shard["task_id"], "trajectory": shard["trajectory"],
              "groups": [g.content_hash() for g in groups], "wall_s": shard["wall_s"], "judge": shard["judge"]}
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
    all_steps = [s for r in records for s in r["trajectory"]["steps"]]
    cands = [c for s in all_steps for c in s["candidates"]]
    redrawn = [s for s in all_steps if s.get("draws", 1) > 1]
    return {"tasks": len(records), "steps": steps, "groups": sum(len(r["groups"]) for r in records),
            "steps_redrawn": len(redrawn), "steps_revived": sum(any(_ran(c) for c in s["candidates"]) for s in redrawn),
            "candidates": len(cands), "generated_tokens": sum(len(c["token_ids"]) for c in cands),
            "explore_s": round(sum(r["wall_s"] for r in records), 3),
            "judge_steps": judge.get("steps", 0), "judge_calls": judge.get("calls", 0),
            "judge_time_s": round(judge.get("latency_s", 0.0), 3), "abstentions": judge.get("abstained", 0),
            "disagreements": judge.get("disagreements", 0), "judge_cache_hits": judge.get("cached", 0),
            "decided_by_rule": judge.get("by_rule", 0)}


def _ran(candidate: dict) -> bool:
    """``CandidateRecord.ran`` of a candidate's JSON record."""
    return CandidateRecord(**candidate).ran
