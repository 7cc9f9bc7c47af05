"""The policy exploration samples from (``explore.backend``), and how each round's weights reach it.

- ``embedded``: the prefix-caching sampler over the policy in this process (on every rank, its own copy);
- ``openai``: inference servers (``explore.base_urls``: vLLM, SGLang or ``sport_fast.serve``), one
  trajectory pinned to one replica (``sampler.remote.ServerPolicy``).

Weight version v is the policy after v rounds of training; round r explores with version r. ``publish(run,
v)`` makes v what is sampled: the embedded sampler drops every cache built with the old weights; servers get
the weights as their engine takes them (``sampler.engines``): the LoRA adapter saved with peft's
``save_pretrained`` to ``<out_dir>/weights/v<v>`` (written whole, then renamed into place) and hot-loaded as
``<run name>-v<v>``, or the full weights (a Hugging Face folder) loaded in place with
``update_weights_from_disk``; then each server's prefix cache is reset. The folder must be readable by the
servers at the same path (a shared file system). Version 0 is the base model the servers loaded.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from sport_fast.run.durable import atomic_write, fsync_dir
from sport_fast.run.errors import SetupError


def exploration_policy(cfg, model, tokenizer, backends, vision):
    """What the agent samples from, per ``cfg.explore.backend``."""
    if cfg.explore.backend == "embedded":
        from sport_fast.sampler.prefix_sampler import PrefixSampler
        return PrefixSampler(model, tokenizer, seed=cfg.seed, decode=backends.decode)
    from sport_fast.sampler.engines import PROFILES
    from sport_fast.sampler.remote import OpenAIStepSampler, ServerPolicy
    if vision is not None:
        raise SetupError("explore.backend=openai sends token ids only: a vision-language policy explores with "
                         "explore.backend=embedded")
    e, engine = cfg.explore, PROFILES[cfg.explore.engine]
    replicas = [OpenAIStepSampler(url, e.model, timeout_s=e.timeout_s) for url in e.base_urls]
    lora = cfg.model.lora.enabled
    return ServerPolicy(replicas, names=lambda v: engine.model_for(e.model, adapter_name(cfg, v) if lora and v else None))


def adapter_name(cfg, version: int) -> str:
    """The name version ``version``'s adapter is loaded under (the run's name keeps runs apart)."""
    return f"{cfg.name}-v{version}"


def publish(run, version: int) -> None:
    """Make weight version ``version`` (``run.model`` as it is now) what exploration samples from."""
    if run.cfg.explore.backend == "openai" and version > 0:
        _push(run, version)
    run.sampler.set_version(version)
    judge_uses(run, version)


def judge_uses(run, version: int) -> None:
    """A judge that is the policy itself (``judge.backend=local``, behind its cache) now judges with weight
    version ``version``: its cached verdicts of other versions are not served (other judges, and parts
    without a judge, ignore this)."""
    use_weights = getattr(getattr(run, "judge_backend", None), "use_weights", None)
    if use_weights is not None:
        use_weights(version)


def _push(run, version: int) -> None:
    from sport_fast.sampler.engines import EngineAdmin
    cfg = run.cfg
    folder = weights_folder(run, version)
    lora = cfg.model.lora.enabled
    for url in cfg.explore.base_urls:
        admin = EngineAdmin(url, cfg.explore.engine, timeout_s=cfg.explore.timeout_s)
        if lora:
            admin.load_adapter(adapter_name(cfg, version), folder)
        else:
            admin.update_weights(folder)
        if not admin.reset_prefix_cache(wait_s=cfg.explore.flush_wait_s):
            if not lora:
                raise SetupError(f"{url} offers no prefix-cache reset: KV of the old weights could be reused "
                                 f"(vLLM: start it with VLLM_SERVER_DEV_MODE=1)")
            print(f"  {url}: no prefix-cache reset offered; the new adapter's name keeps old KV apart", flush=True)
        if lora and version > 1:  # the last round's adapter is no longer sampled: free its slot on the server
            admin.unload_adapter(adapter_name(cfg, version - 1))
    what = f"adapter {adapter_name(cfg, version)}" if lora else "full weights"
    print(f"  published weight version {version} ({what}, {folder}) to {len(cfg.explore.base_urls)} server(s)",
          flush=True)


def weights_folder(run, version: int) -> Path:
    """``<out_dir>/weights/v<version>``: the policy saved as an engine loads it (peft adapter or Hugging Face
    model folder), written once, whole (a temporary folder renamed into place)."""
    final = Path(run.cfg.out_dir).resolve() / "weights" / f"v{version}"
    if (final / "COMPLETE").exists():
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run.model.save_pretrained(str(tmp), safe_serialization=True)
    atomic_write(tmp / "COMPLETE", "ok\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final
