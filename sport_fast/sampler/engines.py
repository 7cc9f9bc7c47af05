"""Inference engines as exploration backends: how each names a hot-loaded adapter, and the admin calls that
give it a round's weights (the client side; ``served_weights.py`` is our own server's side).

After each round's training the policy's new weights go to every server, the way the engine takes them:
- LoRA: the adapter saved with peft's ``save_pretrained`` into a versioned folder, then loaded under a
  versioned name (vLLM: ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}``, with
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; SGLang: ``POST /load_lora_adapter``); requests then name it
  (vLLM: ``model=<name>``; SGLang: ``model=<base>:<name>``);
- full weights: a Hugging Face folder, loaded in place with ``POST /update_weights_from_disk {"model_path"}``
  (SGLang and ours; vLLM has no such endpoint, so ``config`` refuses full fine-tuning with it);
- then the engine's prefix cache is reset (vLLM: ``POST /reset_prefix_cache``, which it serves with
  ``VLLM_SERVER_DEV_MODE=1``; SGLang: ``/flush_cache``), so no KV computed with the old weights is reused.
  vLLM and SGLang key cached blocks by adapter too, so a new adapter name alone never reads old KV; a reset
  that the engine does not offer is therefore a warning for LoRA and an error for full weights.
Every call has a timeout; a refusal is an ``EngineError`` naming the server, the call and its reply.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

ENGINES = ("vllm", "sglang", "sport_fast")


class EngineError(RuntimeError):
    """A server refused or failed an admin call; the message names server, call and reply."""


@dataclass(frozen=True)
class Engine:
    load_adapter: str            # paths under the server's root (the base URL without /v1)
    unload_adapter: str
    update_weights: str | None   # None: the engine cannot load full weights at run time
    reset_cache: str
    adapter_model: str           # how a request names an adapter: {base}, {adapter}

    def model_for(self, base: str, adapter: str | None) -> str:
        """The ``model`` field of a request for ``adapter`` (None: the base weights)."""
        return base if adapter is None else self.adapter_model.format(base=base, adapter=adapter)


PROFILES = {
    "vllm": Engine("v1/load_lora_adapter", "v1/unload_lora_adapter", None, "reset_prefix_cache", "{adapter}"),
    "sglang": Engine("load_lora_adapter", "unload_lora_adapter", "update_weights_from_disk", "flush_cache",
                     "{base}:{adapter}"),
    "sport_fast": Engine("v1/load_lora_adapter", "v1/unload_lora_adapter", "update_weights_from_disk",
                         "reset_prefix_cache", "{adapter}"),
}


def server_root(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port``: where the admin routes live."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class EngineAdmin:
    """The admin calls of one server (``base_url``: its OpenAI-compatible ``.../v1``)."""

    def __init__(self, base_url: str, engine: str, timeout_s: float = 600.0):
        if engine not in PROFILES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.root, self.name, self.engine, self.timeout_s = server_root(base_url), engine, PROFILES[engine], timeout_s

    def load_adapter(self, name: str, path: str) -> None:
        """Load the adapter folder ``path`` under ``name``, replacing one of that name if loaded."""
        self._post(self.engine.unload_adapter, {"lora_name": name}, allow_failure=True)
        self._post(self.engine.load_adapter, {"lora_name": name, "lora_path": str(path)})

    def update_weights(self, path: str) -> None:
        if self.engine.update_weights is None:
            raise EngineError(f"{self.name} at {self.root} cannot load full weights at run time")
        self._post(self.engine.update_weights, {"model_path": str(path)})

    def reset_prefix_cache(self) -> bool:
        """True if the server reset its prefix cache; False if it does not offer the call (404/405)."""
        return self._post(self.engine.reset_cache, {}, missing_ok=True)

    def _post(self, route: str, body: dict, allow_failure: bool = False, missing_ok: bool = False) -> bool:
        url = f"{self.root}/{route}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                reply.read()
            return True
        except urllib.error.HTTPError as err:
            if allow_failure or (missing_ok and err.code in (404, 405)):
                return False
            text = err.read().decode(errors="replace")[:300]
            raise EngineError(f"{self.name} at {self.root}: POST /{route} {body} -> HTTP {err.code}: {text}") from None
        except (urllib.error.URLError, OSError) as err:
            if allow_failure:
                return False
            raise EngineError(f"{self.name} at {self.root}: POST /{route} failed: {err}") from None
