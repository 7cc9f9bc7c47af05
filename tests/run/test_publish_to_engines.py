"""Weight sync after a round (``run.policy.publish``) against loopback stand-ins for vLLM and SGLang
(``fake_engines``): the calls each engine receives per round, that requests then name the adapter the way
that engine serves it, and that a refused load leaves the version the policy asks for unchanged."""
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_engines import FakeEngine
from tiny_agent import tiny_config

from sport_fast.run.errors import SetupError
from sport_fast.run.policy import exploration_policy, publish
from sport_fast.sampler.engines import EngineError


class SavedPolicy:
    """Stands in for the trained model: ``save_pretrained`` writes the file an engine checks for."""

    def __init__(self, lora: bool):
        self.file = "adapter_config.json" if lora else "config.json"

    def save_pretrained(self, folder, safe_serialization=True):
        (Path(folder) / self.file).write_text("{}")


def run_against(engine: FakeEngine, tmp_path, *extra: str):
    cfg = tiny_config(tmp_path, "name=mini", "explore.backend=openai", f"explore.base_urls=[{engine.url}]",
                      "explore.model=Qwen/base", f"explore.engine={engine.kind}", "explore.timeout_s=10", *extra)
    sampler = exploration_policy(cfg, None, None, None, None)
    return SimpleNamespace(cfg=cfg, model=SavedPolicy(cfg.model.lora.enabled), sampler=sampler)


@pytest.mark.parametrize("kind, root, served", [("vllm", "/v1", "mini-v{v}"), ("sglang", "", "Qwen/base:mini-v{v}")])
def test_each_round_loads_the_adapter_under_its_version_and_resets_the_cache(kind, root, served, tmp_path):
    engine = FakeEngine(kind)
    reset = "/reset_prefix_cache" if kind == "vllm" else "/flush_cache"
    try:
        run = run_against(engine, tmp_path)
        assert run.sampler.names(run.sampler.version) == "Qwen/base", "version 0 is the base the server loaded"
        for v in (1, 2):
            publish(run, v)
            folder = str(tmp_path.resolve() / "weights" / f"v{v}")
            freed = [(f"{root}/unload_lora_adapter", {"lora_name": f"mini-v{v - 1}"})] if v > 1 else []
            assert [(p, b) for _, p, _, b in engine.requests[-3 - len(freed):]] == [
                (f"{root}/unload_lora_adapter", {"lora_name": f"mini-v{v}"}),
                (f"{root}/load_lora_adapter", {"lora_name": f"mini-v{v}", "lora_path": folder}),
                (reset, {}), *freed]
            assert run.sampler.names(run.sampler.version) == served.format(v=v)
        assert len(engine.requests) == 7 and sorted(engine.adapters) == ["mini-v2"], "one adapter loaded at a time"
    finally:
        engine.close()


def test_sglang_takes_full_weights_in_place_and_flushes(tmp_path):
    engine = FakeEngine("sglang")
    try:
        run = run_against(engine, tmp_path, "model.lora.enabled=false", "explore.flush_wait_s=0.5")
        publish(run, 1)
        folder = str(tmp_path.resolve() / "weights" / "v1")
        assert [(p, b) for _, p, _, b in engine.requests] == [
            ("/update_weights_from_disk", {"model_path": folder}), ("/flush_cache", {})]
        assert engine.weights == folder and run.sampler.names(run.sampler.version) == "Qwen/base"
        engine.busy = True  # the flush is refused: the round must not start on a cache of the old weights
        with pytest.raises(EngineError, match=r"POST /flush_cache \{\} -> HTTP 400: Cache flushed\..*still refused "
                                              r"after 0.5 s"):
            publish(run, 2)
        assert run.sampler.version == 1, "a refused publish moved the policy to the new version"
    finally:
        engine.close()


def test_without_a_reset_vllm_warns_for_an_adapter_and_a_refused_load_keeps_the_old_version(tmp_path, capsys):
    engine = FakeEngine("vllm", dev_mode=False)
    try:
        run = run_against(engine, tmp_path)
        publish(run, 1)
        assert "no prefix-cache reset offered; the new adapter's name keeps old KV apart" in capsys.readouterr().out
        assert run.sampler.version == 1
        engine.scripted["/v1/load_lora_adapter"] = (400, {"error": {"message": "max_loras reached"}}, "application/json")
        with pytest.raises(EngineError, match=r"POST /v1/load_lora_adapter .* -> HTTP 400: max_loras reached$"):
            publish(run, 2)
        assert run.sampler.version == 1 and engine.adapters == {"mini-v1": str(tmp_path.resolve() / "weights" / "v1")}
    finally:
        engine.close()


def test_full_weights_without_a_reset_are_refused(tmp_path):
    engine = FakeEngine("sglang")
    engine.scripted["/flush_cache"] = (404, {"detail": "Not Found"}, "application/json")
    try:
        run = run_against(engine, tmp_path, "model.lora.enabled=false")
        with pytest.raises(SetupError, match="offers no prefix-cache reset: KV of the old weights could be reused"):
            publish(run, 1)
        assert run.sampler.version == 0
    finally:
        engine.close()
