"""``python -m sport_fast.train`` end to end on SmolLM2 (small settings): bad input is one line and exit 2;
SIGKILL at several points, then re-running the same command, loses and duplicates nothing, leaves no
torn checkpoint, and ends with exactly the data and weights of an uninterrupted run."""
import json
from pathlib import Path

import pytest
from train_runs import small_run, train

from sport_fast.tasks.task import Task, save_tasks

pytestmark = [pytest.mark.slow]  # each run loads SmolLM2 (in its subprocess)


def untimed(value):
    """A record without what legitimately differs between runs: wall times, latencies, cache hits."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in ("wall_s", "latency_s", "cached")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def run_state(run: Path) -> dict:
    """Everything a run collected, in a comparable form."""
    from safetensors.torch import load_file
    traj = [json.loads(l) for l in (run / "round_0" / "trajectories.jsonl").read_text().splitlines()]
    store = [json.loads(l) for l in (run / "round_0" / "store" / "groups.jsonl").read_text().splitlines()]
    manifest = json.loads((run / "manifest.json").read_text())["phases"]
    ckpt = run / "checkpoints" / "round_0"
    weights = load_file(str(ckpt / "weights.safetensors"))
    return {"tasks": [t["task_id"] for t in traj], "trajectories": [untimed(t["trajectory"]) for t in traj],
            "groups": [r["hash"] for r in store if r["kind"] == "group"],
            "ref": {r["hash"]: r["values"] for r in store if r["kind"] == "ref_logps"},
            "ref_records": sum(r["kind"] == "ref_logps" for r in store),
            "train": {k: v for k, v in manifest["0"]["train"].items() if not k.endswith("_s") and "per_s" not in k},
            "weights": weights, "complete": (ckpt / "COMPLETE").exists(),
            "leftovers": sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp"))}


def test_sigkill_at_several_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    import torch
    done = train(small_run(tmp_path, "clean"))
    assert done.returncode == 0, done.stderr[-3000:]
    clean = run_state(tmp_path / "clean")
    assert len(clean["tasks"]) == 2 and clean["complete"] and not clean["leftovers"]
    assert clean["groups"], "the small run formed no step groups; the crash test would prove little"
    assert clean["train"]["pairs"] > 0 and clean["train"]["train_steps"] > 0

    args = small_run(tmp_path, "crashed")
    for point in ("explore.groups_written:2", "explore.task_done:1", "reference.computed",
                  "checkpoint.weights_written", "train.checkpoint_saved"):
        killed = train(args, kill_at=point)
        assert killed.returncode == -9, f"{point}: expected SIGKILL, got {killed.returncode}: {killed.stderr[-2000:]}"
    final = train(args)
    assert final.returncode == 0, final.stderr[-3000:]
    crashed = run_state(tmp_path / "crashed")
    assert crashed["tasks"] == clean["tasks"], "a trajectory was lost or duplicated"
    assert crashed["groups"] == clean["groups"], "step groups differ from the uninterrupted run"
    assert crashed["ref_records"] == len(crashed["groups"]) and crashed["ref"].keys() == clean["ref"].keys()
    for h, values in clean["ref"].items():
        assert crashed["ref"][h] == pytest.approx(values, abs=1e-4), h
    assert crashed["trajectories"] == clean["trajectories"]
    assert crashed["complete"] and not crashed["leftovers"], "a torn checkpoint was left behind"
    assert crashed["train"].keys() == clean["train"].keys()
    for key, value in clean["train"].items():
        assert crashed["train"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for name, tensor in clean["weights"].items():
        assert torch.allclose(crashed["weights"][name], tensor, rtol=1e-5, atol=1e-6), name
    again = train(args)  # everything done: nothing is redone, nothing appended
    assert again.returncode == 0 and run_state(tmp_path / "crashed")["groups"] == clean["groups"]


@pytest.mark.parametrize("extra, message", [
    (["train.bta=0.1"], "unknown config key train.bta"),
    (["model.path=/nonexistent/model"], "model path /nonexistent/model does not exist"),
    (["tasks.source=file", "tasks.train_file=EMPTY"], "has no tasks"),
    (["tasks.source=file", "tasks.train_file=CORRUPT"], "image a.png"),
    (["judge.backend=openai", "judge.base_url=http://127.0.0.1:9/v1", "judge.model=x"],
     "judge endpoint http://127.0.0.1:9/v1 is unreachable"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, extra, message):
    args = small_run(tmp_path, "run")
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    save_tasks(tmp_path / "corrupt.jsonl", [Task(id="c", question="q?", answer="1", files={"a.png": str(tmp_path / "bad.png")})])
    extra = [e.replace("EMPTY", str(tmp_path / "empty.jsonl")).replace("CORRUPT", str(tmp_path / "corrupt.jsonl"))
             for e in extra]
    result = train(args + extra, timeout=300)
    errors = [l for l in result.stderr.splitlines() if l.startswith("sport_fast.train:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "a failed start wrote into the run directory"


def test_resuming_with_a_changed_config_is_one_line_and_exit_2(tmp_path):
    """The run directory holds a run of another config: refused before anything is loaded or written."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: another run\n")
    result = train(small_run(tmp_path, "run"), timeout=300)
    errors = [l for l in result.stderr.splitlines() if l.startswith("sport_fast.train:")]
    assert result.returncode == 2 and len(errors) == 1 and "different config" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and sorted(p.name for p in run.iterdir()) == ["config.yaml"]
