"""What exploration and evaluation record: every candidate of every step, what ran, what was chosen.

``TrajectoryRecord`` is the raw material of step groups (``data.rejection``) and of the evaluation's
scores; it round-trips through JSON (``trajectories.jsonl``). ``Policy`` is what the agent samples from:
the embedded ``PrefixSampler`` or a server behind ``sampler.remote.ServerPolicy``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

from sport_fast.sandbox.result import ExecutionOutcome


class Policy(Protocol):
    """One trajectory interface over both samplers: a handle per context, K candidates per step."""

    def start(self, context_ids: Sequence[int], images: Sequence = ()): ...

    def sample(self, handle, params: Sequence) -> list: ...

    def commit(self, handle, candidate: int, observation_ids: Sequence[int] = ()) -> None: ...


@dataclass
class CandidateRecord(ExecutionOutcome):
    """A sampled step (token ids verbatim), how it parsed, and what its execution gave."""
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None
    thought: str = ""
    code: str = ""
    parse_error: str | None = None
    repairs: list[str] = field(default_factory=list)
    observation: str = ""
    replay_error: str | None = None    # the chosen steps replayed differently in this run than they ran
    tool_calls: list[dict] = field(default_factory=list)
    has_final_answer: bool = False
    final_answer: object = None
    wall_s: float = 0.0
    weight_version: int | None = None  # the weights it was sampled with (None: recorded before versions were)

    @property
    def ran(self) -> bool:
        """Parsed and executed without an error or a timeout, on the state the trajectory believes in."""
        return self.parse_error is None and self.ok and self.replay_error is None


@dataclass
class StepRecord:
    context_tokens: int
    candidates: list[CandidateRecord]
    chosen: int | None                 # the preferred candidate; None: the selector abstained (no pair)
    followed: int | None = None        # the candidate the trajectory went on with (None: it stopped here)
    observation_ids: list[int] = field(default_factory=list)   # the turn appended after the followed step
    verdict: dict | None = None        # the selector's record (judge replies, reasons)
    draws: int = 1                     # K-candidate draws: more than 1 when nothing ran (``AgentConfig.resample``)


@dataclass
class TrajectoryRecord:
    task_id: str
    context_ids: list[int]
    steps: list[StepRecord] = field(default_factory=list)
    final_answer: object = None
    finished: bool = False
    stop_reason: str = ""
    selection: str = ""
    images: list[str] = field(default_factory=list)  # image files shown to the policy in the context, in order

    def followed_steps(self) -> list[CandidateRecord]:
        return [s.candidates[s.followed] for s in self.steps if s.followed is not None]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> "TrajectoryRecord":
        steps = [StepRecord(**{**s, "candidates": [CandidateRecord(**c) for c in s["candidates"]]})
                 for s in record["steps"]]
        return cls(**{**record, "steps": steps})


# select(task, step, candidates, history) -> candidate index, None (abstain), or an object with ``chosen``
# (index or None) and ``to_json()`` (a judge's Verdict). history: the followed steps so far.
Selector = Callable[[object, int, list[CandidateRecord], list[CandidateRecord]], object]
