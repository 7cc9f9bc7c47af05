"""The step judge: strict validation, abstentions (never a default pick), opaque shuffled tags, two orders,
SPORT's rejection rule, step groups from trajectories, the request cache; and the real ``openai`` client
against the project's own server and against a scripted server that misbehaves."""
import json
import time
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, chat_reply

from sport_fast.agent.agent import CandidateRecord, StepRecord, TrajectoryRecord
from sport_fast.data.bleu import char_bleu
from sport_fast.llm.client import CachedBackend, ChatReply, ChatRequest, OpenAIChatBackend
from sport_fast.judge.step_judge import JudgeConfig, StepJudge, validate_reply
from sport_fast.run.policy import judge_uses
from sport_fast.data.rejection import rejected_candidates, step_groups
from sport_fast.tasks.task import Task

TASK = Task(id="t1", question="How many red shapes are in shapes.png?", answer="3",
            captions={"shapes.png": "coloured shapes on white"})
TAGS = ["K", "Q", "B"]


def cand(text, ran=True, tokens=None):
    return CandidateRecord(text=text, token_ids=tokens or [len(text) % 50 + 1, 7], logprobs=[], finish_reason="stop",
                           thought=text.split("\n")[0], code=text, observation=f"out of {text[:10]}",
                           error=None if ran else "NameError: x")


def reply(text, finish="stop", **kw):
    return ChatReply(text=text, finish_reason=finish, **kw)


@pytest.mark.parametrize("r, problem", [
    (reply('{"best": "Q", "reason": "counts the red shapes"}'), None),
    (reply('```json\n{"best": "B", "reason": "ok"}\n```'), None),
    (reply('{"best": "Q", "reason": "x", "score": 3}'), "not an object with exactly 'best' and 'reason'"),
    (reply('{"best": "A", "reason": "x"}'), "best='A' is not a candidate tag"),
    (reply('{"best": "Q", "reason": "  "}'), "reason is empty"),
    (reply('The best is Q because {"best": "Q"}'), "not JSON"),
    (reply('{"best": "Q", "reas', finish="length"), "cut off (finish_reason=length)"),
    (reply(None, refusal="I cannot help with that"), "refused: I cannot help with that"),
    (ChatReply(error="HTTP 503: overloaded"), "no reply: HTTP 503: overloaded"),
])
def test_replies_are_validated_strictly(r, problem):
    tag, reason, got = validate_reply(r, TAGS)
    assert got == problem
    assert (tag is None) == (problem is not None) and (reason != "") == (problem is None)


class OracleBackend:
    """Picks the candidate whose code mentions 'red' (or, biased, whatever is listed first); records requests."""

    def __init__(self, biased=False):
        self.biased, self.requests, self.name = biased, [], "oracle"

    def complete(self, request):
        self.requests.append(request)
        prompt = request.messages[1][1]
        blocks = [b for b in prompt.split("\n\n") if b.startswith("[")]
        tags = [b[1] for b in blocks]
        assert tags == request.schema["properties"]["best"]["enum"]
        best = tags[0] if self.biased else next(b[1] for b in blocks if "red" in b)
        return ChatReply(text=json.dumps({"best": best, "reason": "it counts red"}), finish_reason="stop",
                         latency_s=0.01)


def test_judge_finds_the_best_under_shuffled_opaque_tags_in_both_orders():
    cands = [cand("print(1)"), cand("count_objects('shapes.png', color='red')"), cand("print(2)"),
             cand("broken(", ran=False)]
    oracle = OracleBackend()
    judge = StepJudge(oracle, JudgeConfig(two_orders=True))
    positions = set()
    for step in range(6):
        verdict = judge(TASK, step, cands, history=[])
        assert verdict.chosen == 1 and verdict.kind == "judge" and len(verdict.replies) == 2
        assert all(r["text"] and r["pick"] == 1 for r in verdict.replies)
        first, second = verdict.replies
        assert first["order"] == second["order"][::-1] and 3 not in first["order"]  # failed ones never shown
        positions.add(first["order"].index(1))
    assert len(positions) > 1, "candidate 1 was always shown in the same place"
    assert "coloured shapes on white" in oracle.requests[0].messages[1][1]
    assert judge.stats.steps == 6 and judge.stats.calls == 12 and judge.stats.abstained == 0


def test_a_position_biased_judge_disagrees_with_itself_and_abstains():
    cands = [cand("print(1)"), cand("count_objects('shapes.png', color='red')"), cand("print(2)")]
    judge = StepJudge(OracleBackend(biased=True), JudgeConfig(two_orders=True))
    verdicts = [judge(TASK, step, cands, history=[]) for step in range(4)]
    assert all(v.chosen is None and v.abstain_reason == "orders disagree" for v in verdicts)
    assert judge.stats.rates()["disagreement_rate"] == 1.0 and judge.stats.rates()["abstention_rate"] == 1.0


def test_no_candidate_ran_abstains_and_a_single_one_is_chosen_by_rule_without_a_call():
    oracle = OracleBackend()
    judge = StepJudge(oracle)
    none = judge(TASK, 0, [cand("a(", ran=False), cand("b(", ran=False)], [])
    single = judge(TASK, 1, [cand("a(", ran=False), cand("print(3)")], [])
    assert none.chosen is None and none.abstain_reason == "no candidate ran"
    assert single.chosen == 1 and single.kind == "rule" and oracle.requests == []
    forced = StepJudge(oracle, JudgeConfig(judge_single=True))
    assert forced(TASK, 1, [cand("a(", ran=False), cand("print('red')")], []).kind == "judge"


def test_candidates_that_ran_alike_are_chosen_by_rule_without_a_call():
    """A warm-started policy often samples the same step K times: nothing to tell apart, so no judge call;
    the failed candidates still become the step's rejected ones."""
    oracle = OracleBackend()
    judge = StepJudge(oracle)
    alike = [cand("a(", ran=False), cand("print('red')"), cand("print('red')")]
    verdict = judge(TASK, 0, alike, [])
    assert (verdict.chosen, verdict.kind, oracle.requests) == (1, "rule", [])
    assert judge(TASK, 1, [cand("print('red')"), cand("print(0)")], []).kind == "judge"
    assert StepJudge(oracle, JudgeConfig(judge_single=True))(TASK, 2, alike, []).kind == "judge"


def test_history_of_followed_steps_reaches_the_prompt():
    oracle = OracleBackend()
    StepJudge(oracle)(TASK, 1, [cand("print('red')"), cand("print(0)")], history=[cand("size = image_size('x')")])
    assert "Step 1 (already taken)" in oracle.requests[0].messages[1][1]
    assert "size = image_size('x')" in oracle.requests[0].messages[1][1]


def test_sport_rejection_rule_and_alternatives():
    chosen = "Thought: count red\ncount_objects('shapes.png', color='red')"
    cands = [cand(chosen, tokens=[1, 2]),
             cand(chosen.replace("red", "Red"), tokens=[1, 3]),          # similar, ran: not rejected
             cand("Thought: guess\nfinal_answer(7)", tokens=[4]),        # dissimilar, ran: rejected
             cand(chosen, ran=False, tokens=[5]),                        # failed: rejected however similar
             cand(chosen, tokens=[1, 2])]                                # token-identical: never a pair
    assert char_bleu(cands[1].text, chosen) >= 0.3 > char_bleu(cands[2].text, chosen)
    assert rejected_candidates(cands, 0, "sport") == [2, 3]
    assert rejected_candidates(cands, 0, "sport", bleu_threshold=0.99) == [1, 2, 3]
    assert rejected_candidates(cands, 0, "all") == [1, 2, 3]
    assert rejected_candidates(cands, 0, "worst") == [3]
    assert rejected_candidates(cands[:3], 0, "worst") == [2]
    with pytest.raises(ValueError, match="rejection rule"):
        rejected_candidates(cands, 0, "best")


def test_step_groups_rebuild_each_context_and_skip_abstentions():
    a, b, c = cand("print('x')", tokens=[10, 11]), cand("final_answer(1)", tokens=[12]), cand("z(", False, [13])
    traj = TrajectoryRecord(task_id="t1", context_ids=[1, 2, 3], steps=[
        StepRecord(3, [a, b, c], chosen=0, followed=0, observation_ids=[20, 21], verdict={"kind": "judge"}),
        StepRecord(7, [a, b, c], chosen=None, followed=0, observation_ids=[22]),
        StepRecord(10, [b, a, c], chosen=1, followed=1, observation_ids=[23])])
    groups = step_groups(traj, "sport", meta={"round": 0})
    assert [g.meta["step"] for g in groups] == [0, 2]
    assert groups[0].context_ids == [1, 2, 3] and groups[0].rejected == [1, 2] and groups[0].verdict["kind"] == "judge"
    assert groups[1].context_ids == [1, 2, 3, 10, 11, 20, 21, 10, 11, 22]
    assert groups[1].chosen == 1 and groups[1].meta == {"round": 0, "task_id": "t1", "step": 2}
    assert len(groups[1].context_ids) == traj.steps[2].context_tokens
    back = TrajectoryRecord.from_json(json.loads(json.dumps(traj.to_json())))
    assert [g.content_hash() for g in step_groups(back)] == [g.content_hash() for g in groups]


class CountingBackend:
    name = "counting"

    def __init__(self, fail=False):
        self.calls, self.fail = 0, fail

    def complete(self, request):
        self.calls += 1
        return ChatReply(error="HTTP 500: boom") if self.fail else ChatReply(text="{}", finish_reason="stop")


def test_the_cache_serves_a_resumed_run_and_never_caches_failures(tmp_path):
    req = ChatRequest(messages=(("user", "hi"),), seed=3)
    inner = CountingBackend()
    first = CachedBackend(inner, tmp_path / "cache.jsonl")
    assert first.complete(req).cached is False and first.complete(req).cached is True and inner.calls == 1
    resumed = CachedBackend(inner, tmp_path / "cache.jsonl")
    assert resumed.complete(req).text == "{}" and inner.calls == 1
    assert resumed.complete(ChatRequest(messages=(("user", "hi"),), seed=4)).cached is False and inner.calls == 2
    failing = CountingBackend(fail=True)
    cache = CachedBackend(failing, tmp_path / "other.jsonl")
    assert cache.complete(req).error and cache.complete(req).error and failing.calls == 2



def test_a_judge_that_is_the_policy_is_cached_per_weight_version(tmp_path):
    """judge.backend=local judges with the weights being trained: a verdict of round 0's weights is not
    served to round 1's, and version 0 keeps the keys a cache without versions wrote."""
    req = ChatRequest(messages=(("user", "hi"),), seed=3)
    inner = CountingBackend()
    plain = CachedBackend(inner, tmp_path / "plain.jsonl")
    policy = CachedBackend(inner, tmp_path / "policy.jsonl", follows_weights=True)
    assert policy.key(req) == plain.key(req)
    policy.complete(req)
    judge_uses(SimpleNamespace(judge_backend=policy), 1)  # what publish and every rank's work do
    assert policy.key(req) != plain.key(req) and policy.complete(req).cached is False and inner.calls == 2
    policy.use_weights(0)
    assert policy.complete(req).cached is True and inner.calls == 2
    resumed = CachedBackend(inner, tmp_path / "policy.jsonl", follows_weights=True)
    resumed.use_weights(1)
    assert resumed.complete(req).cached is True and inner.calls == 2
    plain.use_weights(5)  # a judge of its own (a served model, an API) keeps its verdicts across rounds
    assert plain.key(req) == policy.__class__(inner, tmp_path / "x.jsonl").key(req)

# -- the real openai client against a scripted misbehaving server ----------------------------------
def scripted_respond(mode: str, fail_first: int):
    """How a misbehaving chat endpoint answers: 503 for the first ``fail_first`` requests, then ``mode``."""
    def respond(path, body, server):
        if server.hits <= fail_first:
            return 503, {"error": {"message": "overloaded"}}
        if mode == "slow":
            time.sleep(2.5)
        if mode == "garbage":
            return 200, b"<html>502 Bad Gateway</html>", "text/html"
        if mode == "empty_choices":
            return 200, {**chat_reply(None), "choices": []}
        content, finish, refusal = {
            "ok": ('{"best": "%s", "reason": "fine"}', "stop", None),
            "slow": ('{"best": "%s", "reason": "fine"}', "stop", None),
            "truncated": ('{"best": "%s", "rea', "length", None),
            "prose": ("I think the second one is best.", "stop", None),
            "refusal": (None, "stop", "I can't assist with that.")}[mode]
        return 200, chat_reply(content and content.replace("%s", server.first_tag), finish, refusal)
    return respond


class FirstTag:
    """Wraps the backend to tell the scripted server which tag is valid for this request."""

    def __init__(self, backend, server):
        self.backend, self.server, self.name = backend, server, backend.name

    def complete(self, request):
        self.server.first_tag = request.schema["properties"]["best"]["enum"][0]
        return self.backend.complete(request)


@pytest.mark.parametrize("mode, fail_first, expect", [
    ("ok", 0, None),
    ("ok", 2, None),                       # two 503s, then an answer: the bounded retries recover
    ("ok", 9, "no reply: HTTP 503"),       # 503 every time: gives up after max_retries
    ("slow", 0, "no reply: timed out"),
    ("garbage", 0, "no reply: reply is not a chat completion"),
    ("empty_choices", 0, "no reply: reply is not a chat completion"),
    ("truncated", 0, "cut off (finish_reason=length)"),
    ("prose", 0, "not JSON"),
    ("refusal", 0, "refused: I can't assist with that."),
])
def test_the_judge_abstains_on_every_failure_of_a_misbehaving_server(mode, fail_first, expect):
    server = FakeOpenAI(scripted_respond(mode, fail_first))
    try:
        backend = OpenAIChatBackend(server.url, "m", timeout_s=1.0, max_retries=2)
        judge = StepJudge(FirstTag(backend, server))
        t0 = time.perf_counter()
        verdict = judge(TASK, 0, [cand("print(1)"), cand("print(2)")], [])
        elapsed = time.perf_counter() - t0
    finally:
        server.close()
    if expect is None:
        assert verdict.chosen is not None and verdict.kind == "judge", verdict
    else:
        assert verdict.chosen is None and verdict.abstain_reason.startswith(expect), verdict.abstain_reason
        assert verdict.replies and "error" in verdict.replies[0]
    want_hits = 3 if mode == "slow" or fail_first else 1  # 1 try + max_retries=2 when it keeps failing
    assert server.hits == want_hits, f"{mode}: {server.hits} requests"
    assert elapsed < 12, f"{mode}: the judge took {elapsed:.1f}s; timeouts and retries must bound it"


# -- the real openai client against the project's own server (structured output) ------------------
@pytest.fixture(scope="module")
def own_server(smollm2):
    from sport_fast.sampler.server import SamplerService, start_server
    model, tok = smollm2
    srv = start_server(SamplerService(model, tok, "smollm2"))
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_a_real_model_judges_over_loopback_with_structured_output(own_server, tmp_path):
    backend = CachedBackend(OpenAIChatBackend(own_server, "smollm2", timeout_s=120, max_retries=0),
                            tmp_path / "judge_cache.jsonl")
    judge = StepJudge(backend, JudgeConfig(two_orders=False, max_tokens=96))
    cands = [cand("Thought: count red\nprint(count_objects('shapes.png', color='red'))"),
             cand("Thought: guess\nprint('I do not know')")]
    verdict = judge(TASK, 0, cands, [])
    raw = verdict.replies[0]["text"]
    value = json.loads(raw)  # structured output: always a JSON object of the schema
    assert set(value) == {"best", "reason"} and value["best"] in verdict.replies[0]["tags"]
    if verdict.chosen is None:  # only a reason that ran out of tokens may abstain
        assert verdict.abstain_reason.startswith("cut off")
    else:
        assert verdict.chosen == verdict.replies[0]["pick"] and verdict.reason
    again = judge(TASK, 0, cands, [])
    assert again.replies[0]["cached"] and again.replies[0]["text"] == raw and backend.hits == 1
