"""sport_fast.serve driven by the official openai client over loopback, and the client backend's limits."""
import json
import threading
import time
import urllib.request

import openai
import pytest
from fake_openai import FakeOpenAI

from sport_fast.sampler.remote import OpenAIStepSampler
from sport_fast.sampler.prefix_sampler import PrefixSampler
from sport_fast.sampler.sampling import SamplingParams
from sport_fast.sampler.server import SamplerService, start_server
from tiny_models import vl_tokenizer
from tiny_models import tiny_qwen2

PROMPT = [5, 9, 13, 2, 7, 40, 41, 42, 3, 11, 17, 23]


@pytest.fixture(scope="module")
def server():
    service = SamplerService(tiny_qwen2(8), vl_tokenizer(), "tiny")
    srv = start_server(service)
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", service
    srv.shutdown()


def client(url, **kw):
    return openai.OpenAI(base_url=url, api_key="EMPTY", timeout=30, max_retries=0, **kw)


def test_models_and_greedy_completions_match_the_embedded_sampler(server):
    url, service = server
    c = client(url)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    reply = c.completions.create(model="tiny", prompt=PROMPT, n=3, temperature=0, max_tokens=6, logprobs=1)
    want = PrefixSampler(service.sampler.model).sample(PrefixSampler(service.sampler.model).start(PROMPT),
                                                       [SamplingParams(temperature=0, max_new_tokens=6)])[0]
    for choice in reply.choices:
        assert choice.model_dump()["token_ids"] == want.token_ids
        assert choice.logprobs.token_logprobs == pytest.approx(want.logprobs, abs=1e-5)
    assert reply.usage.completion_tokens == 18


def test_a_growing_conversation_reuses_the_cached_prefix(server):
    url, _ = server
    c = client(url)
    first = c.completions.create(model="tiny", prompt=PROMPT + [1], temperature=0, max_tokens=4)
    again = c.completions.create(model="tiny", prompt=PROMPT + [1], temperature=0, max_tokens=4)
    assert again.usage.prompt_tokens_details.cached_tokens == len(PROMPT) + 1
    grown = PROMPT + [1] + first.choices[0].model_dump()["token_ids"] + [60, 61]
    reply = c.completions.create(model="tiny", prompt=grown, temperature=0, max_tokens=4)
    assert reply.usage.prompt_tokens_details.cached_tokens == len(PROMPT) + 1


def test_chat_completions_with_logprobs_and_seeded_sampling(server):
    url, _ = server
    c = client(url)
    msgs = [{"role": "user", "content": "w1 w2 w3"}]
    a = c.chat.completions.create(model="tiny", messages=msgs, n=2, temperature=1.3, max_tokens=5, seed=4,
                                  logprobs=True)
    b = c.chat.completions.create(model="tiny", messages=msgs, n=2, temperature=1.3, max_tokens=5, seed=4)
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]
    assert len(a.choices[0].logprobs.content) == len(a.choices[0].model_dump()["token_ids"])


@pytest.mark.parametrize("kwargs,field", [({"temperature": 5}, "temperature"), ({"n": 0}, "n"),
                                          ({"max_tokens": 0}, "max_tokens"), ({"stop": [""]}, "stop"),
                                          ({"prompt": []}, "prompt"), ({"prompt": [10 ** 9]}, "prompt")])
def test_malformed_requests_get_400_naming_the_field(server, kwargs, field):
    url, _ = server
    args = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client(url).completions.create(**args)
    assert field in str(err.value)


def test_bad_json_unknown_routes_and_models_do_not_crash_the_server(server):
    url, _ = server
    req = urllib.request.Request(url + "/completions", data=b"{not json", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and "JSON" in json.loads(err.value.read())["error"]["message"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "/nothing", timeout=10)
    assert err.value.code == 404
    with pytest.raises(openai.NotFoundError):
        client(url).completions.create(model="other", prompt=PROMPT, max_tokens=2)
    assert client(url).completions.create(model="tiny", prompt=PROMPT, max_tokens=2).choices


def test_concurrent_clients_are_all_served(server):
    url, _ = server
    results, errors = [], []

    def work(i):
        try:
            r = client(url).completions.create(model="tiny", prompt=PROMPT + [i], temperature=0, max_tokens=3)
            results.append(r.choices[0].model_dump()["token_ids"])
        except Exception as err:  # noqa: BLE001
            errors.append(err)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 6


def test_backend_keeps_per_candidate_params_and_token_ids(server):
    url, service = server
    backend = OpenAIStepSampler(url, "tiny", timeout_s=30)
    params = [SamplingParams(temperature=0, max_new_tokens=5), SamplingParams(temperature=1.2, seed=3, max_new_tokens=5),
              SamplingParams(temperature=1.2, seed=3, max_new_tokens=5)]
    cands = backend.sample(PROMPT, params)
    greedy = PrefixSampler(service.sampler.model).sample(PrefixSampler(service.sampler.model).start(PROMPT),
                                                         [SamplingParams(temperature=0, max_new_tokens=5)])[0]
    assert cands[0].token_ids == greedy.token_ids
    assert [c.token_ids for c in backend.sample(PROMPT, params)] == [c.token_ids for c in cands]
    assert all(len(c.logprobs) == len(c.token_ids) for c in cands)


def scripted_server(delay_s=0.0, failures=0) -> FakeOpenAI:
    """A loopback server that misbehaves on purpose: slow replies, or 5xx a given number of times."""
    def respond(path, body, server):
        time.sleep(delay_s)
        if server.hits <= failures:
            return 503, {"error": {"message": "boom", "type": "server_error"}}
        return 200, {"id": "x", "object": "text_completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "text": "a", "finish_reason": "length", "token_ids": [1],
             "logprobs": {"token_logprobs": [-0.1], "tokens": ["a"]}}]}
    return FakeOpenAI(respond)


def test_backend_times_out_within_its_limit():
    slow = scripted_server(delay_s=5)
    backend = OpenAIStepSampler(slow.url, "m", timeout_s=0.5, max_retries=1)
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        backend.sample([1, 2], [SamplingParams(max_new_tokens=1)])
    assert time.perf_counter() - t0 < 4.0, "timeout and retries took far longer than configured"
    assert slow.hits == 2
    slow.close()


def test_backend_retries_5xx_a_bounded_number_of_times():
    flaky = scripted_server(failures=2)
    assert OpenAIStepSampler(flaky.url, "m", timeout_s=5, max_retries=2).sample([1], [SamplingParams()])[0].token_ids == [1]
    assert flaky.hits == 3
    broken = scripted_server(failures=10)
    with pytest.raises(openai.InternalServerError):
        OpenAIStepSampler(broken.url, "m", timeout_s=5, max_retries=1).sample([1], [SamplingParams()])
    assert broken.hits == 2


def test_each_candidate_keeps_its_own_seed_through_requests_with_n():
    """Candidates with equal parameters and consecutive seeds share a request with n (the server gives choice i
    seed + i); any other candidate gets a request of its own, so every candidate is sampled with its seed."""
    from sport_fast.sampler.remote import seed_runs
    p = lambda seed, t=1.2: SamplingParams(temperature=t, seed=seed, max_new_tokens=5)  # noqa: E731
    assert seed_runs([p(5), p(6), p(9), p(10, 0.7), p(7)]) == [[0, 1, 4], [2], [3]]
    assert seed_runs([p(None), p(None), p(3)]) == [[0, 1], [2]]


def test_requests_that_arrive_while_the_model_is_busy_decode_as_one_batch(server):
    url, service = server
    sizes, original = [], service.sampler.sample_many
    service.sampler.sample_many = lambda reqs: sizes.append(sum(len(p) for _, p in reqs)) or original(reqs)
    results = {}

    def ask(i):
        reply = client(url).completions.create(model="tiny", prompt=PROMPT + [50 + i], temperature=0, max_tokens=4)
        results[i] = reply.choices[0].model_dump()["token_ids"]
    try:
        with service.lock:  # the model is busy: the six requests queue up meanwhile
            threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            deadline = time.time() + 20
            while len(service.batcher.queue) < 6 and time.time() < deadline:
                time.sleep(0.01)
        for t in threads:
            t.join(60)
        assert sizes == [6], f"decode batches of {sizes} rows: the queued requests were not decoded together"
        alone = [client(url).completions.create(model="tiny", prompt=PROMPT + [50 + i], temperature=0,
                                                max_tokens=4).choices[0].model_dump()["token_ids"] for i in range(6)]
        assert [results[i] for i in range(6)] == alone
    finally:
        service.sampler.sample_many = original
