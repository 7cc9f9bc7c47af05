"""DeepSpeed ZeRO-2 and ZeRO-3 data parallelism on the CPU: two ranks over gloo train exactly what one process trains
with the same batches accumulated (grad_accum=2), and unsupported DeepSpeed configs are refused."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ds_case import case
from train_runs import ROOT, free_port
from sport_fast.dpo.distributed import DataParallel, DistributedError, check_precision, load_ds_config
from sport_fast.tree.batching import token_budget_batches
from sport_fast.dpo.trainer import shard, train_round

deepspeed = pytest.importorskip("deepspeed")


@pytest.mark.parametrize("ds_json", ["zero2-cpu.json", "zero3-cpu.json"])
def test_two_gloo_ranks_equal_one_process_accumulating_the_same_batches(tmp_path, ds_json):
    """ZeRO-3 trains a partitioned copy and gathers it back into each rank's policy when training ends."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "ds_rank.py"), str(ROOT / "sport_fast" / "configs" / "deepspeed" / ds_json), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    model, groups, cfg = case(grad_accum=2)
    batches = list(token_budget_batches([g for g in groups if g.rejected], cfg.max_tokens_per_batch))
    assert len(batches) % 2 == 1, "an odd batch count makes one rank pad with a zero-weight batch"
    want = train_round(model, groups, cfg, seed=3)
    for r in ranks:
        assert r["summary"]["train_steps"] == want["train_steps"] > 0 and r["summary"]["refused_steps"] == 0
        torch.testing.assert_close(r["summary"]["loss_mean"], want["loss_mean"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["summary"]["reward_margin"], want["reward_margin"], rtol=1e-4, atol=1e-6)
        assert r["summary"]["reward_chosen_last"] is not None, "every rank's chosen rewards are merged"
        for name, value in model.state_dict().items():
            torch.testing.assert_close(torch.tensor(r["state"][name]), value, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"{name}: {m}")
    initial = case(grad_accum=2)[0].state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in model.state_dict().items()), "nothing was trained"


def test_a_rank_whose_set_up_fails_stops_every_rank_with_one_line_naming_it():
    """Rank 1 cannot set up: both ranks stop at once (none waits for work), rank 0 naming rank 1's problem."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "agree_rank.py"), str(ROOT / "sport_fast" / "configs" / "deepspeed" / "zero2-cpu.json")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "rank 0 stopped: DistributedError: rank 1: SetupError: no sandbox on this rank" in run.stderr, run.stderr[-3000:]
    assert "rank 1 stopped: SetupError: no sandbox on this rank" in run.stderr


def test_shard_gives_every_rank_the_same_number_of_micro_steps():
    assert shard([4, 0, 3, 1, 2], 0, 2) == [(4, True), (3, True), (2, True)]
    assert shard([4, 0, 3, 1, 2], 1, 2) == [(0, True), (1, True), (4, False)]
    assert shard([1, 0], 0, 1) == [(1, True), (0, True)]


@pytest.mark.parametrize("content, message", [
    ('{"zero_optimization": {"stage": 4}}', "ZeRO stage 4 does not exist"),
    ('{"optimizer": {"type": "Adam"}}', "come from the train section"),
    ('{"zero_optimization": ', "not valid JSON")])
def test_unsupported_deepspeed_configs_are_refused(tmp_path, content, message):
    path = tmp_path / "ds.json"
    path.write_text(content)
    with pytest.raises(DistributedError, match=message):
        load_ds_config(path)
    with pytest.raises(DistributedError, match="does not exist"):
        load_ds_config(tmp_path / "missing.json")


@pytest.mark.parametrize("content, dtype, message", [
    ('{"zero_optimization": {"stage": 2}}', torch.bfloat16, "does not enable bf16"),
    ('{"bf16": {"enabled": true}}', torch.float32, "enables bf16 but the policy is torch.float32"),
    ('{"fp16": {"enabled": true}}', torch.bfloat16, "does not enable bf16")])
def test_policy_dtype_and_deepspeed_precision_must_agree(tmp_path, content, dtype, message):
    path = tmp_path / "ds.json"
    path.write_text(content)
    with pytest.raises(DistributedError, match=message):
        DataParallel.start(path, dtype=dtype)
    check_precision(json.loads('{"bf16": {"enabled": true}}'), torch.bfloat16)  # agreeing: no error
    check_precision({}, torch.float32)
