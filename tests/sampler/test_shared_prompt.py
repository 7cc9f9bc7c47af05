"""The prompt new trajectories share is prefilled once: same tokens and log-probs as each trajectory
prefilled whole, fewer tokens run, and a prefix KV that never outlives its weights."""
import random

import torch

from sport_fast.sampler.prefix_sampler import PrefixSampler
from sport_fast.sampler.sampling import SamplingParams
from sport_fast.sampler.shared_prompt import MIN_SHARED, shared_length
from tiny_models import random_ids, tiny_qwen2

GREEDY = SamplingParams(temperature=0, max_new_tokens=8)
PROMPT = random_ids(random.Random(90), 40)
TAILS = [random_ids(random.Random(91 + i), n) for i, n in enumerate((5, 12, 9))]


def hot(t, k=3):
    return [SamplingParams(temperature=1.1, seed=10 * t + i, max_new_tokens=6) for i in range(k)]


def hf_greedy(model, ids, n):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def uncached_logps(model, ctx, tokens):
    with torch.no_grad():
        logp = model.double()(torch.tensor([ctx + tokens])).logits[0].log_softmax(-1)
    model.float()
    return [logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(tokens)]


def two_steps(sampler, contexts):
    trajs = [sampler.start(c) for c in contexts]
    first = sampler.sample_many([(t, hot(i)) for i, t in enumerate(trajs)])
    for i, traj in enumerate(trajs):
        sampler.commit(traj, i % 3, [3, 4])
    second = sampler.sample_many([(t, [GREEDY]) for t in trajs])
    return trajs, first, second


def test_shared_prompt_samples_as_whole_prefills_and_runs_it_once():
    model = tiny_qwen2(9)
    contexts = [PROMPT + tail for tail in TAILS]
    shared, whole = PrefixSampler(model), PrefixSampler(model, share_prompt=False)
    s_trajs, s_first, s_second = two_steps(shared, contexts)
    w_trajs, w_first, w_second = two_steps(whole, contexts)
    for s, w in zip(s_first + s_second, w_first + w_second):
        assert [c.token_ids for c in s] == [c.token_ids for c in w]
    for ctx, cands in zip(contexts, s_first):
        torch.testing.assert_close(torch.tensor(cands[-1].logprobs, dtype=torch.float64),
                                   torch.tensor(uncached_logps(model, ctx, cands[-1].token_ids), dtype=torch.float64),
                                   rtol=1e-5, atol=1e-5)
    assert [t.steps[0].prefilled_tokens for t in s_trajs] == [40 + 5, 12, 9], "the prompt runs once, billed once"
    assert [t.steps[0].prefilled_tokens for t in w_trajs] == [45, 52, 49]
    assert [t.steps[0].cached_tokens for t in s_trajs] == [0, 40, 40]
    assert [t.steps[1].prefilled_tokens for t in s_trajs] == [3, 3, 3], "commit still prefills only new tokens"
    assert s_second[1][0].token_ids == hf_greedy(model, s_trajs[1].context_ids, 8)


def test_a_later_batch_reuses_the_kept_prompt_until_the_weights_change():
    model = tiny_qwen2(10)
    sampler = PrefixSampler(model)
    two_steps(sampler, [PROMPT + tail for tail in TAILS[:2]])
    kept = sampler._prompt
    lone = sampler.start(PROMPT + TAILS[2])
    sampler.sample(lone, [GREEDY])
    assert sampler._prompt is kept and lone.steps[0].prefilled_tokens == 9, "a lone trajectory reuses the prompt"
    stranger = sampler.start(TAILS[2] + PROMPT)
    assert sampler.sample(stranger, [GREEDY])[0].token_ids == hf_greedy(model, TAILS[2] + PROMPT, 8)
    assert stranger.steps[0].prefilled_tokens == 49, "a context without the prompt prefills whole"
    sampler.load_weights({k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items() if "mlp" in k})
    trajs = [sampler.start(PROMPT + tail) for tail in TAILS[:2]]
    after = sampler.sample_many([(t, [GREEDY]) for t in trajs])
    assert sampler._prompt is not kept and sampler._prompt.weights_version == sampler.weights_version
    for traj, cands in zip(trajs, after):
        assert cands[0].token_ids == hf_greedy(model, traj.context_ids, 8), "prompt KV of the old weights served"


def test_shared_length_leaves_each_context_a_token_of_its_own():
    assert shared_length([[1, 2, 3]]) == 0
    assert shared_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_length([[1, 2, 3, 4], [1, 2, 9], [1, 2, 3]]) == 2
    assert shared_length([[5, 2], [1, 2]]) == 0
    sampler = PrefixSampler(tiny_qwen2(11))
    short = [sampler.start(PROMPT[:MIN_SHARED - 1] + tail) for tail in TAILS[:2]]
    sampler.sample_many([(t, [GREEDY]) for t in short])
    assert sampler._prompt is None, "a prefix under MIN_SHARED tokens is not worth a copy"
