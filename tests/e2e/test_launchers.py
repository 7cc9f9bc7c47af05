"""``python -m sport_fast.train`` under a multi-process launcher (DeepSpeed on the CPU, gloo), as a user
launches it on several GPUs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_runs import DEFAULT, ROOT, free_port, small_run

pytest.importorskip("deepspeed")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("launcher, ds_json", [("deepspeed", "zero3-cpu.json")])
def test_train_command_under_a_launcher_with_two_ranks(tmp_path, launcher, ds_json):
    """``deepspeed --num_gpus 2 --module sport_fast.train`` (which passes --local_rank) with ZeRO-3 on the
    cut-down default: each rank explores and judges one of the round's two lockstep batches (rank 1 with the
    whole policy on its own device and its own local judge), both ranks train the round's LoRA pairs, rank 0
    checkpoints trained adapters, both exit cleanly. ("torchrun" runs the same command under torchrun; CI runs one launcher
    to stay within its time: torchrun is exercised by the gloo equality tests above, ZeRO-2 there too.)"""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SPORT_KILL_AT": "", "DS_ACCELERATOR": "cpu"}
    launch = {"torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), "-m"],
              "deepspeed": [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2",
                            "--master_port", str(port), "--module"]}[launcher]
    cmd = [*launch, "sport_fast.train", *DEFAULT, *small_run(tmp_path, "ds"), "explore.batch=1",
           f"distributed.deepspeed={ROOT / 'sport_fast' / 'configs' / 'deepspeed' / ds_json}"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())["phases"]["0"]
    assert manifest["train"]["pairs"] > 0 and manifest["train"]["train_steps"] > 0, manifest["train"]
    assert manifest["train"]["refused_steps"] == 0
    assert [(r["rank"], r["batches"]) for r in manifest["explore"]["ranks"]] == [(0, 1), (1, 1)], manifest["explore"]
    checkpoint = tmp_path / "ds" / "checkpoints" / "round_0"
    assert (checkpoint / "COMPLETE").exists()
    from safetensors.torch import load_file
    lora_b = [v for k, v in load_file(checkpoint / "weights.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b), "the adapters came back untrained (LoRA B starts at 0)"
