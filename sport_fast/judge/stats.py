"""What a round's judging cost and decided: calls, latency, abstentions (by reason), disagreements."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JudgeStats:
    steps: int = 0
    calls: int = 0
    cached: int = 0
    latency_s: float = 0.0
    decided: int = 0
    by_rule: int = 0
    abstained: int = 0
    disagreements: int = 0
    abstain_reasons: dict = field(default_factory=dict)

    def count_reply(self, reply: dict) -> None:
        self.calls += 1
        self.cached += bool(reply["cached"])
        self.latency_s += reply["latency_s"]

    def count_verdict(self, verdict: dict) -> None:
        self.steps += 1
        if verdict["chosen"] is None:
            self.abstained += 1
            key = verdict["abstain_reason"].split(":")[0]
            self.abstain_reasons[key] = self.abstain_reasons.get(key, 0) + 1
            self.disagreements += verdict["abstain_reason"] == "orders disagree"
        else:
            self.decided += 1
            self.by_rule += verdict["kind"] == "rule"

    @classmethod
    def of(cls, verdicts: list[dict]) -> "JudgeStats":
        """The counters of recorded verdicts (``Verdict.to_json``), e.g. one trajectory's."""
        stats = cls()
        for v in verdicts:
            for reply in v["replies"]:
                stats.count_reply(reply)
            stats.count_verdict(v)
        return stats

    def rates(self) -> dict:
        n = max(1, self.steps)
        return {"judge_steps": self.steps, "judge_calls": self.calls, "judge_time_s": round(self.latency_s, 3),
                "abstention_rate": self.abstained / n, "disagreement_rate": self.disagreements / n,
                "judge_cache_hits": self.cached}
