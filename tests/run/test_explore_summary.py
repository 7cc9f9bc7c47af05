"""The round's summary counts the steps that were drawn again and those that ran then, and the round's one
line says so."""
from dataclasses import asdict

from sport_fast.agent.records import CandidateRecord, StepRecord, TrajectoryRecord
from sport_fast.run.explore import summarise
from sport_fast.run.metrics import summary_line


def _candidate(ran: bool) -> CandidateRecord:
    return CandidateRecord(text="t", token_ids=[1, 2], logprobs=[0.0, 0.0], finish_reason="stop",
                           error=None if ran else "ValueError: no")


def _record(*steps: tuple[int, list[bool]]) -> dict:
    traj = TrajectoryRecord(task_id="t", context_ids=[1], steps=[
        StepRecord(context_tokens=1, candidates=[_candidate(r) for r in ran], chosen=None, draws=draws)
        for draws, ran in steps])
    return {"trajectory": traj.to_json(), "groups": [], "wall_s": 0.0, "judge": {}}


def test_redrawn_and_revived_steps_are_counted_and_shown():
    records = [_record((1, [True, False]), (2, [False, False, True, False])),
               _record((3, [False] * 6)), _record((1, [False, False]))]
    summary = summarise(records)
    assert summary["steps"] == 4 and summary["candidates"] == 14
    assert (summary["steps_redrawn"], summary["steps_revived"]) == (2, 1)
    old = records[0]["trajectory"]["steps"][0]
    del old["draws"]  # a record from before redraws existed: drawn once
    assert summarise(records)["steps_redrawn"] == 2
    line = summary_line({"round": 0, "steps": 4, "steps_redrawn": 2, "steps_revived": 1})
    assert "steps 4, redrawn 2 (ran then 1)," in line
    assert "redrawn" not in summary_line({"round": 0, "steps": 4, "steps_redrawn": 0})
    assert asdict(StepRecord(context_tokens=1, candidates=[], chosen=None))["draws"] == 1
