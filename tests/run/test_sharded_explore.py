"""Every rank explores: 2 gloo ranks explore (and evaluate) whole lockstep batches each and rank 0 merges
them into exactly the data one process writes; a rank killed mid-round resumes without exploring again a
batch it had finished, and the merged data is still the same."""
import json
import os
import subprocess
import sys
import time

import pytest
from tiny_agent import picking_judge, untimed
from train_runs import ROOT, free_port

pytest.importorskip("deepspeed")
DS_JSON = ROOT / "sport_fast" / "configs" / "deepspeed" / "zero2-cpu.json"


def launch(out, ranks: int, judge_url: str, kill_rank: int | None = None) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "KILL_RANK": "" if kill_rank is None else str(kill_rank)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
           str(free_port()), str(ROOT / "tests" / "explore_rank.py"), str(DS_JSON), str(out), judge_url]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    print(f"{out.name} x{ranks}: {time.perf_counter() - t0:.1f}s")
    return done


def data(out) -> dict:
    """The round's merged records and the held-out report, without wall times and latencies."""
    lines = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    manifest = json.loads((out / "done.json").read_text())["phases"]
    summary = {k: v for k, v in manifest["0"]["explore"].items() if k not in ("ranks", "wall_s", "explore_s", "judge_time_s")}
    report = {k: v for k, v in manifest["initial"]["eval"].items()}
    return {"trajectories": untimed(lines(out / "round_0" / "trajectories.jsonl")),
            "groups": untimed(lines(out / "round_0" / "store" / "groups.jsonl")),
            "summary": untimed(summary), "eval": untimed(report)}


def starts(out) -> list[str]:
    return [line for f in sorted(out.glob("starts_rank*.txt")) for line in f.read_text().split()]


def test_two_ranks_explore_and_evaluate_exactly_what_one_process_does_even_killed_and_resumed(tmp_path):
    """Rank 1 dies after writing its first batch (torchrun then stops rank 0 wherever it is); the same command
    again explores only the batches not yet written, and the merged round equals one process's."""
    judge = picking_judge()
    try:
        one = launch(tmp_path / "one", 1, judge.url)
        assert one.returncode == 0, one.stderr[-3000:]
        killed = launch(tmp_path / "two", 2, judge.url, kill_rank=1)
        assert killed.returncode != 0, "rank 1 should have been killed after its first batch"
        finished = sorted(p.name for p in (tmp_path / "two" / "round_0" / "explore").glob("batch_*.json"))
        for f in (tmp_path / "two").glob("starts_rank*.txt"):
            f.unlink()
        resumed = launch(tmp_path / "two", 2, judge.url)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        judge.close()
    want, got = data(tmp_path / "one"), data(tmp_path / "two")
    assert want["groups"] and want["summary"]["judge_calls"] > 0, "the case formed no groups: it proves little"
    for key in want:
        assert got[key] == want[key], f"2 ranks: {key} differ from one process's"
    assert finished, "rank 1 died before writing a batch"
    batch_tasks = {f"batch_{b:05d}.json": {f"t{2 * b}", f"t{2 * b + 1}"} for b in range(4)}
    done_before = set().union(*(batch_tasks[f] for f in finished))
    again = [t for t in starts(tmp_path / "two") if t.startswith("t")]
    assert not done_before & set(again), f"finished batches {finished} were explored again: {again}"
    assert sorted(set(again) | done_before) == sorted(f"t{i}" for i in range(8)), (finished, again)
    held = sorted(t for t in starts(tmp_path / "two") if t.startswith("h"))
    assert held == sorted(f"h{i}" for i in range(6)), f"each held-out task evaluated once over the ranks: {held}"


def test_ranks_get_whole_batches_in_a_fixed_seeded_assignment():
    from sport_fast.run.explore import assign
    two = [assign(7, r, 2, seed=11) for r in range(2)]
    assert sorted(two[0] + two[1]) == list(range(7)) and abs(len(two[0]) - len(two[1])) <= 1
    assert two == [assign(7, r, 2, seed=11) for r in range(2)], "the assignment must not change on a re-run"
    assert assign(7, 0, 1, seed=11) == list(range(7))
