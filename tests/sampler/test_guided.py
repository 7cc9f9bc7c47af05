"""Structured output: the guided decoder against full forwards, and response_format through the server."""
import json

import openai
import pytest
import torch

from sport_fast.sampler.guided import GuidedDecoder, SchemaError, parse_flat_schema
from sport_fast.sampler.sampling import SamplingParams

SCHEMA = {"type": "object", "properties": {"best": {"type": "string", "enum": ["K", "Q", "Z"]},
                                           "reason": {"type": "string"}}, "required": ["best", "reason"]}


@pytest.fixture(scope="module")
def tiny_with_real_tokenizer(smollm2):
    """A random 2-layer Llama over SmolLM2's real vocabulary: fast, and it tokenises any text."""
    from transformers import LlamaConfig, LlamaForCausalLM
    _, tok = smollm2
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return LlamaForCausalLM(cfg).eval(), tok


def full_forward_score(model, ids, option_ids):
    """Independent reference: one uncached forward over prompt + option, summed option log-probs."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids + option_ids])).logits[0].double(), -1)
    return sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(option_ids))


def test_greedy_enum_choice_is_the_best_scored_option(tiny_with_real_tokenizer):
    model, tok = tiny_with_real_tokenizer
    prompt = tok.encode("Pick the best candidate.")
    reply = GuidedDecoder(model, tok).generate(prompt, SCHEMA, SamplingParams(temperature=0, max_new_tokens=12))
    value = json.loads(reply.text)
    assert set(value) == {"best", "reason"} and value["best"] in ("K", "Q", "Z")
    ctx = prompt + tok.encode('{"best": "', add_special_tokens=False)
    scores = {o: full_forward_score(model, ctx, tok.encode(o + '"', add_special_tokens=False)) for o in "KQZ"}
    assert value["best"] == max(scores, key=scores.get), scores


def test_a_free_string_that_runs_out_is_reported_cut_off_yet_parses(tiny_with_real_tokenizer):
    model, tok = tiny_with_real_tokenizer
    schema = {"type": "object", "properties": {"query": {"type": "string"}}}
    reply = GuidedDecoder(model, tok).generate(tok.encode("x"), schema, SamplingParams(temperature=1.0,
                                                                                        max_new_tokens=3, seed=1))
    assert isinstance(json.loads(reply.text)["query"], str)
    assert reply.generated_tokens <= 3
    assert reply.finish_reason == ("length" if reply.generated_tokens == 3 and '"' not in
                                   tok.decode(tok.encode(json.loads(reply.text)["query"])) else reply.finish_reason)


def test_sampling_over_enum_is_seeded(tiny_with_real_tokenizer):
    model, tok = tiny_with_real_tokenizer
    dec = GuidedDecoder(model, tok)
    run = lambda seed: json.loads(dec.generate(tok.encode("go"), SCHEMA, SamplingParams(
        temperature=5.0, max_new_tokens=4, seed=seed)).text)["best"]
    picks = [run(s) for s in range(12)]
    assert picks == [run(s) for s in range(12)] and len(set(picks)) > 1


@pytest.mark.parametrize("schema, message", [
    ({"type": "array"}, "object schema"),
    ({"type": "object", "properties": {}}, "non-empty 'properties'"),
    ({"type": "object", "properties": {"n": {"type": "integer"}}}, "only string properties"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": []}, "every property must be required"),
    ({"type": "object", "properties": {"a": {"type": "string", "enum": []}}}, "enum must be a non-empty list"),
])
def test_unsupported_schemas_are_named(schema, message):
    with pytest.raises(SchemaError, match=message):
        parse_flat_schema(schema)


def test_response_format_through_the_server_with_the_openai_client(tiny_with_real_tokenizer):
    from sport_fast.sampler.server import SamplerService, start_server
    model, tok = tiny_with_real_tokenizer
    srv = start_server(SamplerService(model, tok, "tiny"))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", api_key="x", timeout=60,
                           max_retries=0)
    try:
        fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}
        reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "pick"}],
                                               response_format=fmt, temperature=0, max_tokens=8, n=2)
        values = [json.loads(c.message.content) for c in reply.choices]
        assert all(v["best"] in ("K", "Q", "Z") for v in values) and values[0] == values[1]
        with pytest.raises(openai.BadRequestError, match="response_format: property 'n'"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "pick"}],
                                           response_format={"type": "json_schema", "json_schema": {"schema": {
                                               "type": "object", "properties": {"n": {"type": "integer"}}}}})
        with pytest.raises(openai.BadRequestError, match="response_format must be"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "pick"}],
                                           response_format={"type": "json_object"})
    finally:
        srv.shutdown()
