"""``benchmarks/learning.py``'s per-round counts of what a round could prefer, on a hand-made round: each
step's candidates answer right, wrong or not at all, so every count is known in advance."""
import json
import sys

from train_runs import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from learning import step_diversity  # noqa: E402

from sport_fast.agent.records import CandidateRecord, StepRecord, TrajectoryRecord  # noqa: E402
from sport_fast.tasks.suite import generate_suite  # noqa: E402


def _candidate(text: str, answer=None, ran: bool = True) -> CandidateRecord:
    c = CandidateRecord(text=text, token_ids=[1], logprobs=[0.0], finish_reason="stop",
                        parse_error=None if ran else "malformed")
    c.has_final_answer, c.final_answer = answer is not None, answer
    return c


def test_step_diversity_counts_mixed_steps_and_the_judges_picks(tmp_path):
    suite = generate_suite(tmp_path / "suite", n_train=2, n_heldout=1)
    task = suite["train"][0]
    right, wrong = task.answer, task.answer + "9"
    steps = [
        StepRecord(0, [_candidate("a"), _candidate("a")], chosen=0, followed=0),                      # one text
        StepRecord(0, [_candidate("b", ran=False), _candidate("c", ran=False)], chosen=None),      # none ran
        StepRecord(0, [_candidate("d", right), _candidate("e", wrong)], chosen=1, followed=1),     # mixed, wrong pick
        StepRecord(0, [_candidate("f"), _candidate("g", right)], chosen=1, followed=1),            # mixed, right pick
        StepRecord(0, [_candidate("h", wrong), _candidate("i", wrong)], chosen=0, followed=0),     # same wrong answer
    ]
    record = TrajectoryRecord(task_id=task.id, context_ids=[1], steps=steps)
    rdir = tmp_path / "round_0"
    rdir.mkdir()
    (rdir / "trajectories.jsonl").write_text(json.dumps({"task_id": task.id, "trajectory": record.to_json()}) + "\n")
    counts = step_diversity(rdir)
    family = task.source.split(":")[1]
    assert counts.pop("by_family") == {family: {"steps": 5, "steps_one_text": 1, "candidates": 10, "candidates_ran": 8,
                                                "candidates_right": 2, "steps_some_right": 2}}
    assert counts == {"steps_one_text": 1, "steps_none_ran": 1, "steps_answered": 3,
                      "answered_steps_answers_differ": 1, "answered_steps_some_right": 2,
                      "answered_steps_followed_right": 1, "mixed_steps": 2, "mixed_steps_judged_right": 1}


def test_differences_report_every_round_against_the_warm_start():
    from learning import differences

    def report(*correct):
        return {"per_task": [{"task_id": f"t{i}", "correct": c, "tool_recall": 1.0} for i, c in enumerate(correct)]}
    by_stage = {"a untuned": [report(0, 0, 0, 0)], "b warm start": [report(1, 0, 0, 0)],
                "c round 0": [report(1, 1, 1, 0)], "c round 1": [report(1, 1, 0, 0)], "d control": [report(1, 1, 1, 1)]}
    diffs = differences(by_stage, rounds=2)
    assert set(diffs) == {"(c)-(b)", "(c)-(d)", "(b)-(a)", "(c round 0)-(b)"}
    assert diffs["(c round 0)-(b)"]["difference"] == 0.5 and diffs["(c)-(b)"]["difference"] == 0.25
    assert diffs["(c)-(d)"]["difference"] == -0.5 and diffs["(b)-(a)"]["difference"] == 0.25
