"""Config: recipes load, overrides are typed, every unknown key or bad value is one error naming it."""
from pathlib import Path

import pytest

from sport_fast.config import Config, ConfigError, dump_config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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
    (tmp_path / "again.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "again.yaml") == cfg


@pytest.mark.parametrize("overrides, message", [
    (["train.bta=0.1"], "unknown config key train.bta"),
    (["trian.beta=0.1"], "unknown config key trian"),
    (["explore.k=four"], "config key explore.k must be int, got 'four'"),
    (["explore.k=true"], "config key explore.k must be int"),
    (["judge.rule=best"], "judge.rule must be one of sport, all, worst"),
    (["tasks.source=file"], "tasks.source=file needs tasks.train_file"),
    (["judge.backend=openai"], "judge.backend=openai needs judge.base_url and judge.model"),
    (["beta"], "override 'beta' must look like section.key=value"),
    (["explore.k=0"], "must be >= 1"),
])
def test_bad_keys_and_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "default.yaml", overrides)


def test_a_typo_in_a_file_is_named(tmp_path):
    (tmp_path / "x.yaml").write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown config key train.epoch .known here: .*epochs"):
        load_config(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
