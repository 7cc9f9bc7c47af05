"""W6's engine arm runs end to end on its smoke shape: the stand-in engine's candidates run and differ, so
the judge is asked, and the sequential, concurrent and overlapped arms record the same data."""
import json
import os
import subprocess
import sys

import pytest

from train_runs import ROOT

pytestmark = [pytest.mark.slow]  # three exploration processes


def test_engine_arm_smoke_asks_the_judge_and_keeps_the_data(tmp_path):
    env = {**os.environ, "SPORT_BENCH_OUT": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "w6_exploration_scale.py"), "--arms", "engine",
                           "--smoke"], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["arm"]: r for r in map(json.loads, (tmp_path / "w6.jsonl").read_text().splitlines())}
    arms = [rows[f"engine_judge_1s_{name}"] for name in ("sequential", "concurrent", "overlapped")]
    assert all(a["judge_calls"] >= 1 and a["groups"] >= 1 for a in arms)
    assert len({(a["judge_calls"], a["groups"], a["generated_tokens"]) for a in arms}) == 1
    for name in ("concurrent judge calls vs sequential (engine)", "overlapped vs sequential judge (engine)"):
        assert rows[name]["identical_data"] is True
