"""Weights at run time, through the real protocol: our server hot-loads a LoRA adapter by name (vLLM's
endpoint) or full weights in place (SGLang's), drops every cached prefix when it does, and then samples
exactly the new weights' log-probs; the engine admin client drives it as it drives vLLM and SGLang."""
import openai
import pytest
import torch
from tiny_models import tiny_qwen2, vl_tokenizer

from sport_fast.sampler.engines import EngineAdmin, EngineError, PROFILES, server_root
from sport_fast.sampler.server import SamplerService, start_server

PROMPT = [5, 9, 13, 2, 7, 40, 41, 42, 3, 11, 17, 23, 8, 8, 30]


@pytest.fixture()
def server():
    service = SamplerService(tiny_qwen2(8), vl_tokenizer(), "tiny")
    srv = start_server(service)
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", service
    srv.shutdown()


def adapter(seed: int, folder):
    """A LoRA-wrapped copy of the served base with non-zero adapters, saved with peft's save_pretrained."""
    from peft import LoraConfig, get_peft_model
    policy = get_peft_model(tiny_qwen2(8), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    policy.save_pretrained(str(folder))
    return policy.eval()


def greedy(url, model, prompt=PROMPT):
    c = openai.OpenAI(base_url=url, api_key="EMPTY", timeout=30, max_retries=0)
    reply = c.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=5, logprobs=1)
    choice = reply.choices[0]
    return choice.model_dump()["token_ids"], choice.logprobs.token_logprobs, reply.usage.prompt_tokens_details.cached_tokens


@torch.no_grad()
def uncached(model, prompt, ids) -> list[float]:
    logp = model(torch.tensor([prompt + ids])).logits[0].double().log_softmax(-1)
    return [logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(ids)]


def test_a_hot_loaded_adapter_serves_its_weights_and_no_stale_prefix(server, tmp_path):
    url, service = server
    base_ids, base_lp, _ = greedy(url, "tiny")
    assert greedy(url, "tiny")[2] == len(PROMPT), "the prompt should be cached before the load"
    admin = EngineAdmin(url, "sport_fast", timeout_s=30)
    for version, seed in ((1, 3), (2, 4)):
        policy = adapter(seed, tmp_path / f"v{version}")
        admin.load_adapter(f"run-v{version}", str(tmp_path / f"v{version}"))
        ids, lp, cached = greedy(url, f"run-v{version}")
        assert cached == 0, "a prefix computed with the old weights was served after the load"
        assert lp == pytest.approx(uncached(policy, PROMPT, ids), abs=1e-4), f"v{version}: not the adapter's weights"
        assert greedy(url, f"run-v{version}")[2] == len(PROMPT), "the new weights' prefix is cached again"
        assert admin.reset_prefix_cache() and greedy(url, f"run-v{version}")[2] == 0
    assert ids != base_ids or lp != pytest.approx(base_lp, abs=1e-3), "the adapter changed nothing"
    with pytest.raises(openai.NotFoundError, match="run-v2"):
        greedy(url, "run-v1")  # one adapter at a time: the old version is no longer served
    with pytest.raises(EngineError, match="lora_path .* holds no adapter_config.json"):
        admin.load_adapter("run-v3", str(tmp_path / "nothing"))
    assert greedy(url, "run-v2")[1] == pytest.approx(lp, abs=1e-6), "a refused load changed what is served"
    service.admin("/v1/unload_lora_adapter", {"lora_name": "run-v2"})
    assert greedy(url, "tiny")[1] == pytest.approx(base_lp, abs=1e-5), "unloading did not restore the base"


def test_full_weights_load_in_place_from_a_hugging_face_folder(server, tmp_path):
    url, service = server
    trained = tiny_qwen2(9)  # other weights, same architecture
    trained.save_pretrained(str(tmp_path / "full"))
    admin = EngineAdmin(url, "sport_fast", timeout_s=30)
    greedy(url, "tiny")
    admin.update_weights(str(tmp_path / "full"))
    ids, lp, cached = greedy(url, "tiny")
    assert cached == 0 and lp == pytest.approx(uncached(trained, PROMPT, ids), abs=1e-4)
    tiny_qwen2(1, tie=True).save_pretrained(str(tmp_path / "other"))  # no separate lm_head: refused, by name
    with pytest.raises(EngineError, match="does not fit the served model: missing \\['lm_head.weight'\\]"):
        admin.update_weights(str(tmp_path / "other"))
    assert greedy(url, "tiny")[1] == pytest.approx(lp, abs=1e-6), "a refused load changed the weights"
    with pytest.raises(EngineError, match="cannot load full weights"):
        EngineAdmin(url, "vllm").update_weights(str(tmp_path / "full"))


def test_engine_profiles_name_adapters_and_admin_routes_as_each_engine_does():
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    assert PROFILES["vllm"].model_for("Qwen/base", "run-v1") == "run-v1"
    assert PROFILES["sglang"].model_for("Qwen/base", "run-v1") == "Qwen/base:run-v1"
    assert PROFILES["sglang"].model_for("Qwen/base", None) == "Qwen/base"
    assert PROFILES["vllm"].load_adapter == "v1/load_lora_adapter" and PROFILES["sglang"].reset_cache == "flush_cache"
