"""Config: recipes load, overrides are typed, every unknown key or bad value is one error naming it."""
from pathlib import Path

import pytest

from sport_fast.config import Config, ConfigError, dump_config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "sport_fast" / "configs"


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_recipe_loads(recipe):
    cfg = load_config(CONFIGS / recipe)
    assert isinstance(cfg, Config) and cfg.name == recipe.removesuffix(".yaml")
    assert load_config(None, [f"{k}={v}" for k, v in []]) == Config()


def test_overrides_are_typed_and_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "default.yaml", ["train.beta=0.05", "explore.k=5", "model.lora.r=8",
                                                  "judge.two_orders=true", "train.lr=1"])
    assert (cfg.train.beta, cfg.explore.k, cfg.model.lora.r, cfg.judge.two_orders) == (0.05, 5, 8, True)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float key takes it as the number it spells
    spelled = load_config(CONFIGS / "default.yaml", ["sft.lr=1e-3", "train.lr=-2.5E+1"])
    assert (spelled.sft.lr, spelled.train.lr) == (1e-3, -25.0)
    (tmp_path / "again.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "again.yaml") == cfg


@pytest.mark.parametrize("overrides, message", [
    (["train.bta=0.1"], "unknown config key train.bta"),
    (["trian.beta=0.1"], "unknown config key trian"),
    (["explore.k=four"], "config key explore.k must be int, got 'four'"),
    (["explore.k=true"], "config key explore.k must be int"),
    (["train.lr=1e-3x"], "config key train.lr must be float, got '1e-3x'"),
    (["judge.rule=best"], "judge.rule must be one of sport, all, worst"),
    (["tasks.source=file"], "tasks.source=file needs tasks.train_file"),
    (["judge.backend=openai"], "judge.backend=openai needs judge.base_url and judge.model"),
    (["beta"], "override 'beta' must look like section.key=value"),
    (["explore.k=0"], "must be >= 1"),
    (["model.dtype=float16"], "float16 trains only under DeepSpeed"),
    (["train.loss_type=hinge"], "train.loss_type must be one of sigmoid, robust, ipo"),
    (["backends.kernel=cuda"], "backends.kernel must be one of auto, triton, torch"),
    (["explore.top_p=0"], "config section explore: .*top_p in \\(0, 1\\]"),
    (["judge.backend=openai", "judge.base_url=http://x/v1", "judge.model=m", "judge.judge_model=other"],
     "judge.judge_model does not apply to judge.backend=openai"),
    (["judge.backend=serve", "judge.base_url=http://x/v1"], "judge.base_url does not apply to judge.backend=serve"),
    (["judge.backend=local", "judge.timeout_s=5"], "judge.timeout_s does not apply to judge.backend=local"),
    (["explore.backend=vllm"], "explore.backend must be one of embedded, openai"),
    (["explore.backend=openai"], "explore.backend=openai needs explore.base_urls .* and explore.model"),
    (["explore.base_urls=[http://x/v1]"], "explore.base_urls does not apply to explore.backend=embedded"),
    (["explore.engine=sglang"], "explore.engine does not apply to explore.backend=embedded"),
    (["explore.backend=openai", "explore.base_urls=[http://x/v1]", "explore.model=m", "model.lora.enabled=false"],
     "explore.engine=vllm hot-loads LoRA adapters only"),
    (["explore.backend=openai", "explore.base_urls=[http://x/v1]", "explore.model=m", "explore.engine=tgi"],
     "explore.engine must be one of vllm, sglang, sport_fast"),
    (["explore.backend=openai", "explore.base_urls=[http://x/v1]", "explore.model=m", "sft.enabled=true"],
     "explore.backend=openai samples from the model the servers loaded"),
    (["explore.base_urls=[1, 2]"], "explore.base_urls must be a list of non-empty strings"),
    (["sft.continue_from=/nowhere/checkpoints/sft"], "sft.continue_from needs sft.enabled=true"),
    (["sft.enabled=true", "sft.continue_from=/nowhere/checkpoints/sft"],
     "sft.continue_from=/nowhere/checkpoints/sft is not a complete checkpoint folder"),
    (["explore.batches_in_flight=0"], "explore.batches_in_flight.* must be >= 1"),
])
def test_bad_keys_and_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "default.yaml", overrides)


def test_inference_servers_are_a_list_and_one_url_is_a_list_of_one():
    servers = ["explore.backend=openai", "explore.model=m", "model.lora.enabled=false", "explore.engine=sglang"]
    cfg = load_config(CONFIGS / "default.yaml", [*servers, "explore.base_urls=[http://a:8000/v1, http://b:8000/v1]"])
    assert cfg.explore.base_urls == ["http://a:8000/v1", "http://b:8000/v1"]
    assert load_config(None, [*servers, "explore.base_urls=http://a:8000/v1"]).explore.base_urls == ["http://a:8000/v1"]


def test_a_typo_in_a_file_is_named(tmp_path):
    (tmp_path / "x.yaml").write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown config key train.epoch .known here: .*epochs"):
        load_config(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_full_fine_tuning_with_an_initial_reference_uses_a_frozen_initial_model_after_round_0():
    """LoRA: the policy (adapters off). Full fine-tuning: the policy in round 0, then a frozen copy of the
    initial weights, loaded once, whatever the policy has become."""
    import torch
    from sport_fast.run import phases
    from tiny_models import tiny_qwen2

    class Setup:
        loads = 0

        def load_base(self, cfg):
            Setup.loads += 1
            return tiny_qwen2(0), None

    policy = tiny_qwen2(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)  # trained away from the initial weights
    full = load_config(None, ["model.lora.enabled=false", "rounds=3"])
    frozen = {}
    assert phases.reference_model(full, 0, policy, frozen, load=Setup().load_base) is policy
    first = phases.reference_model(full, 1, policy, frozen, load=Setup().load_base)
    assert phases.reference_model(full, 2, policy, frozen, load=Setup().load_base) is first and Setup.loads == 1
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), tiny_qwen2(0).state_dict().values()))
    assert not any(p.requires_grad for p in first.parameters())
    for overrides in (["rounds=3"], ["model.lora.enabled=false", "rounds=3", "train.reference=round_start"]):
        assert phases.reference_model(load_config(None, overrides), 2, policy, {}, load=Setup().load_base) is policy


def test_every_config_key_is_documented():
    """docs/configuration.md names every key of the config (it is generated from the dataclasses; a new key
    that is not documented fails here)."""
    import dataclasses
    import typing

    def keys(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                yield from keys(hints[f.name], f"{prefix}{f.name}.")
            else:
                yield prefix + f.name
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    missing = [k for k in keys(Config) if f"`{k}`" not in doc]
    assert not missing, f"undocumented config keys: {missing}"
