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
  that the engine does not offer is therefore a warning for LoRA and an error for full weights. SGLang will
  not flush while other requests run (HTTP 400): it is asked again, backing off, for up to two minutes.
Every call has a timeout; a refusal (a non-200 reply, or a 200 whose JSON says ``"success": false``) or no
answer is an ``EngineError`` on one line naming the server, the call and what the reply said.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

ENGINES = ("vllm", "sglang", "sport_fast")


class EngineError(RuntimeError):
    """A server refused or failed an admin call; the message names server, call and reply."""


class EngineBusy(EngineError):
    """A cache reset refused with HTTP 400: SGLang will not flush while requests run or wait."""


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
        self.unload_adapter(name)
        self._post(self.engine.load_adapter, {"lora_name": name, "lora_path": str(path)})

    def unload_adapter(self, name: str) -> bool:
        """Unload the adapter ``name``; False if the server had none of that name (or refused)."""
        return self._post(self.engine.unload_adapter, {"lora_name": name}, allow_failure=True)

    def update_weights(self, path: str) -> None:
        if self.engine.update_weights is None:
            raise EngineError(f"{self.name} at {self.root} cannot load full weights at run time")
        self._post(self.engine.update_weights, {"model_path": str(path)})

    def reset_prefix_cache(self, wait_s: float = 120.0) -> bool:
        """True if the server reset its prefix cache; False if it does not offer the call (404/405). A server
        busy with other requests (SGLang refuses with HTTP 400 then) is asked again, backing off, for up to
        ``wait_s``; then the refusal is an ``EngineError`` that says how long it waited."""
        deadline, pause = time.monotonic() + wait_s, 0.25
        while True:
            try:
                return self._post(self.engine.reset_cache, {}, missing_ok=True)
            except EngineBusy as err:
                if time.monotonic() + pause > deadline:
                    raise EngineError(f"{err} (still refused after {wait_s:g} s of asking again)") from None
                time.sleep(pause)
                pause = min(2 * pause, 5.0)

    def _post(self, route: str, body: dict, allow_failure: bool = False, missing_ok: bool = False) -> bool:
        """True if the server took the call. A refusal (non-200, or a 200 whose JSON says ``"success": false``)
        or no answer is an ``EngineError`` on one line, unless ``allow_failure`` (then False); with
        ``missing_ok`` a route the server lacks (404/405) is False."""
        call = f"{self.name} at {self.root}: POST /{route} {json.dumps(body)}"
        request = urllib.request.Request(f"{self.root}/{route}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                refused = refusal_in(reply.read())
        except urllib.error.HTTPError as err:
            if allow_failure or (missing_ok and err.code in (404, 405)):
                return False
            busy = err.code == 400 and route == self.engine.reset_cache
            raise (EngineBusy if busy else EngineError)(f"{call} -> HTTP {err.code}: {reply_message(err.read())}") \
                from None
        except (urllib.error.URLError, OSError) as err:  # refused, unreachable, timed out (TimeoutError)
            if allow_failure:
                return False
            reason = one_line(str(getattr(err, "reason", err)))
            raise EngineError(f"{call} failed: {reason} (timeout {self.timeout_s:g} s)") from None
        if refused is not None and not allow_failure:
            raise EngineError(f"{call} -> HTTP 200 but refused: {refused}")
        return refused is None


def reply_message(raw: bytes) -> str:
    """What an engine's reply says, on one line: the JSON error's message (vLLM: ``error.message`` or
    ``message``; SGLang: ``message`` or ``error_message``; FastAPI: ``detail``), else the body's text."""
    text = raw.decode(errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        said = (error.get("message") if isinstance(error, dict) else error) or data.get("message") \
            or data.get("error_message") or data.get("detail")
        if said:
            text = said if isinstance(said, str) else json.dumps(said)
    return one_line(text) or "(empty reply)"


def refusal_in(raw: bytes) -> str | None:
    """The message of a 200 reply that still says no (a JSON body with ``"success": false``), else None: vLLM
    answers a plain-text line or nothing, SGLang ``{"success": true, ...}``."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return reply_message(raw) if isinstance(data, dict) and data.get("success") is False else None


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace (newlines included) collapsed to single spaces, cut at ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
