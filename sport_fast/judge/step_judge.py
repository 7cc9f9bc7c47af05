"""The step judge: an LLM picks the best of a step's candidates, or abstains. Never a default pick.

Input, as in SPORT's verifier: the task (with image captions, for a judge that cannot see images), the
earlier chosen steps with their observations, and each candidate's thought, code and execution result.
Only candidates whose code ran are shown (failed and malformed ones are rejected by rule anyway); they
appear under opaque tags in an order drawn from the step's seed. The reply must be exactly
``{"best": <tag>, "reason": <text>}`` (structured output where the endpoint supports it) and is validated
strictly. A reply that is refused, cut off, fails to arrive or does not validate is an *abstention*: the
step yields no pair (the trajectory may still go on, see ``agent.py``). With ``two_orders`` the candidates
are judged again in the reverse order and only an agreement counts.

Raw judge text is kept with every verdict; ``JudgeStats`` counts calls, latency, abstentions (by reason)
and disagreements per round.
"""
from __future__ import annotations

import json
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from sport_fast.judge.stats import JudgeStats
from sport_fast.llm.client import ChatRequest

PROMPT_VERSION = "judge-v1"
TAG_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"
SYSTEM = ("You review the steps of an agent that solves tasks by writing Python code that calls tools. "
          "Given the task, the steps so far and several candidate next steps with their execution results, "
          "pick the candidate that makes the most correct progress towards the answer. Judge by the results, "
          "not by how confident the thought sounds. Reply with JSON only: "
          '{"best": "<tag of the best candidate>", "reason": "<one sentence>"}')


@dataclass
class JudgeConfig:
    """How the judge asks; the one home of these fields (the config's ``judge`` section is this plus how to
    reach the judge model)."""
    two_orders: bool = False        # judge again in reverse order, keep agreements only
    judge_single: bool = False      # call the judge when only one candidate ran, or all that ran are the same
                                    # text (else the first is chosen by rule)
    temperature: float = 0.0        # the judge model's sampling temperature
    max_tokens: int = 128           # its reply budget
    max_observation_chars: int = 600  # each result shown to it, clipped
    max_code_chars: int = 1200      # each candidate's code shown to it, clipped

    def __post_init__(self) -> None:
        if self.max_tokens < 8 or self.temperature < 0:
            raise ValueError("judge: max_tokens must be >= 8 and temperature >= 0")


@dataclass
class Verdict:
    chosen: int | None               # candidate index, or None: abstained
    kind: str                        # "judge", "rule" (only one ran, or all that ran alike) or "abstain"
    reason: str = ""
    abstain_reason: str | None = None
    replies: list[dict] = field(default_factory=list)   # per order: tags, raw text, finish, error, latency

    def to_json(self) -> dict:
        return asdict(self)


class StepJudge:
    """``judge(task, step, candidates, history) -> Verdict``; ``backend`` is any ``complete(ChatRequest)``."""

    def __init__(self, backend, config: JudgeConfig | None = None, seed: int = 0):
        """``seed``: with the task and step, the order and tags candidates are shown under."""
        self.backend, self.config, self.seed = backend, config or JudgeConfig(), seed
        self.stats, self.lock = JudgeStats(), threading.Lock()

    def judge(self, task, step: int, candidates: list, history: list) -> Verdict:
        ran = [i for i, c in enumerate(candidates) if c.ran]
        if not ran:
            return self._count(Verdict(None, "abstain", abstain_reason="no candidate ran"))
        if len(ran) == 1 and not self.config.judge_single:
            return self._count(Verdict(ran[0], "rule", reason="the only candidate whose code ran"))
        if len({candidates[i].text for i in ran}) == 1 and not self.config.judge_single:
            # nothing to tell apart (a warm-started policy often samples one step K times): no call, same pairs
            return self._count(Verdict(ran[0], "rule", reason="the candidates that ran are the same step"))
        orders = self._orders(task, step, ran)
        with ThreadPoolExecutor(max_workers=len(orders)) as pool:
            replies = list(pool.map(lambda o: self._ask(task, history, candidates, o), orders))
        return self._count(_combine(replies))

    def __call__(self, task, step: int, candidates: list, history: list) -> Verdict:
        return self.judge(task, step, candidates, history)

    def _orders(self, task, step: int, ran: list[int]) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{task.id}:{step}")
        first = rng.sample(ran, len(ran))
        return [first, first[::-1]] if self.config.two_orders else [first]

    def _ask(self, task, history, candidates, order: list[int]) -> dict:
        rng = random.Random(f"tags:{self.seed}:{task.id}:{order}")
        tags = rng.sample(TAG_LETTERS, len(order))
        request = ChatRequest(messages=(("system", SYSTEM), ("user", self._prompt(task, history, candidates,
                                                                                  order, tags))),
                              schema=reply_schema(tags), temperature=self.config.temperature,
                              max_tokens=self.config.max_tokens, seed=self.seed)
        reply = self.backend.complete(request)
        pick, reason, problem = validate_reply(reply, tags)
        record = {"order": order, "tags": tags, "text": reply.text, "finish_reason": reply.finish_reason,
                  "error": reply.error, "refusal": reply.refusal, "latency_s": reply.latency_s,
                  "cached": reply.cached, "pick": None if pick is None else order[tags.index(pick)],
                  "reason": reason, "problem": problem}
        with self.lock:
            self.stats.count_reply(record)
        return record

    def _prompt(self, task, history, candidates, order, tags) -> str:
        c = self.config
        parts = [f"Task: {task.question}"]
        captions = getattr(task, "captions", {}) or {}
        if captions:
            parts.append("Files:\n" + "\n".join(f"- {name}: {text}" for name, text in captions.items()))
        for n, h in enumerate(history, 1):
            parts.append(f"Step {n} (already taken):\nThought: {h.thought}\nCode:\n{_clip(h.code, c.max_code_chars)}"
                         f"\nObservation: {_clip(h.observation, c.max_observation_chars)}")
        parts.append("Candidate next steps:")
        for tag, i in zip(tags, order):
            cand = candidates[i]
            parts.append(f"[{tag}]\nThought: {cand.thought}\nCode:\n{_clip(cand.code, c.max_code_chars)}\n"
                         f"Result: {_clip(cand.observation or '(no output)', c.max_observation_chars)}")
        parts.append(f"Which candidate is best? Answer with JSON: {{\"best\": one of {', '.join(tags)}, "
                     f"\"reason\": one sentence}}.")
        return "\n\n".join(parts)

    def _count(self, verdict: Verdict) -> Verdict:
        with self.lock:
            self.stats.count_verdict(verdict.to_json())
        return verdict


def reply_schema(tags: list[str]) -> dict:
    return {"type": "object", "properties": {"best": {"type": "string", "enum": list(tags)},
                                             "reason": {"type": "string"}},
            "required": ["best", "reason"], "additionalProperties": False}


_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def validate_reply(reply, tags: list[str]) -> tuple[str | None, str, str | None]:
    """(tag, reason, None) for a valid reply, else (None, "", why it is not one)."""
    if reply.error is not None:
        return None, "", f"no reply: {reply.error}"
    if reply.refusal:
        return None, "", f"refused: {reply.refusal}"
    if reply.finish_reason != "stop":
        return None, "", f"cut off (finish_reason={reply.finish_reason})"
    text = (reply.text or "").strip()
    fenced = _FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        return None, "", "not JSON"
    if not isinstance(value, dict) or set(value) != {"best", "reason"}:
        return None, "", "not an object with exactly 'best' and 'reason'"
    if value["best"] not in tags:
        return None, "", f"best={value['best']!r} is not a candidate tag"
    if not isinstance(value["reason"], str) or not value["reason"].strip():
        return None, "", "reason is empty"
    return value["best"], value["reason"].strip(), None


def _combine(replies: list[dict]) -> Verdict:
    for r in replies:
        if r["problem"] is not None:
            return Verdict(None, "abstain", abstain_reason=r["problem"], replies=replies)
    picks = {r["pick"] for r in replies}
    if len(picks) > 1:
        return Verdict(None, "abstain", abstain_reason="orders disagree", replies=replies)
    return Verdict(replies[0]["pick"], "judge", reason=replies[0]["reason"], replies=replies)


def _clip(text: str, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"
