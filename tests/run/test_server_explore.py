"""Exploration through inference servers (explore.backend=openai), our own server standing in for vLLM: a
round explored through two replicas (each trajectory sticking to one), trained, its adapter hot-loaded under
a versioned name, and the next round samples exactly the trained weights; training refuses other versions."""
import pytest
import torch
from tiny_agent import picking_judge, tiny_config, tiny_run_parts
from tiny_models import step_tasks, step_tokenizer, tiny_qwen2

from sport_fast.config import TrainSection
from sport_fast.data.step_group import WeightVersionError, check_weight_versions
from sport_fast.dpo.reference_logps import compute_ref_logps
from sport_fast.dpo.trainer import train_round
from sport_fast.run import phases
from sport_fast.run.policy import exploration_policy, publish
from sport_fast.run.run_dir import RunDir
from sport_fast.sampler.server import SamplerService, start_server


def replica(seen: list):
    """Our server over the base model, noting which task (by the question's first word) each request serves."""
    service = SamplerService(tiny_qwen2(5), step_tokenizer(), "tiny")
    handle = service.handle

    def noting(path, body):
        seen.append(next(t - 60 for t in body["prompt"] if 60 <= t < 70))  # the question's marker comes first
        return handle(path, body)
    service.handle = noting
    return service, start_server(service)


def lora_policy():
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    return get_peft_model(tiny_qwen2(5), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")).eval()


def test_a_round_through_two_servers_trains_hot_loads_and_the_next_samples_the_new_weights(tmp_path):
    judge, seen = picking_judge(), ([], [])
    replicas = [replica(s) for s in seen]
    urls = [f"http://127.0.0.1:{srv.server_address[1]}/v1" for _, srv in replicas]
    try:
        cfg = tiny_config(tmp_path, "name=mini", "explore.backend=openai", f"explore.base_urls=[{urls[0]},{urls[1]}]",
                          "explore.model=tiny", "explore.engine=sport_fast", "explore.timeout_s=60")
        run = tiny_run_parts(cfg, judge.url)
        run.model = lora_policy()
        run.sampler = exploration_policy(cfg, run.model, run.tokenizer, None, None)
        run.dir = RunDir(tmp_path, "name: mini\n")
        tasks = step_tasks(4)
        groups = list(phases.explore_round(run, 0, run.dir.round_dir(0), tasks, seed=1))
        assert groups and {g.weight_version for g in groups} == {0}
        assert set(seen[0]).isdisjoint(seen[1]) and sorted(set(seen[0]) | set(seen[1])) == [0, 1, 2, 3], seen
        compute_ref_logps(run.model, groups)
        summary = train_round(run.model, groups, TrainSection(lr=0.05, epochs=1), seed=0)
        assert summary["train_steps"] > 0
        publish(run, 1)  # the adapter saved to weights/v1 and hot-loaded as mini-v1 on both servers
        assert (tmp_path / "weights" / "v1" / "adapter_config.json").exists()
        assert [s.name for s, _ in replicas] == ["mini-v1", "mini-v1"]
        round1 = list(phases.explore_round(run, 1, run.dir.round_dir(1), tasks, seed=2))
    finally:
        judge.close()
        for _, srv in replicas:
            srv.shutdown()
    records = [r["trajectory"] for r in _lines(tmp_path / "round_1" / "trajectories.jsonl")]
    changed = 0
    for traj in records:
        context = list(traj["context_ids"])
        for step in traj["steps"]:
            for cand in step["candidates"]:
                assert cand["weight_version"] == 1
                want = _uncached(run.model, context, cand["token_ids"])
                assert cand["logprobs"] == pytest.approx(want, abs=1e-4), "not the trained weights' log-probs"
                changed += cand["logprobs"] != pytest.approx(_uncached(tiny_qwen2(5), context, cand["token_ids"]),
                                                             abs=1e-3)
            if step["followed"] is not None:
                context += step["candidates"][step["followed"]]["token_ids"] + step["observation_ids"]
    assert changed, "training changed nothing the servers sample"
    check_weight_versions(round1, expected=1)
    with pytest.raises(WeightVersionError, match="weight version 0 only, but its store holds .* of version 1"):
        check_weight_versions(round1, expected=0)


def _lines(path):
    import json
    return [json.loads(line) for line in path.read_text().splitlines()]


@torch.no_grad()
def _uncached(model, context, ids):
    logp = model(torch.tensor([context + ids])).logits[0].double().log_softmax(-1)
    return [logp[len(context) - 1 + j, t].item() for j, t in enumerate(ids)]
