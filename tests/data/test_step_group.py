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
