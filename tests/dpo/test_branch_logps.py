"""branch_logps from one tree-packed forward == separate forwards of every (context + candidate)."""
import hashlib
import random

import pytest
import torch

from sport_fast import StepGroup, branch_logps
from sport_fast.tree.trie import native_available
from sport_fast.model.vision import ImageInputs
from tiny_models import (IMAGE_PAD, VISION_END, VISION_START, random_groups, random_ids, random_image,
                         separate_forward_logps, tiny_image_processor, tiny_llama, tiny_qwen2, tiny_qwen2_vl)

RTOL = 1e-5


def assert_matches_separate(model, groups, **kwargs):
    got = branch_logps(model, groups, **kwargs)
    assert len(got) == len(groups)
    for g, (group, sums) in enumerate(zip(groups, got)):
        assert sums.dtype == torch.float32 and sums.shape == (group.num_candidates,)
        want = torch.tensor(separate_forward_logps(model, group), dtype=torch.float64)
        torch.testing.assert_close(sums.double(), want, rtol=RTOL, atol=1e-6,
                                   msg=lambda m: f"group {g}: packed vs separate forwards differ: {m}")


@pytest.mark.parametrize("make_model", [tiny_qwen2, tiny_llama], ids=["qwen2", "llama-tied-eager"])
@pytest.mark.parametrize("seed", range(3))
def test_tiny_text_models_match_separate_forwards(make_model, seed):
    assert_matches_separate(make_model(seed), random_groups(seed))


@pytest.mark.skipif(not native_available(), reason="sport_fast._C was not built")
def test_python_and_cpp_tries_give_the_same_sums():
    model, groups = tiny_qwen2(1), random_groups(7)
    a = torch.cat(branch_logps(model, groups, trie_impl="cpp"))
    b = torch.cat(branch_logps(model, groups, trie_impl="python"))
    assert torch.equal(a, b)


def test_gradients_match_separate_forwards():
    model, groups = tiny_qwen2(2).double(), random_groups(2, n_groups=2)
    weights = [torch.randn(g.num_candidates, dtype=torch.float64) for g in groups]
    packed = sum((w * s).sum() for w, s in zip(weights, branch_logps(model, groups)))
    packed_grads = torch.autograd.grad(packed, list(model.parameters()))
    separate = 0
    for w, g in zip(weights, groups):
        for k, cand in enumerate(g.candidate_ids):
            ids = torch.tensor([g.context_ids + cand])
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
            c = len(g.context_ids)
            separate = separate + w[k] * logp[torch.arange(c - 1, c - 1 + len(cand)), torch.tensor(cand)].sum()
    separate_grads = torch.autograd.grad(separate, list(model.parameters()))
    # Qwen2's RMSNorm runs in float32 even in a float64 model, and a shared context token's gradient is
    # summed before that cast when packed, after it when separate: float32-relative agreement is exact here.
    for (name, _), a, b in zip(model.named_parameters(), packed_grads, separate_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()),
                                   msg=lambda m: f"grad of {name}: {m}")


def vl_groups(seed: int):
    rng = random.Random(seed)
    images = {}
    groups = []
    for i in range(2):
        image = random_image(seed * 10 + i)
        h = hashlib.sha256(image.tobytes()).hexdigest()
        images[h] = image
        ctx = random_ids(rng, 3) + [VISION_START] + [IMAGE_PAD] * 4 + [VISION_END] + random_ids(rng, 5)
        groups.append(StepGroup(context_ids=ctx, candidate_ids=[random_ids(rng, 4), random_ids(rng, 2)],
                                chosen=0, rejected=[1], images=[h]))
    prev = groups[0]  # the next step of the first trajectory shares its image and context
    groups.append(StepGroup(context_ids=prev.context_ids + prev.candidate_ids[0] + random_ids(rng, 3),
                            candidate_ids=[random_ids(rng, 3), random_ids(rng, 3)], chosen=1, rejected=[0],
                            images=list(prev.images)))
    return groups, images


def test_qwen2_vl_with_images_matches_separate_forwards():
    model, processor = tiny_qwen2_vl(0), tiny_image_processor()
    groups, images = vl_groups(0)
    inputs = ImageInputs(loader=images.__getitem__, processor=processor)
    got = branch_logps(model, groups, images=inputs)
    for g, (group, sums) in enumerate(zip(groups, got)):
        pix = processor(images=[images[h] for h in group.images], return_tensors="pt")
        want = separate_forward_logps(model, group, image_token=IMAGE_PAD, pixel_values=pix["pixel_values"],
                                      image_grid_thw=pix["image_grid_thw"])
        torch.testing.assert_close(sums.double(), torch.tensor(want, dtype=torch.float64), rtol=RTOL, atol=1e-6,
                                   msg=lambda m: f"group {g}: {m}")


def test_qwen2_vl_without_image_inputs_is_refused():
    groups, _ = vl_groups(1)
    with pytest.raises(ValueError, match="ImageInputs"):
        branch_logps(tiny_qwen2_vl(0), groups)


def test_flex_attention_block_mask_path_matches_separate_forwards():
    """The CUDA path's BlockMask through a real model; FlexAttention runs forward-only on the CPU."""
    model = tiny_qwen2(3)
    model.config._attn_implementation = "flex_attention"
    groups = random_groups(3, n_groups=2)
    with torch.no_grad():
        got = branch_logps(model, groups, attn="flex")
    model.config._attn_implementation = "sdpa"
    for group, sums in zip(groups, got):
        want = torch.tensor(separate_forward_logps(model, group), dtype=torch.float64)
        torch.testing.assert_close(sums.double(), want, rtol=RTOL, atol=1e-6)


def test_flex_requested_without_flex_model_is_refused():
    with pytest.raises(ValueError, match="flex_attention"):
        branch_logps(tiny_qwen2(), random_groups(0), attn="flex")


def test_smollm2_chat_steps_match_separate_forwards(smollm2):
    model, tok = smollm2
    messages = [{"role": "system", "content": "You solve tasks by writing Python that calls tools."},
                {"role": "user", "content": "How many red squares are in image_1.png?"}]
    context = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    context = list(context["input_ids"] if hasattr(context, "keys") else context)
    steps = ["Thought: count red regions.\n```py\nprint(count_objects('image_1.png', colour='red'))\n```<end_action>",
             "Thought: look at the image first.\n```py\nprint(image_size('image_1.png'))\n```<end_action>",
             "Thought: guess.\n```py\nfinal_answer(3)\n```<end_action>"]
    cands = [tok.encode(s, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")] for s in steps]
    group = StepGroup(context_ids=context, candidate_ids=cands, chosen=0, rejected=[1, 2])
    nxt = StepGroup(context_ids=context + cands[0] + tok.encode("\nObservation: 4\n", add_special_tokens=False),
                    candidate_ids=cands[1:], chosen=1, rejected=[0])
    assert_matches_separate(model, [group, nxt])
