"""PrefixSampler: same tokens as Hugging Face generate, exact log-probs, KV reuse that never goes stale."""
import random

import pytest
import torch

from sport_fast.sampler.prefix_sampler import PrefixSampler
from sport_fast.sampler.sampling import SamplingParams, _filter_top_k_top_p, _penalise_repeats, draw
from tiny_models import random_ids, tiny_llama, tiny_qwen2

GREEDY = SamplingParams(temperature=0, max_new_tokens=10)


def context(seed=0, n=25):
    return random_ids(random.Random(seed), n)


def hf_greedy(model, ids, n):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("make_model", [tiny_qwen2, tiny_llama], ids=["qwen2", "llama"])
def test_greedy_siblings_equal_hf_generate_and_logprobs_are_exact(make_model):
    model = make_model(1)
    ctx = context(1)
    cands = PrefixSampler(model).sample(PrefixSampler(model).start(ctx), [GREEDY] * 3)
    want = hf_greedy(model, ctx, 10)
    assert [c.token_ids for c in cands] == [want] * 3
    with torch.no_grad():
        logp = model(torch.tensor([ctx + want])).logits[0].double().log_softmax(-1)
    ref = [logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(want)]
    torch.testing.assert_close(torch.tensor(cands[0].logprobs, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)
    assert all(c.finish_reason == "length" for c in cands)


def test_commit_reuses_kv_and_matches_a_fresh_prefill():
    model = tiny_qwen2(2)
    sampler = PrefixSampler(model)
    traj = sampler.start(context(2))
    first = sampler.sample(traj, [SamplingParams(temperature=1.2, seed=s, max_new_tokens=6) for s in range(4)])
    observation = [5, 6, 7]
    sampler.commit(traj, 2, observation)
    assert traj.context_ids == context(2) + first[2].token_ids + observation
    second = sampler.sample(traj, [GREEDY] * 2)
    fresh = PrefixSampler(tiny_qwen2(2)).sample(PrefixSampler(model).start(traj.context_ids), [GREEDY])
    assert second[0].token_ids == fresh[0].token_ids == hf_greedy(model, traj.context_ids, 10)
    s1, s2 = traj.steps
    assert (s1.prefilled_tokens, s1.cached_tokens) == (25, 0)
    assert s2.prefilled_tokens == 1 + len(observation), "commit must prefill only the new tokens"
    assert s2.cached_tokens == s2.context_tokens - s2.prefilled_tokens == 25 + len(first[2].token_ids) - 1
    assert s1.generated_tokens == sum(len(c.token_ids) for c in first)


def test_sampling_again_without_commit_starts_from_the_same_prefix():
    model = tiny_qwen2(3)
    sampler = PrefixSampler(model)
    traj = sampler.start(context(3))
    a = sampler.sample(traj, [GREEDY] * 2)
    b = sampler.sample(traj, [GREEDY])
    assert a[0].token_ids == b[0].token_ids
    assert traj.steps[1].prefilled_tokens == 0
    sampler.fork(traj, [4])  # resets traj to its prefix: the sampled rows are gone
    with pytest.raises(ValueError, match="pending candidate"):
        sampler.commit(traj, 0)


def test_seeds_reproduce_and_differ():
    model = tiny_qwen2(4)
    hot = lambda s: SamplingParams(temperature=1.5, seed=s, max_new_tokens=12)  # noqa: E731
    run = lambda seeds: [c.token_ids for c in PrefixSampler(model).sample(PrefixSampler(model).start(context(4)),  # noqa: E731
                                                                          [hot(s) for s in seeds])]
    assert run([1, 2, 3]) == run([1, 2, 3])
    assert len({tuple(t) for t in run([1, 2, 3])}) == 3
    derived = [c.token_ids for c in PrefixSampler(model, seed=7).sample(PrefixSampler(model).start(context(4)),
                                                                        [SamplingParams(temperature=1.5)] * 2)]
    again = [c.token_ids for c in PrefixSampler(model, seed=7).sample(PrefixSampler(model).start(context(4)),
                                                                      [SamplingParams(temperature=1.5)] * 2)]
    assert derived == again and derived[0] != derived[1]


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = tiny_qwen2(5)
    params = [GREEDY, SamplingParams(temperature=1.0, top_k=1, seed=1, max_new_tokens=10),
              SamplingParams(temperature=1.0, top_p=1e-6, seed=2, max_new_tokens=10)]
    cands = PrefixSampler(model).sample(PrefixSampler(model).start(context(5)), params)
    assert cands[0].token_ids == cands[1].token_ids == cands[2].token_ids


def test_stop_token_and_stop_string_end_the_step_at_the_right_token():
    from tiny_models import vl_tokenizer
    model, tok = tiny_qwen2(6), vl_tokenizer()
    greedy = PrefixSampler(model, tok).sample(PrefixSampler(model).start(context(6)), [GREEDY])[0]
    stop_at = next(j for j, t in enumerate(greedy.token_ids) if greedy.token_ids.index(t) == j and j >= 3)
    token = greedy.token_ids[stop_at]
    sampler = PrefixSampler(model, tok)
    by_id, by_text = sampler.sample(sampler.start(context(6)), [
        SamplingParams(temperature=0, max_new_tokens=10, stop_token_ids=(token,)),
        SamplingParams(temperature=0, max_new_tokens=10, stop=(tok.decode([token]),))])
    for cand in (by_id, by_text):
        assert cand.token_ids == greedy.token_ids[:stop_at + 1] and cand.finish_reason == "stop"
    assert by_text.text == tok.decode(greedy.token_ids[:stop_at + 1])


def test_weight_update_invalidates_every_cached_prefix():
    model = tiny_qwen2(7)
    sampler = PrefixSampler(model)
    traj = sampler.start(context(7))
    sampler.sample(traj, [GREEDY])
    sampler.commit(traj, 0, [1, 2])
    new_weights = {k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items() if "mlp" in k}
    sampler.load_weights(new_weights)
    after = sampler.sample(traj, [GREEDY])[0].token_ids
    assert after == hf_greedy(model, traj.context_ids, 10), "served KV computed with the old weights"
    assert traj.steps[-1].prefilled_tokens == len(traj.context_ids), "the cache was not rebuilt"


def test_repetition_penalty_follows_the_ctrl_rule():
    scores = torch.tensor([2.0, -2.0, 1.0])
    out = _penalise_repeats(scores.clone(), [0, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    sampler = PrefixSampler(tiny_qwen2())
    with pytest.raises(ValueError, match="empty"):
        sampler.start([])
    traj = sampler.start([1, 2])
    with pytest.raises(ValueError, match="pending candidate"):
        sampler.commit(traj, 0)


def test_smollm2_greedy_steps_equal_generate(smollm2):
    model, tok = smollm2
    ids = tok.apply_chat_template([{"role": "user", "content": "Write Python that prints 2+2."}],
                                  add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    sampler = PrefixSampler(model, tok)
    traj = sampler.start(ids)
    cands = sampler.sample(traj, [SamplingParams(temperature=0, max_new_tokens=8)] * 2)
    assert cands[0].token_ids == cands[1].token_ids == hf_greedy(model, ids, 8)
    sampler.commit(traj, 0, tok.encode("\nObservation: 4\n", add_special_tokens=False))
    nxt = sampler.sample(traj, [SamplingParams(temperature=0, max_new_tokens=6)])
    assert nxt[0].token_ids == hf_greedy(model, traj.context_ids, 6)


def _uncached_logps(model, ctx, tokens):
    with torch.no_grad():
        logp = model.double()(torch.tensor([ctx + tokens])).logits[0].log_softmax(-1)
    model.float()
    return [logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(tokens)]


@pytest.mark.parametrize("decode", ["dynamic", "static"])
@pytest.mark.parametrize("make_model", [tiny_qwen2, tiny_llama], ids=["qwen2", "llama"])
def test_batched_trajectories_equal_each_alone_over_two_steps(make_model, decode):
    """Three trajectories of different lengths and K, decoded as one padded batch, then committed to
    different candidates and decoded again: every token equals the one each trajectory gets alone, and
    every log-prob equals an uncached float64 forward of its own context."""
    model = make_model(8)
    contexts = [context(80, 9), context(81, 31), context(82, 20)]
    hot = [[SamplingParams(temperature=1.1, seed=10 * t + i, max_new_tokens=7 + 2 * i) for i in range(k)]
           for t, k in enumerate((3, 1, 4))]
    observations, picks = [[3, 4], [5], [6, 7, 8]], [2, 0, 1]

    def alone(t):
        sampler = PrefixSampler(model)
        traj = sampler.start(contexts[t])
        first = sampler.sample(traj, hot[t])
        sampler.commit(traj, picks[t], observations[t])
        return traj, first, sampler.sample(traj, [GREEDY, hot[t][0]])

    sampler = PrefixSampler(model, decode=decode)
    trajs = [sampler.start(c) for c in contexts]
    first = sampler.sample_many(list(zip(trajs, hot)))
    for traj, pick, obs in zip(trajs, picks, observations):
        sampler.commit(traj, pick, obs)
    second = sampler.sample_many([(traj, [GREEDY, hot[t][0]]) for t, traj in enumerate(trajs)])
    for t, traj in enumerate(trajs):
        ref_traj, ref_first, ref_second = alone(t)
        assert [c.token_ids for c in first[t]] == [c.token_ids for c in ref_first]
        assert [c.token_ids for c in second[t]] == [c.token_ids for c in ref_second]
        assert traj.context_ids == ref_traj.context_ids
        assert traj.steps[1].prefilled_tokens == 1 + len(observations[t]), "commit must prefill only new tokens"
        for ctx, cand in [(contexts[t], first[t][-1]), (traj.context_ids, second[t][0])]:
            torch.testing.assert_close(torch.tensor(cand.logprobs, dtype=torch.float64),
                                       torch.tensor(_uncached_logps(model, ctx, cand.token_ids),
                                                    dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert second[1][0].token_ids == hf_greedy(model, trajs[1].context_ids, 10)


def test_sample_many_refuses_a_trajectory_twice_and_empty_params():
    sampler = PrefixSampler(tiny_qwen2())
    traj = sampler.start([1, 2, 3])
    with pytest.raises(ValueError, match="twice"):
        sampler.sample_many([(traj, [GREEDY]), (traj, [GREEDY])])
    with pytest.raises(ValueError, match="at least one"):
        sampler.sample_many([(traj, [])])
    assert sampler.sample_many([]) == []


def test_draw_follows_the_distribution_and_never_picks_a_zero():
    from sport_fast.sampler.sampling import draw
    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(probs, gen) for _ in range(20000)]), minlength=6).double()
    assert counts[[0, 2, 5]].sum() == 0
    expected = probs.double() * 20000
    chi2 = float(((counts - expected)[[1, 3, 4]] ** 2 / expected[[1, 3, 4]]).sum())
    assert chi2 < 13.8, f"chi-square {chi2:.1f} with 2 degrees of freedom (p < 0.001)"


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_qwen2_vl_samples_with_images_and_matches_the_models_own_forward(decode):
    """Qwen2-VL: two trajectories with images (different lengths) batched with a text-only one; every
    candidate's log-probs equal the model's own uncached forward on context + candidate (pixels in, M-RoPE
    positions computed by the model), before and after a commit; the vision encoder runs once per image."""
    from tiny_models import IMAGE_PAD, VISION_END, VISION_START, random_image, tiny_image_processor, tiny_qwen2_vl
    model, processor = tiny_qwen2_vl(3), tiny_image_processor()
    rng = random.Random(5)
    feats = [processor(images=[random_image(50 + i)], return_tensors="pt") for i in range(2)]
    images = [[(f["pixel_values"], f["image_grid_thw"][0])] for f in feats] + [[]]
    contexts = [random_ids(rng, 3) + [VISION_START] + [IMAGE_PAD] * 4 + [VISION_END] + random_ids(rng, 5),
                random_ids(rng, 9) + [VISION_START] + [IMAGE_PAD] * 4 + [VISION_END] + random_ids(rng, 2),
                random_ids(rng, 11)]
    calls = []
    hook = model.model.visual.register_forward_hook(lambda *a: calls.append(1))
    sampler = PrefixSampler(model, decode=decode)
    trajs = [sampler.start(c, im) for c, im in zip(contexts, images)]
    hot = [SamplingParams(temperature=1.0, seed=s, max_new_tokens=6) for s in range(3)]
    first = sampler.sample_many([(t, hot) for t in trajs])
    for t in trajs:
        sampler.commit(t, 1, [7, 8])
    second = sampler.sample_many([(t, [GREEDY]) for t in trajs])
    hook.remove()
    assert len(calls) == 2, "the vision encoder must run once per image"

    def reference(ctx, ims, tokens):
        ids = torch.tensor([ctx + tokens])
        extra = {}
        if ims:
            extra = {"pixel_values": ims[0][0], "image_grid_thw": ims[0][1][None],
                     "mm_token_type_ids": (ids == IMAGE_PAD).int()}
        with torch.no_grad():
            logp = model(input_ids=ids, **extra).logits[0].double().log_softmax(-1)
        return [logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(tokens)]

    for t, traj in enumerate(trajs):
        for ctx, cand in [(contexts[t], first[t][2]), (traj.context_ids, second[t][0])]:
            torch.testing.assert_close(torch.tensor(cand.logprobs, dtype=torch.float64),
                                       torch.tensor(reference(ctx, images[t], cand.token_ids), dtype=torch.float64),
                                       rtol=1e-5, atol=1e-5)
    assert trajs[0].rope_delta != 0 and trajs[2].rope_delta == 0


def test_image_placeholders_must_match_the_images():
    from tiny_models import IMAGE_PAD, VISION_END, VISION_START, random_image, tiny_image_processor, tiny_qwen2_vl
    feats = tiny_image_processor()(images=[random_image(1)], return_tensors="pt")
    image = (feats["pixel_values"], feats["image_grid_thw"][0])
    with pytest.raises(ValueError, match="3 image placeholder tokens, its 1 image"):
        PrefixSampler(tiny_qwen2_vl(0)).start([1, VISION_START] + [IMAGE_PAD] * 3 + [VISION_END], [image])
    with pytest.raises(ValueError, match="no vision encoder"):
        PrefixSampler(tiny_qwen2()).start([1, 2], [image])


def test_decode_mode_dispatch_is_explicit(monkeypatch):
    """Config first, SPORT_DECODE second (for auto only), the machine last; the CUDA-graph mode is opt-in
    (auto is dynamic on CUDA too) until it has passed on a GPU."""
    from sport_fast.backends import decode_mode
    cpu = torch.device("cpu")
    assert decode_mode("auto", cpu) == "dynamic"
    assert decode_mode("auto", torch.device("cuda")) == "dynamic"
    assert decode_mode("graph", torch.device("cuda")) == "graph"
    with pytest.warns(UserWarning, match="falling back to 'static'"):
        assert decode_mode("graph", cpu) == "static"
    monkeypatch.setenv("SPORT_DECODE", "static")
    assert decode_mode("auto", cpu) == "static"
    assert decode_mode("dynamic", cpu) == "dynamic", "an explicit choice (the config's) wins over the variable"
    monkeypatch.setenv("SPORT_DECODE", "fast")
    with pytest.raises(ValueError, match="decode mode must be one of"):
        decode_mode("auto", cpu)


def reference_sample_token(logits: torch.Tensor, params: SamplingParams, history: list[int],
                           generator: torch.Generator) -> tuple[int, float]:
    """The per-row rule written out on its own (the oracle of ``sample_rows``): (token, raw log-prob)."""
    raw_logp = torch.log_softmax(logits.float(), dim=-1)
    scores = _penalise_repeats(logits.float().clone(), history, params.repetition_penalty)
    if params.temperature == 0:
        token = int(scores.argmax())
    else:
        scores = _filter_top_k_top_p(scores / params.temperature, params.top_k, params.top_p)
        token = draw(torch.softmax(scores, dim=-1), generator)
    return token, float(raw_logp[token])


def test_sample_rows_equals_sample_token_row_by_row():
    from sport_fast.sampler.sampling import sample_rows
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    params = [GREEDY, SamplingParams(temperature=0.7), SamplingParams(temperature=1.2, top_k=5),
              SamplingParams(temperature=1.0, top_p=0.3), SamplingParams(temperature=0.9, repetition_penalty=1.3),
              SamplingParams(temperature=0, repetition_penalty=2.0)]
    histories = [(), (), (), (), [1, 2, 3, 7], [int(logits[5].argmax())]]
    for seed in range(20):
        gens = lambda: [torch.Generator().manual_seed(seed * 10 + r) for r in range(6)]  # noqa: E731
        tokens, logps = sample_rows(logits, params, histories, gens())
        want = [reference_sample_token(logits[r], params[r], list(histories[r]), g) for r, g in enumerate(gens())]
        assert tokens == [t for t, _ in want]
        torch.testing.assert_close(torch.tensor(logps), torch.tensor([lp for _, lp in want]))
    assert tokens[5] != int(logits[5].argmax()), "the penalty must move a greedy row off its repeated token"


def test_a_model_loaded_for_flex_attention_samples_as_the_sdpa_one():
    """Training's FlexAttention model in the sampler: its prefills run SDPA and its decode steps the
    shared-prefix attention, so its candidates are the same tokens with the same log-probs."""
    from transformers import Qwen2ForCausalLM
    sdpa = tiny_qwen2(3)
    flex = Qwen2ForCausalLM(sdpa.config.__class__(**{**sdpa.config.to_dict(), "attn_implementation": "flex_attention"}))
    flex.load_state_dict(sdpa.state_dict())
    assert flex.config._attn_implementation == "flex_attention"
    params = [SamplingParams(temperature=0.9, max_new_tokens=6, seed=s) for s in range(3)]
    a = PrefixSampler(sdpa.eval()).sample(PrefixSampler(sdpa).start([5, 9, 2, 7, 11]), params)
    sampler = PrefixSampler(flex.eval())
    b = sampler.sample(sampler.start([5, 9, 2, 7, 11]), params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    torch.testing.assert_close(torch.tensor([c.logprobs for c in a]), torch.tensor([c.logprobs for c in b]))


def test_the_static_decoder_of_a_shape_is_reused_across_calls_and_still_exact():
    """Two sample_many calls of the same shape share one decoder (its graph would be captured once): the
    second call's contexts are loaded into the same buffers, and its candidates equal the dynamic mode's."""
    model = tiny_qwen2(5)
    params = [SamplingParams(temperature=1.0, max_new_tokens=5, seed=s) for s in range(2)]
    static, dynamic = PrefixSampler(model, decode="static"), PrefixSampler(model, decode="dynamic")
    results = {}
    for name, sampler in (("static", static), ("dynamic", dynamic)):
        first = sampler.sample_many([(sampler.start([3, 4, 5]), params), (sampler.start([7, 8]), params)])
        second = sampler.sample_many([(sampler.start([9, 1, 2, 6]), params), (sampler.start([11]), params)])
        results[name] = [[c.token_ids for c in cands] for cands in first + second]
    assert len(static._decoders) == 1, "the second call of the same shape built a new decoder"
    assert results["static"] == results["dynamic"]
