"""The agent loop and the evaluation, driven by a scripted policy through the real sandbox and tools, and
once by the real SmolLM2 through the prefix-caching sampler."""
import json
from types import SimpleNamespace

import pytest

from sport_fast.agent.agent import Agent, AgentConfig
from sport_fast.tasks.benchmark_formats import load_gaia, load_gta
from sport_fast.model.chat_format import ChatFormat
from sport_fast.agent.evaluation import evaluate
from sport_fast.sampler.prefix_sampler import PrefixSampler
from sport_fast.sampler.sampling import Candidate
from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tasks.suite import FAMILIES, generate_suite
from sport_fast.tools import default_registry
from sport_fast.tools.ocr import shutil as ocr_shutil

MALFORMED = "Thought: I know it already.<end_action>"


def step_text(code):
    return f"Thought: next.\n```py\n{code}\n```<end_action>"


class ScriptedPolicy:
    """Candidates from a plan keyed by the task's question; records every commit."""

    def __init__(self, tokenizer, plans):
        self.tokenizer, self.plans, self.commits = tokenizer, plans, []

    def start(self, context_ids):
        text = self.tokenizer.decode(context_ids)
        plan = next(p for q, p in self.plans.items() if q in text)
        return {"context_ids": list(context_ids), "plan": plan, "step": 0, "pending": []}

    def sample(self, h, params):
        texts = h["plan"][min(h["step"], len(h["plan"]) - 1)]
        assert len(texts) == len(params)
        h["pending"] = [Candidate(token_ids=self.tokenizer.encode(t, add_special_tokens=False), text=t,
                                  finish_reason="stop") for t in texts]
        return h["pending"]

    def commit(self, h, index, observation_ids):
        h["context_ids"] += h["pending"][index].token_ids + list(observation_ids)
        h["step"] += 1
        self.commits.append(self.tokenizer.decode(observation_ids))


@pytest.fixture(scope="module")
def tools():
    return default_registry()


@pytest.fixture(scope="module")
def sandbox(tools):
    return Sandbox(timeout_s=30, tools=tools,
                   allow_weak_isolation=not all(available_layers()[k] for k in REQUIRED_LAYERS))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    suite = generate_suite(tmp_path_factory.mktemp("suite"), n_train=0, n_heldout=len(FAMILIES), seed=11)
    return [t for t in suite["heldout"] if "ocr" not in t.expected_tools or ocr_shutil.which("tesseract")]


def test_reference_programs_score_full_marks_and_malformed_candidates_are_passed_over(smollm2, tasks, sandbox,
                                                                                         tools, tmp_path):
    tok = smollm2[1]
    plans = {t.question: [[MALFORMED, step_text(code)] for code in t.reference_steps] for t in tasks}
    policy = ScriptedPolicy(tok, plans)
    agent = Agent(policy, ChatFormat(tok), sandbox, tools, AgentConfig(k=2, max_steps=5))
    report = evaluate(tasks, agent, tmp_path)
    assert report["AnsAcc"] == 1.0 and report["ToolAcc"] == 1.0 and report["CodeExec"] == 1.0, report
    assert report["best_of_k"] and report["selection"] == "first_that_ran" and report["k"] == 2
    logs = [json.loads(line) for line in (tmp_path / "tasks.jsonl").read_text().splitlines()]
    first = logs[0]["trajectory"]["steps"][0]["candidates"]
    assert first[0]["parse_error"].startswith("no fenced Python code block") and logs[0]["trajectory"]["steps"][0]["chosen"] == 1
    assert all(c.startswith("<|im_end|>\n<|im_start|>user\nObservation:\n") and
               c.endswith("<|im_end|>\n<|im_start|>assistant\n") for c in policy.commits), policy.commits[:2]


def test_wrong_unfinished_and_failing_trajectories(smollm2, tasks, sandbox, tools):
    tok = smollm2[1]
    task = tasks[0]
    plans = {task.question: [[step_text("final_answer('nonsense')")]]}
    report = evaluate([task], Agent(ScriptedPolicy(tok, plans), ChatFormat(tok), sandbox, tools), None)
    assert report["AnsAcc"] == 0.0 and report["finished"] == 1
    plans = {task.question: [[step_text("x = 1 / 0")]]}
    agent = Agent(ScriptedPolicy(tok, plans), ChatFormat(tok), sandbox, tools, AgentConfig(max_errors=2))
    traj = agent.run(task)
    assert traj.stop_reason == "2 failed steps" and not traj.finished and len(traj.steps) == 2
    assert "ZeroDivisionError" in traj.steps[0].candidates[0].observation
    plans = {task.question: [[step_text("print(1)")]]}
    agent = Agent(ScriptedPolicy(tok, plans), ChatFormat(tok), sandbox, tools, AgentConfig(max_steps=3))
    report = evaluate([task], agent, None)
    assert report["AnsAcc"] == 0.0 and report["CodeExec"] == 1.0 and report["finished"] == 0
    abstain = Agent(ScriptedPolicy(tok, plans), ChatFormat(tok), sandbox, tools, AgentConfig(on_abstain="stop"),
                    select=lambda *a: None)
    assert abstain.run(task).stop_reason == "selector abstained"
    goes_on = Agent(ScriptedPolicy(tok, plans), ChatFormat(tok), sandbox, tools, AgentConfig(max_steps=2),
                    select=lambda *a: None).run(task)
    assert goes_on.stop_reason == "max_steps (2)" and [(s.chosen, s.followed) for s in goes_on.steps] == [(None, 0)] * 2


def test_gta_and_gaia_directories_load_and_score(smollm2, sandbox, tools, tmp_path):
    (tmp_path / "gta" / "image").mkdir(parents=True)
    (tmp_path / "gta" / "image" / "a.txt").write_text("x")
    (tmp_path / "gta" / "dataset.json").write_text(json.dumps({"0": {
        "tools": [{"name": "Calculator"}, {"name": "TextToImage"}], "files": [{"type": "image", "path": "image/a.txt"}],
        "dialogs": [{"role": "user", "content": "What is 6 times 7?"},
                    {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                        "name": "Calculator", "arguments": {"expression": "6*7"}}}]},
                    {"role": "tool", "name": "Calculator", "content": {"type": "text", "content": "42"}},
                    {"role": "assistant", "content": "42"}],
        "gt_answer": {"whitelist": [["42", "forty-two"]], "blacklist": None}}}))
    (tmp_path / "gaia").mkdir()
    (tmp_path / "gaia" / "metadata.jsonl").write_text(json.dumps({
        "task_id": "t1", "Question": "What is 2 to the 10th power?", "Level": 1, "Final answer": "1024",
        "file_name": "", "Annotator Metadata": {"Tools": "1. Calculator"}}) + "\n")
    gta, gaia = load_gta(tmp_path / "gta"), load_gaia(tmp_path / "gaia")
    assert gta[0].expected_tools == ["Calculator"] and gta[0].files == {"image/a.txt": str(tmp_path / "gta/image/a.txt")}
    assert gaia[0].expected_tools == ["calculator"] and gaia[0].answer == "1024"
    tok = smollm2[1]
    plans = {gta[0].question: [[step_text("final_answer(f'The answer is {calculator(\"6*7\")}.')")]],
             gaia[0].question: [[step_text("final_answer(calculator('2^10'))")]]}
    report = evaluate(gta + gaia, Agent(ScriptedPolicy(tok, plans), ChatFormat(tok), sandbox, tools), None)
    assert report["AnsAcc"] == 1.0 and report["ToolAcc"] == 1.0 and report["scored_tasks"] == 2
    (tmp_path / "gta" / "dataset.json").write_text("{}")
    with pytest.raises(ValueError, match="non-empty object"):
        load_gta(tmp_path / "gta")


def test_real_model_through_the_prefix_sampler_keeps_tokens_verbatim(smollm2, tasks, sandbox, tools):
    model, tok = smollm2
    sampler = PrefixSampler(model, tok, seed=0)
    agent = Agent(sampler, ChatFormat(tok), sandbox, tools, AgentConfig(k=2, max_steps=2, max_new_tokens=40))
    started = []
    original_start = sampler.start
    sampler.start = lambda ids: started.append(original_start(ids)) or started[-1]
    traj = agent.run(tasks[0])
    assert traj.steps and all(len(s.candidates) == 2 for s in traj.steps)
    for step in traj.steps:
        for c in step.candidates:
            assert c.token_ids and len(c.logprobs) == len(c.token_ids)
            assert (c.parse_error is None) == bool(c.code), c
    if len(traj.steps) == 2:  # the first step was committed: the context holds its tokens verbatim
        chosen = traj.steps[0].candidates[traj.steps[0].chosen]
        ctx = started[0].context_ids
        n0 = len(traj.context_ids)
        assert ctx[:n0] == traj.context_ids and ctx[n0:n0 + len(chosen.token_ids)] == chosen.token_ids
        assert started[0].steps[1].prefilled_tokens < 200, "commit must prefill only the observation"


def test_candidates_end_with_the_turn_as_inference_engines_end_them(smollm2, tools):
    """A step that emits the end-of-turn token has ended (vLLM, SGLang and our server stop there): the embedded
    sampler once decoded on past it, into made-up turns, and its data differed from a served run's."""
    model, tok = smollm2
    sampler, chat = PrefixSampler(model, tok, seed=0), ChatFormat(tok)
    params = Agent(sampler, chat, None, tools, AgentConfig(k=4, max_new_tokens=48))._params(SimpleNamespace(id="t"), 0)
    assert all(p.stop_token_ids == (tok.eos_token_id,) for p in params)
    cands = sampler.sample(sampler.start(chat.prompt_ids("You are brief.", "Reply with one word: yes or no?")), params)
    for c in cands:  # the instruct model answers this in a few tokens and closes its turn
        assert c.finish_reason == "stop" and c.token_ids[-1] == tok.eos_token_id, (c.finish_reason, c.text)
        assert tok.eos_token_id not in c.token_ids[:-1], c.text


def test_chat_glue_reproduces_the_template(smollm2):
    tok = smollm2[1]
    chat = ChatFormat(tok)
    step = "Thought: look.\n```py\nprint(1)\n```<end_action>"
    ids = chat.prompt_ids("SYS", "Q") + tok.encode(step, add_special_tokens=False) + chat.observation_ids(step, "1")
    want = tok.apply_chat_template([{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q"},
                                    {"role": "assistant", "content": step},
                                    {"role": "user", "content": "Observation:\n1"}], tokenize=False,
                                   add_generation_prompt=True)
    assert tok.decode(ids) == want


def test_lockstep_batch_scores_every_candidate_like_an_uncached_forward_of_its_own_trajectory(smollm2, tasks,
                                                                                               sandbox, tools):
    """Three tasks explored in lockstep (their candidates decode as one batch, contexts of different
    lengths): every candidate's log-probs equal an uncached forward of its own trajectory's context, and
    each trajectory's context grows by exactly its followed step and observation. (Token-for-token equality
    with a run alone is not asserted: a different batch shape rounds differently, and at temperature 1
    a draw near a CDF boundary can then pick the neighbouring token.)"""
    import torch
    model, tok = smollm2
    config = AgentConfig(k=2, max_steps=2, max_new_tokens=40, first_temperature=0.7, other_temperature=1.0)
    sampler = PrefixSampler(model, tok)
    started = []
    original_start = sampler.start
    sampler.start = lambda ids: started.append(original_start(ids)) or started[-1]
    together = Agent(sampler, ChatFormat(tok), sandbox, tools, config).run_many(tasks[:3])
    assert [t.task_id for t in together] == [t.id for t in tasks[:3]]
    assert len({len(t.context_ids) for t in together}) > 1, "the contexts should differ in length"
    for traj, handle in zip(together, started):
        context = list(traj.context_ids)
        for step in traj.steps:
            assert step.context_tokens == len(context)
            for cand in step.candidates:
                with torch.no_grad():
                    logp = model(torch.tensor([context + cand.token_ids])).logits[0].double().log_softmax(-1)
                want = [logp[len(context) - 1 + j, t].item() for j, t in enumerate(cand.token_ids)]
                assert max(abs(a - b) for a, b in zip(cand.logprobs, want)) < 2e-3
            if step.observation_ids:
                context += step.candidates[step.followed].token_ids + step.observation_ids
        assert handle.context_ids == context


def test_replay_mismatch_names_the_step_that_went_differently():
    from sport_fast.agent.agent import replay_mismatch
    assert replay_mismatch([], [None, None]) is None
    assert replay_mismatch([{"step": 1, "error": "NameError: x"}], [None, "NameError: x"]) is None
    assert "step 1" in replay_mismatch([{"step": 0, "error": "RuntimeError: again"}], [None])
    assert "step 2" in replay_mismatch([], [None, "ValueError: then"])
    assert "step 1" in replay_mismatch([{"step": 0, "error": "TypeError: other"}], ["ValueError: then"])


def test_a_candidate_whose_replayed_steps_went_differently_counts_as_failed(smollm2, tasks):
    """Step 1 calls a host tool that answers differently the second time: its replay before step 2's
    candidates raises where the original run did not, so they ran on another state than the trajectory's."""
    from sport_fast.tools import ToolRegistry
    from sport_fast.tools.registry import Tool
    calls = []

    def counter(workdir):
        calls.append(workdir)
        return len(calls)
    tools = ToolRegistry([Tool("counter", counter, "how often it was called", runs_in="host")])
    sandbox = Sandbox(timeout_s=30, tools=tools,
                      allow_weak_isolation=not all(available_layers()[k] for k in REQUIRED_LAYERS))
    task = tasks[0]
    plans = {task.question: [[step_text("if counter() > 1:\n    raise RuntimeError('not the first run')\nx = 1")],
                             [step_text("print(x)")]]}
    agent = Agent(ScriptedPolicy(smollm2[1], plans), ChatFormat(smollm2[1]), sandbox, tools,
                  AgentConfig(k=1, max_steps=2))
    traj = agent.run(task)
    first, second = traj.steps[0].candidates[0], traj.steps[1].candidates[0]
    assert first.ran and first.replay_error is None
    assert not second.ran and "replaying earlier step 1 went differently" in second.replay_error, second
    assert second.observation.startswith("Error: replaying earlier step 1"), second.observation


class RedrawPolicy(ScriptedPolicy):
    """A plan per step of draws (lists of candidate texts): sampling a step again gives its next draw."""

    def start(self, context_ids):
        return {**super().start(context_ids), "draw": 0}

    def sample(self, h, params):
        draws = h["plan"][h["step"]]
        texts = draws[min(h["draw"], len(draws) - 1)]
        h["draw"] += 1
        assert len(texts) == len(params)
        h["pending"] = [Candidate(token_ids=self.tokenizer.encode(t, add_special_tokens=False), text=t,
                                  finish_reason="stop") for t in texts]
        return h["pending"]

    def commit(self, h, index, observation_ids):
        super().commit(h, index, observation_ids)
        h["draw"] = 0


def test_a_step_where_nothing_ran_is_drawn_again_until_one_runs(smollm2, tasks, sandbox, tools):
    """resample=2, K=2: step 0's first draw fails (an exception, a malformed step), its second runs; step 1
    ran at once. The step keeps all four candidates, the failed ones become its rejected candidates, and the
    trajectory goes on with the one that ran (the policy holds only the last draw: commit index 1)."""
    from sport_fast.data.rejection import step_groups
    tok, task = smollm2[1], tasks[0]
    plans = {task.question: [[[step_text("x = 1 / 0"), MALFORMED], [MALFORMED, step_text("n = 41\nprint(n)")]],
                             [[step_text("final_answer(n + 1)"), step_text("final_answer(n)")]]]}
    policy = RedrawPolicy(tok, plans)
    traj = Agent(policy, ChatFormat(tok), sandbox, tools, AgentConfig(k=2, resample=2)).run(task)
    first, second = traj.steps
    assert [first.draws, second.draws] == [2, 1] and len(first.candidates) == 4 and len(second.candidates) == 2
    assert [c.ran for c in first.candidates] == [False, False, False, True]
    assert (first.chosen, first.followed) == (3, 3) and policy.commits[0].split("Observation:\n")[1].startswith("41")
    assert traj.final_answer == 42 and traj.finished
    groups = step_groups(traj, "sport", 0.3)
    assert groups[0].chosen == 3 and groups[0].rejected == [0, 1, 2] and groups[0].num_candidates == 4


def test_redrawing_stops_after_resample_draws_and_goes_on_with_the_last_draw(smollm2, tasks, sandbox, tools):
    tok, task = smollm2[1], tasks[0]
    fail = [step_text("x = 1 / 0"), MALFORMED]
    plans = {task.question: [[fail, fail, fail]] * 2}
    policy = RedrawPolicy(tok, plans)
    traj = Agent(policy, ChatFormat(tok), sandbox, tools, AgentConfig(k=2, resample=1, max_errors=2)).run(task)
    assert [s.draws for s in traj.steps] == [2, 2] and [len(s.candidates) for s in traj.steps] == [4, 4]
    assert [(s.chosen, s.followed) for s in traj.steps] == [(2, 2), (2, 2)]  # first_that_ran: none ran
    assert traj.stop_reason == "2 failed steps" and len(policy.commits) == 1
    judged = Agent(RedrawPolicy(tok, plans), ChatFormat(tok), sandbox, tools,
                   AgentConfig(k=2, resample=1, max_steps=1), select=lambda *a: None).run(task)
    assert [(s.chosen, s.followed, s.draws) for s in judged.steps] == [(None, 2, 2)]
    once = Agent(RedrawPolicy(tok, plans), ChatFormat(tok), sandbox, tools, AgentConfig(k=2, max_steps=1)).run(task)
    assert [(len(s.candidates), s.draws) for s in once.steps] == [(2, 1)]  # resample=0: as before


def test_a_redrawn_step_samples_new_seeds_and_the_first_draw_keeps_its_own(tools):
    agent = Agent(None, SimpleNamespace(turn_end_ids=(0,)), None, tools, AgentConfig(k=2, resample=1))
    wide = Agent(None, SimpleNamespace(turn_end_ids=(0,)), None, tools, AgentConfig(k=4))
    task = SimpleNamespace(id="t")
    first, second, four = agent._params(task, 0, 0), agent._params(task, 0, 1), wide._params(task, 0)
    assert [p.seed for p in first + second] == [p.seed for p in four] and len({p.seed for p in four}) == 4
    assert [p.temperature for p in second] == [p.temperature for p in first] == [0.7, 1.2]
    with pytest.raises(ValueError, match="resample must be >= 0"):
        AgentConfig(resample=-1)


class FailingSandbox:
    """Runs every candidate as a program that raises (so that nothing runs and every step is drawn again)."""

    def __init__(self, inner):
        self.inner = inner

    def run(self, code, files=None, prelude=()):
        return self.inner.run("raise ValueError('refused by the test')", files=files, prelude=prelude)


def test_the_prefix_sampler_continues_a_redrawn_step_with_the_last_draws_tokens(smollm2, tasks, sandbox, tools):
    """Through the real sampler (which holds only the last draw's candidates): after a step drawn twice where
    nothing ran, the cached context continues with the last draw's first candidate, verbatim."""
    model, tok = smollm2
    sampler = PrefixSampler(model, tok, seed=0)
    started = []
    original_start = sampler.start
    sampler.start = lambda ids: started.append(original_start(ids)) or started[-1]
    config = AgentConfig(k=2, resample=1, max_steps=2, max_new_tokens=24)
    traj = Agent(sampler, ChatFormat(tok), FailingSandbox(sandbox), tools, config).run(tasks[0])
    first = traj.steps[0]
    assert first.draws == 2 and len(first.candidates) == 4 and first.followed == 2 and len(traj.steps) == 2
    followed, n0 = first.candidates[2], len(traj.context_ids)
    ctx = started[0].context_ids
    assert ctx[:n0] == traj.context_ids and ctx[n0:n0 + len(followed.token_ids)] == followed.token_ids
    assert ctx[n0 + len(followed.token_ids):][:len(first.observation_ids)] == first.observation_ids
