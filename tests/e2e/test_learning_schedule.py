"""``benchmarks/learning.py`` runs its arms side by side: the control (d) may start only once the rounds of
(b)+(c) have trained, since its budget is theirs. Fake arms here write their manifests over time, so the order
is observable: the control must start after the rounds' "train" phase lands and before the last evaluation."""
import json
import sys
import time

import pytest
from train_runs import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from learning import Arm  # noqa: E402

# marks the round's phases one by one, a pause apart, atomically, the way train.py marks its manifest
FAKE_SPORT = """
import json, sys, time
from pathlib import Path
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
phases = {}
for name, part in (("sft", {"train": {"train_steps": 20}}), ("0", {"explore": {}}), ("0", {"train": {"train_steps": 7}}),
                   ("0", {"eval": {"AnsAcc": 0.5}})):
    phases.setdefault(name, {}).update(part)
    (out / "manifest.tmp").write_text(json.dumps({"phases": phases}))
    (out / "manifest.tmp").replace(out / "manifest.json")  # atomic, as the run directory writes it
    time.sleep(0.6)
print("done", flush=True)  # as train.py ends: its last line
"""


def test_control_budget_is_read_once_the_rounds_have_trained(tmp_path):
    out = tmp_path / "bc"
    arm = Arm(out, 0, cmd=[sys.executable, "-c", FAKE_SPORT, str(out)])
    trained = arm.trained(rounds=1, poll_s=0.05)
    assert trained["phases"]["0"]["train"]["train_steps"] == 7
    assert "eval" not in trained["phases"]["0"], "the control's budget was read only after the round's evaluation"
    assert arm.proc.poll() is None  # (c)'s last evaluation is still to come: the control runs beside it
    while arm.proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.5)  # waited for long after it ended: its wall time is still its own (about 2.4 s)
    done = arm.wait()
    assert done["phases"]["0"]["eval"] == {"AnsAcc": 0.5} and 2.0 < done["wall_s"] < 3.5


def test_a_failed_arm_names_itself_and_its_log(tmp_path):
    out = tmp_path / "d_control_s0"
    arm = Arm(out, 0, cmd=[sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"])
    with pytest.raises(SystemExit) as err:
        arm.trained(rounds=1, poll_s=0.05)
    assert "d_control_s0 failed (exit 3)" in str(err.value) and "bad config" in str(err.value)
