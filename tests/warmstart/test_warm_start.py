"""The warm start: the supervised loss over a packed tree of demonstrations against separate forwards
(float64), each token computed once, the suite's reference programs rendered as the agent sees its steps
(verified), trajectory files in multi-turn sharegpt form, and the families a warm start is limited to."""
import json
import random

import pytest
import torch
from tiny_models import demonstrations, separate_nll, tiny_qwen2, vl_tokenizer

from sport_fast.tree.batch import make_tree_batch
from sport_fast.warmstart.demonstrations import conversation_demonstrations
from sport_fast.warmstart.loss import TreeSFTModule, tree_sft_loss


def test_the_loss_is_the_mean_nll_of_the_steps_and_each_token_is_computed_once():
    model = tiny_qwen2(7).double()
    demos = demonstrations(3)
    groups = [g for d in demos for g in d.groups()]
    assert [len(g.candidate_ids) for g in groups] == [1] * 6 and all(g.rejected == [] for g in groups)
    assert groups[1].context_ids == demos[0].context_ids + demos[0].steps[0] + demos[0].observations[0]
    batch = make_tree_batch(model, groups, candidates="all")
    loss, metrics = tree_sft_loss(model, batch)
    assert loss.item() == pytest.approx(separate_nll(model, groups), rel=1e-9)
    unique = sum(len(d.context_ids) + sum(map(len, d.steps)) + sum(map(len, d.observations)) for d in demos)
    assert batch.tree.num_tokens == unique, "a demonstration's steps must share their context, once"
    assert int(metrics["tokens/scored"]) == sum(len(s) for d in demos for s in d.steps)


def test_the_module_trains_the_steps_and_its_records_have_no_pair_metrics():
    from sport_fast.config import TrainSection
    from sport_fast.dpo.trainer import train_round
    model = tiny_qwen2(2)
    groups = [g for d in demonstrations(5) for g in d.groups()]
    before = separate_nll(model, groups)
    summary = train_round(model, groups, TrainSection(lr=3e-2, epochs=4, max_tokens_per_batch=10_000), seed=0,
                          objective="sft")
    assert summary["train_steps"] == 4 and summary["reward_accuracy"] is None and summary["pairs"] == 0
    assert separate_nll(model, groups) < 0.8 * before, "four steps of SFT should lower the steps' NLL"
    loss, record = TreeSFTModule(model, TrainSection())(groups)
    assert record["acc"] is None and float(record["loss"]) == pytest.approx(separate_nll(model, groups), rel=1e-4)


def test_conversation_files_become_one_group_per_assistant_turn(tmp_path):
    tok = vl_tokenizer()
    records = [{"system": "w1 w2", "conversations": [
        {"from": "human", "value": "w3 w4"}, {"from": "gpt", "value": "w5 w6 w7"},
        {"from": "observation", "value": "w8"}, {"from": "gpt", "value": "w9"}]}]
    (tmp_path / "traj.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    [groups] = conversation_demonstrations(tmp_path / "traj.jsonl", tok)
    assert len(groups) == 2
    first, second = groups
    assert second.context_ids[:len(first.context_ids) + len(first.candidate_ids[0])] == \
        first.context_ids + first.candidate_ids[0], "the second step's context extends the first step's"
    assert "w5 w6 w7" in tok.decode(first.candidate_ids[0]) and "w9" in tok.decode(second.candidate_ids[0])
    (tmp_path / "img.jsonl").write_text(json.dumps({**records[0], "images": ["a.png"]}) + "\n")
    with pytest.raises(ValueError, match="has images"):
        conversation_demonstrations(tmp_path / "img.jsonl", tok)


def test_the_warm_start_takes_the_named_families_and_refuses_unknown_ones():
    from types import SimpleNamespace

    from sport_fast.run.errors import SetupError
    from sport_fast.run.warm_start import chosen_tasks
    tasks = [SimpleNamespace(id=f"t{i}", source=f"suite:{f}") for i, f in enumerate(["a", "b", "a", "c"])]
    assert [t.id for t in chosen_tasks(tasks, "a, c", 0)] == ["t0", "t2", "t3"]
    assert [t.id for t in chosen_tasks(tasks, "", 2)] == ["t0", "t1"]
    with pytest.raises(SetupError, match="no training task: \\['z'\\]"):
        chosen_tasks(tasks, "a,z", 0)


def test_reference_programs_are_rendered_as_the_agent_sees_its_steps_and_verified(smollm2, tmp_path):
    from sport_fast.agent.actions import parse_step
    from sport_fast.agent.agent import Agent
    from sport_fast.model.chat_format import ChatFormat
    from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
    from sport_fast.sandbox.sandbox import Sandbox
    from sport_fast.tasks.suite import FAMILIES, generate_suite
    from sport_fast.tools import default_registry
    from sport_fast.warmstart.demonstrations import reference_demonstrations
    tok = smollm2[1]
    tasks = generate_suite(tmp_path, n_train=len(FAMILIES), n_heldout=0, seed=4)["train"]
    tasks[0].reference_steps = ["final_answer('surely not the answer')"]  # a program that answers wrongly
    tools, chat = default_registry(), ChatFormat(tok)
    sandbox = Sandbox(timeout_s=30, tools=tools, allow_weak_isolation=not all(available_layers()[k] for k in REQUIRED_LAYERS))
    demos, failed = reference_demonstrations(tasks, chat, tools, sandbox)
    assert failed == [tasks[0].id] and len(demos) == len(tasks) - 1

    class Recorder:
        def start(self, context_ids, images=()):
            self.context = list(context_ids)
            raise StopIteration
    agent = Agent(Recorder(), chat, sandbox, tools)
    for demo, task in zip(demos, tasks[1:]):
        with pytest.raises(StopIteration):
            agent.run(task)
        assert demo.context_ids == agent.policy.context, "the demonstration's prompt is not the agent's"
        assert len(demo.steps) == len(task.reference_steps) and len(demo.observations) == len(demo.steps) - 1
        codes = [parse_step(tok.decode(s)) for s in demo.steps]
        assert [c.code for c in codes] == task.reference_steps and all(not c.repairs for c in codes)


def test_the_rounds_explore_the_training_tasks_the_warm_start_did_not_demonstrate(capsys):
    from types import SimpleNamespace

    from sport_fast.config import SftSection
    from sport_fast.run.task_sets import rotation
    from sport_fast.run.warm_start import undemonstrated
    tasks = [SimpleNamespace(id=f"t{i}", source=f"suite:{f}") for i, f in enumerate(["a", "b", "a", "c", "b"])]
    ids = lambda ts: [t.id for t in ts]  # noqa: E731
    assert ids(undemonstrated(tasks, SftSection(enabled=False))) == ids(tasks)
    assert ids(undemonstrated(tasks, SftSection(enabled=True, families="a"))) == ["t1", "t3", "t4"]
    assert ids(undemonstrated(tasks, SftSection(enabled=True, n_tasks=2))) == ["t2", "t3", "t4"]
    assert ids(undemonstrated(tasks, SftSection(enabled=True, source="file", file="x.jsonl"))) == ids(tasks)
    assert ids(rotation(undemonstrated(tasks, SftSection(enabled=True, n_tasks=2)), 2, 1)) == ["t4", "t2"]
    assert capsys.readouterr().out == ""
    assert ids(undemonstrated(tasks, SftSection(enabled=True))) == ids(tasks)
    assert "demonstrated all 5 training tasks" in capsys.readouterr().out
