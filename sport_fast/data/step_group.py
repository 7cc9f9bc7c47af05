"""StepGroup: one decision point of a trajectory, the unit of step-wise preference data.

SPORT samples K candidate steps after a context (task, earlier chosen steps and their observations),
executes them, and a judge picks one. The chosen candidate is preferred to each rejected one; a group
therefore yields ``len(rejected)`` preference pairs that share one context.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepGroup:
    """Token ids are the policy's own, kept verbatim from sampling (no re-tokenisation drift).

    context_ids: the whole prompt up to the step (non-empty); candidate_ids: K non-empty token lists.
    chosen, rejected: candidate indices; rejected may be empty for a group kept only for its context.
    ref_logps: per-candidate reference log-prob sums (K floats) once computed, else None.
    images: content hashes of the context's images, in order of appearance (see ``StepStore``).
    candidate_texts, results: per-candidate decoded text and execution result (any JSON value).
    verdict: the judge's raw decision record (any JSON object). meta: provenance (task id, step, ...).
    weight_version: the weights the candidates were sampled with (training rounds behind them; None: a group
    recorded before versions were). Not part of the content hash.
    """
    context_ids: list[int]
    candidate_ids: list[list[int]]
    chosen: int
    rejected: list[int]
    ref_logps: list[float] | None = None
    images: list[str] = field(default_factory=list)
    candidate_texts: list[str] | None = None
    results: list[Any] | None = None
    verdict: dict | None = None
    meta: dict = field(default_factory=dict)
    weight_version: int | None = None

    def __post_init__(self) -> None:
        self.context_ids = [int(t) for t in self.context_ids]
        self.candidate_ids = [[int(t) for t in c] for c in self.candidate_ids]
        self.rejected = [int(r) for r in self.rejected]
        if self.ref_logps is not None:
            self.ref_logps = [float(x) for x in self.ref_logps]
        self.validate()

    @property
    def num_candidates(self) -> int:
        return len(self.candidate_ids)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(chosen, rejected) candidate-index pairs of this group."""
        return [(self.chosen, r) for r in self.rejected]

    def validate(self) -> None:
        """Raise ValueError naming the first thing wrong with this group."""
        k = len(self.candidate_ids)
        if not self.context_ids:
            raise ValueError("StepGroup: context_ids is empty (the first candidate token needs a predictor)")
        if k == 0:
            raise ValueError("StepGroup: no candidates")
        empty = [i for i, c in enumerate(self.candidate_ids) if not c]
        if empty:
            raise ValueError(f"StepGroup: candidate {empty[0]} has no tokens")
        if not 0 <= self.chosen < k:
            raise ValueError(f"StepGroup: chosen={self.chosen} is not a candidate index in [0, {k})")
        bad = [r for r in self.rejected if not 0 <= r < k or r == self.chosen]
        if bad:
            raise ValueError(f"StepGroup: rejected index {bad[0]} is out of [0, {k}) or equals chosen")
        if len(set(self.rejected)) != len(self.rejected):
            raise ValueError(f"StepGroup: rejected {self.rejected} lists a candidate twice")
        for name in ("ref_logps", "candidate_texts", "results"):
            value = getattr(self, name)
            if value is not None and len(value) != k:
                raise ValueError(f"StepGroup: {name} has {len(value)} entries for {k} candidates")

    def content_hash(self) -> str:
        """sha256 of what defines the preference (tokens, images, labels); not ref_logps or metadata."""
        key = [self.context_ids, self.candidate_ids, self.chosen, sorted(self.rejected), self.images]
        return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> "StepGroup":
        unknown = set(record) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"StepGroup: unknown fields {sorted(unknown)}")
        return cls(**record)


class WeightVersionError(ValueError):
    """Step groups sampled with other weights than the ones a round trains; the message names the versions."""


def check_weight_versions(groups: list[StepGroup], expected: int) -> None:
    """Refuse ``groups`` unless every one was sampled with weight version ``expected`` (the weights this
    round trains from): DPO on another policy's samples is off-policy, and mixing it in would be silent.
    Groups without a version (recorded before versions were) are accepted."""
    wrong: dict[int, int] = {}
    for g in groups:
        if g.weight_version is not None and g.weight_version != expected:
            wrong[g.weight_version] = wrong.get(g.weight_version, 0) + 1
    if wrong:
        found = ", ".join(f"{n} of version {v}" for v, n in sorted(wrong.items()))
        raise WeightVersionError(f"this round trains on candidates of weight version {expected} only, but its "
                                 f"store holds {found} (sampled with other weights); re-explore the round")
