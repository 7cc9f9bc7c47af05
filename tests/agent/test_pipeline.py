"""Lockstep batches in flight (``agent.pipeline``): while one batch's candidates run in the sandbox and are
judged, another decodes, and the trajectories equal the sequential path's, decode batch for decode batch."""
import threading
import zlib
from collections import Counter

from tiny_agent import picking_judge, sandbox_and_tools, tiny_config, untimed
from tiny_models import step_tasks, step_tokenizer, tiny_qwen2

from sport_fast.agent.agent import Agent, lockstep_batches
from sport_fast.judge.step_judge import StepJudge
from sport_fast.llm.client import OpenAIChatBackend
from sport_fast.model.chat_format import ChatFormat
from sport_fast.sampler.prefix_sampler import PrefixSampler


class RecordingSampler(PrefixSampler):
    """The prefix sampler, noting which trajectories (and at which step) each decode batch holds, and when
    one starts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.decoding, self.names = [], threading.Event(), {}

    def start(self, context_ids, images=()):
        traj = super().start(context_ids, images)
        self.names[id(traj)] = zlib.crc32(str(list(context_ids)).encode())
        return traj

    def sample_many(self, requests):
        self.batches.append(tuple(sorted((self.names[id(t)], len(t.steps)) for t, _ in requests)))
        self.decoding.set()
        return super().sample_many(requests)


class OverlapJudge(StepJudge):
    """Counts judge calls in flight, and holds the first one until some decode starts meanwhile."""

    def __init__(self, *args, sampler=None, wait_s=20.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampler, self.now, self.most, self.saw_decode, self.guard = sampler, 0, 0, None, threading.Lock()
        self.wait_s = wait_s

    def judge(self, task, step, candidates, history):
        with self.guard:
            self.now += 1
            self.most = max(self.most, self.now)
            first = self.saw_decode is None
            if first:
                self.sampler.decoding.clear()
                self.saw_decode = False
        if first:  # another batch decodes while this one is being judged (with one batch in flight: never)
            self.saw_decode = self.sampler.decoding.wait(timeout=self.wait_s)
        try:
            return super().judge(task, step, candidates, history)
        finally:
            with self.guard:
                self.now -= 1


def explore(tmp_path, in_flight: int, judge_url: str):
    cfg = tiny_config(tmp_path)
    model, tok = tiny_qwen2(5), step_tokenizer()
    sampler = RecordingSampler(model, tok, seed=0)
    sandbox, tools = sandbox_and_tools()
    judge = OverlapJudge(OpenAIChatBackend(judge_url, "m", timeout_s=30, max_retries=0, max_concurrency=4),
                         cfg.judge, seed=3, sampler=sampler, wait_s=1.0 if in_flight == 1 else 20.0)
    agent = Agent(sampler, ChatFormat(tok), sandbox, tools, cfg.explore, select=judge, selection_name="judge", seed=3,
                  workers=3, in_flight=in_flight)
    tasks = step_tasks(6)
    out = [(c, t) for c, trajectories, _ in agent.run_batches(lockstep_batches(tasks, 2)) for c, t in
           zip(c, trajectories)]
    return [(task.id, untimed(traj.to_json())) for task, traj in out], judge, sampler


def test_batches_in_flight_overlap_the_judge_and_give_the_sequential_trajectories(tmp_path):
    server = picking_judge(delay_s=0.2)
    try:
        one, judge_one, sampler_one = explore(tmp_path / "one", 1, server.url)
        three, judge_three, sampler_three = explore(tmp_path / "three", 3, server.url)
    finally:
        server.close()
    assert [t for t, _ in three] == [t for t, _ in one] == [f"t{i}" for i in range(6)], "results out of order"
    assert Counter(sampler_three.batches) == Counter(sampler_one.batches), "a decode batch changed its rows"
    for (task, a), (_, b) in zip(one, three):
        assert a == b, f"{task}: the trajectory differs with three batches in flight"
    cands = [c for _, t in one for s in t["steps"] for c in s["candidates"]]
    assert sum(c["parse_error"] is None and c["error"] is None for c in cands) >= 4, "too few candidates ran"
    assert judge_one.stats.calls > 0, "the judge was never asked: the case proves nothing"
    assert judge_one.saw_decode is False, "with one batch in flight nothing decodes while it is judged"
    assert judge_three.saw_decode, "no other batch decoded while one was being judged"
    assert judge_three.most >= 2, "judge calls did not overlap"
    assert all(c.get("weight_version") == 0 for c in cands)
