"""pack_step_groups: every scored token is predicted by the right prefix, and each prefix is packed once."""
import numpy as np
import pytest

from sport_fast import StepGroup, pack_step_groups
from sport_fast.tree.trie import native_available
from tiny_models import IMAGE_PAD, random_groups

IMPLS = ["python"] + (["cpp"] if native_available() else [])


def path_tokens(tree, node: int) -> list[int]:
    """Tokens on the root-to-node path (independent of the packer's own bookkeeping)."""
    out = []
    while node >= 0:
        out.append(int(tree.input_ids[node]))
        node = int(tree.parent[node])
    return out[::-1]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", range(5))
def test_every_scored_token_sees_exactly_its_prefix(seed, impl):
    groups = random_groups(seed)
    tree = pack_step_groups(groups, impl=impl)
    assert tree.segments == [(g, k) for g, grp in enumerate(groups) for k in range(grp.num_candidates)]
    for s, (g, k) in enumerate(tree.segments):
        sel = (tree.score_segments == s).nonzero().flatten()
        seq = groups[g].context_ids + groups[g].candidate_ids[k]
        c = len(groups[g].context_ids)
        assert tree.score_targets[sel].tolist() == groups[g].candidate_ids[k], f"segment {s}: wrong targets"
        for j, pos in enumerate(tree.score_positions[sel].tolist()):
            assert path_tokens(tree, pos) == seq[:c + j], f"segment {s} token {j}: wrong predicting prefix"
            assert tree.position_ids[pos] == c + j - 1, f"segment {s} token {j}: wrong position id"


@pytest.mark.parametrize("seed", range(3))
def test_each_distinct_prefix_is_packed_once(seed):
    groups = random_groups(seed)
    prefixes = {tuple(seq[:n]) for g in groups for cand in g.candidate_ids
                for seq in [g.context_ids + cand] for n in range(1, len(seq) + 1)}
    tree = pack_step_groups(groups)
    assert tree.num_tokens == len(prefixes)
    assert tree.unpacked_tokens == sum(len(g.context_ids) + len(c) for g in groups for c in g.candidate_ids)


def test_paired_packs_only_chosen_and_rejected():
    g = StepGroup(context_ids=[1, 2], candidate_ids=[[3], [4], [5]], chosen=2, rejected=[0])
    tree = pack_step_groups([g], candidates="paired")
    assert tree.segments == [(0, 2), (0, 0)]
    assert 4 not in tree.input_ids.tolist()


def test_trajectory_steps_share_their_common_context():
    a = StepGroup(context_ids=list(range(10)), candidate_ids=[[50, 51], [60]], chosen=0, rejected=[1])
    b = StepGroup(context_ids=list(range(10)) + [50, 51, 70], candidate_ids=[[80], [81]], chosen=0, rejected=[1])
    tree = pack_step_groups([a, b])
    assert tree.num_tokens == 10 + 2 + 1 + 1 + 2  # context, chosen, observation, rejected, two candidates


def image_group(images, ctx_tail=(7,)):
    ctx = [1]
    for _ in images:
        ctx += [IMAGE_PAD] * 4 + [2]
    return StepGroup(context_ids=ctx + list(ctx_tail), candidate_ids=[[3], [4]], chosen=0, rejected=[1],
                     images=list(images))


def test_different_images_never_share_nodes_and_equal_ones_do():
    h1, h2 = "a" * 64, "b" * 64
    tree = pack_step_groups([image_group([h1]), image_group([h2]), image_group([h1], ctx_tail=(8,))],
                            image_token_id=IMAGE_PAD)
    assert tree.image_hashes == [h1, h2]  # h1's context is shared by groups 0 and 2
    assert int((tree.input_ids == IMAGE_PAD).sum()) == 8


def test_image_count_mismatch_is_refused():
    g = image_group(["a" * 64])
    g.images = ["a" * 64, "b" * 64]
    with pytest.raises(ValueError, match="image-token runs"):
        pack_step_groups([g], image_token_id=IMAGE_PAD)
    with pytest.raises(ValueError, match="image_token_id"):
        pack_step_groups([image_group(["a" * 64])])


def test_mrope_positions_are_scattered_and_candidates_continue_after_the_max():
    g = image_group(["a" * 64])
    ctx_pos = np.stack([np.arange(7), np.arange(7) * 2, np.arange(7)])  # any (3, C)
    tree = pack_step_groups([g], image_token_id=IMAGE_PAD, context_positions=[ctx_pos])
    assert tree.position_ids.shape == (3, 9)
    assert tree.position_ids[:, :7].tolist() == ctx_pos.tolist()
    assert tree.position_ids[:, 7].tolist() == [13, 13, 13] and tree.position_ids[:, 8].tolist() == [13, 13, 13]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="no groups"):
        pack_step_groups([])
    with pytest.raises(ValueError, match="candidates"):
        pack_step_groups(random_groups(0), candidates="some")
