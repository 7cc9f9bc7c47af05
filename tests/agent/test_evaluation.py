"""Scoring without a model: ToolAcc through a tool set's mapping of a benchmark's own tool names, the tasks
that need a tool the set lacks, and the 95% bootstrap intervals of the rates."""
from types import SimpleNamespace

import pytest

from sport_fast.agent.evaluation import summarise, task_outcome
from sport_fast.agent.intervals import bootstrap_ci, mean_or_none, paired_difference
from sport_fast.tasks.task import Task
from sport_fast.tools.tool_sets import tool_set


def trajectory(called: list[str], answer, ran=(True,)):
    steps = [SimpleNamespace(tool_calls=[{"name": n} for n in called], ran=r, timed_out=False, error=None if r else "E")
             for r in ran]
    return SimpleNamespace(followed_steps=lambda: steps, final_answer=answer, finished=True, stop_reason="final_answer")


def test_gta_tool_names_count_through_the_sets_mapping_and_lacking_tools_are_named():
    offline = tool_set("offline")
    task = Task(id="g", question="q?", answer=None, whitelist=[["42"]], expected_tools=["Calculator", "OCR", "TextToImage"])
    out = task_outcome(task, trajectory(["calculator"], "42"), offline.benchmark_names)
    assert out["correct"] is True and out["tool_recall"] == pytest.approx(1 / 3)
    assert out["lacking_tools"] == ["TextToImage"], "the offline set has no image generator"
    report = summarise([out], k=1, selection="first")
    assert report["tasks_needing_lacking_tools"] == {"g": ["TextToImage"]} and report["unavailable_expected_tools"] == 1
    ours = task_outcome(Task(id="s", question="q?", answer="1", expected_tools=["ocr"]), trajectory(["ocr"], "1"))
    assert ours["tool_recall"] == 1.0 and ours["lacking_tools"] == []


def test_bootstrap_intervals_hold_the_rate_and_shrink_with_more_tasks():
    few, many = [1, 0, 1, 1], [1, 0, 1, 1] * 25
    lo, hi = bootstrap_ci(few, mean_or_none)
    assert lo <= 0.75 <= hi and hi - lo > 0.4
    lo2, hi2 = bootstrap_ci(many, mean_or_none)
    assert lo2 <= 0.75 <= hi2 and hi2 - lo2 < 0.25
    assert bootstrap_ci([], mean_or_none) is None
    same = paired_difference([0, 1, 0, 1], [0, 1, 0, 1])
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0]}
    better = paired_difference([0] * 20, [1] * 15 + [0] * 5)
    assert better["difference"] == 0.75 and better["ci95"][0] > 0.5
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1], [1, 0])


def test_reports_carry_the_intervals_and_each_tasks_outcome():
    outcomes = [task_outcome(Task(id=f"t{i}", question="q?", answer="1"), trajectory([], "1" if i % 2 else "0",
                                                                                     ran=(True, i % 3 != 0)))
                for i in range(10)]
    report = summarise(outcomes, k=1, selection="first")
    assert report["AnsAcc"] == 0.5 and report["AnsAcc_ci95"][0] < 0.5 < report["AnsAcc_ci95"][1]
    assert report["CodeExec"] == pytest.approx(16 / 20) and len(report["per_task"]) == 10
    assert report["per_task"][1] == {"task_id": "t1", "correct": True, "tool_recall": None, "steps": 2, "steps_ran": 2,
                                     "steps_timed_out": 0, "steps_killed": 0}
    assert report["steps_timed_out"] == report["steps_killed"] == 0


def test_steps_the_sandbox_timed_out_or_killed_are_counted_apart():
    from sport_fast.sandbox.result import _death
    steps = [SimpleNamespace(tool_calls=[], ran=False, timed_out=True, error="wall-clock limit of 20s"),
             SimpleNamespace(tool_calls=[], ran=False, timed_out=False, error=_death(-9)),
             SimpleNamespace(tool_calls=[], ran=False, timed_out=False, error="Traceback ...\nKeyError: 'x'"),
             SimpleNamespace(tool_calls=[], ran=True, timed_out=False, error=None)]
    traj = SimpleNamespace(followed_steps=lambda: steps, final_answer=None, finished=False, stop_reason="max_steps")
    out = task_outcome(Task(id="t", question="q?", answer="1"), traj)
    assert (out["steps"], out["steps_ran"], out["steps_timed_out"], out["steps_killed"]) == (4, 1, 1, 1)
    report = summarise([out, out], k=1, selection="first")
    assert report["steps_timed_out"] == 2 and report["steps_killed"] == 2 and report["CodeExec"] == 0.25
