"""Model-backed tools, run in the parent (they need the network): visual question answering and web search,
each either over an OpenAI-compatible endpoint or through a function the user supplies.

They are registered only when configured; nothing here answers without a real model or function behind it.
File arguments are resolved inside the run's working directory and may not leave it.
"""
from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Callable


class OpenAIVisionQA:
    """``visual_qa(image, question)`` answered by a vision-language model behind an OpenAI-compatible API."""

    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", timeout_s: float = 60.0,
                 max_retries: int = 2):
        from openai import OpenAI
        self.model = model
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def __call__(self, image: str, question: str, workdir: str) -> str:
        path = resolve_inside(workdir, image)
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
        reply = self.client.chat.completions.create(model=self.model, temperature=0, max_tokens=256, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}])
        return reply.choices[0].message.content or ""


class OpenAIWebSearch:
    """``web_search(query)`` answered by a model behind an OpenAI-compatible API that has search (the user's
    choice of endpoint); results come back as [{"title", "text"}]."""

    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", timeout_s: float = 60.0,
                 max_retries: int = 2):
        from openai import OpenAI
        self.model = model
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def __call__(self, query: str, workdir: str) -> list[dict]:
        reply = self.client.chat.completions.create(model=self.model, temperature=0, max_tokens=512, messages=[
            {"role": "user", "content": f"Search the web and report what you find for: {query}"}])
        return [{"title": query, "text": reply.choices[0].message.content or ""}]


def function_tool(fn: Callable, file_args: tuple[str, ...] = ()) -> Callable:
    """A host tool from a plain user function; the named arguments are paths resolved inside the workdir."""
    def tool(*args, workdir: str, **kwargs):
        for name in file_args:
            if name in kwargs:
                kwargs[name] = str(resolve_inside(workdir, kwargs[name]))
        if args and file_args:
            args = (str(resolve_inside(workdir, args[0])),) + tuple(args[1:])
        return fn(*args, **kwargs)
    tool.__name__ = getattr(fn, "__name__", "tool")
    tool.__wrapped__ = fn
    return tool


def resolve_inside(workdir: str, name: str) -> Path:
    root = Path(workdir).resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        raise FileNotFoundError(f"no file {name!r} in the task's working directory")
    return path
