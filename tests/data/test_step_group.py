"""StepGroup validation: each bad field gets a message naming it."""
import pytest

from sport_fast import StepGroup


@pytest.mark.parametrize("kwargs,match", [
    (dict(context_ids=[], candidate_ids=[[1]], chosen=0, rejected=[]), "context_ids is empty"),
    (dict(context_ids=[1], candidate_ids=[], chosen=0, rejected=[]), "no candidates"),
    (dict(context_ids=[1], candidate_ids=[[1], []], chosen=0, rejected=[1]), "candidate 1 has no tokens"),
    (dict(context_ids=[1], candidate_ids=[[1], [2]], chosen=2, rejected=[]), "chosen=2"),
    (dict(context_ids=[1], candidate_ids=[[1], [2]], chosen=0, rejected=[0]), "rejected index 0"),
    (dict(context_ids=[1], candidate_ids=[[1], [2], [3]], chosen=0, rejected=[1, 1]), "twice"),
    (dict(context_ids=[1], candidate_ids=[[1], [2]], chosen=0, rejected=[1], ref_logps=[0.0]), "ref_logps has 1"),
])
def test_invalid_groups_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StepGroup(**kwargs)


def test_hash_ignores_ref_logps_and_metadata_but_not_labels():
    a = StepGroup(context_ids=[1, 2], candidate_ids=[[3], [4], [5]], chosen=0, rejected=[1, 2])
    b = StepGroup(context_ids=[1, 2], candidate_ids=[[3], [4], [5]], chosen=0, rejected=[2, 1],
                  ref_logps=[0, 0, 0], meta={"x": 1})
    c = StepGroup(context_ids=[1, 2], candidate_ids=[[3], [4], [5]], chosen=1, rejected=[0, 2])
    assert a.content_hash() == b.content_hash() != c.content_hash()
    assert a.pairs == [(0, 1), (0, 2)]


def test_json_roundtrip_and_unknown_fields():
    a = StepGroup(context_ids=[1], candidate_ids=[[3], [4]], chosen=1, rejected=[0], verdict={"best": 1})
    assert StepGroup.from_json(a.to_json()) == a
    with pytest.raises(ValueError, match="unknown fields"):
        StepGroup.from_json({**a.to_json(), "chosen_index": 1})


def test_weight_versions_old_records_load_and_training_refuses_other_versions():
    """Records written before weight versions existed still load (version None, accepted); a group of
    another version than the round trains is refused in one line naming both."""
    from sport_fast.agent.records import TrajectoryRecord
    from sport_fast.data.rejection import step_groups
    from sport_fast.data.step_group import WeightVersionError, check_weight_versions
    old = {"task_id": "t", "context_ids": [1, 2], "steps": [{"context_tokens": 2, "chosen": 0, "followed": None,
           "candidates": [{"text": "a", "token_ids": [3], "logprobs": [-1.0], "finish_reason": "stop"},
                          {"text": "b", "token_ids": [4], "logprobs": [-2.0], "finish_reason": "stop"}]}]}
    traj = TrajectoryRecord.from_json(old)
    assert traj.steps[0].candidates[0].weight_version is None
    groups = step_groups(traj, rule="all")
    assert [g.weight_version for g in groups] == [None]
    check_weight_versions(groups, expected=3)
    legacy = StepGroup.from_json({k: v for k, v in groups[0].to_json().items() if k != "weight_version"})
    assert legacy.weight_version is None
    for c in traj.steps[0].candidates:
        c.weight_version = 1
    versioned = step_groups(traj, rule="all")
    check_weight_versions(versioned, expected=1)
    with pytest.raises(WeightVersionError, match="weight version 2 only, but its store holds 1 of version 1"):
        check_weight_versions(versioned + groups, expected=2)
    traj.steps[0].candidates[1].weight_version = 2
    with pytest.raises(ValueError, match="candidates of weight versions \\[1, 2\\] in one step"):
        step_groups(traj, rule="all")
