"""Model-backed tools, run in the parent (they need the network): visual question answering, web search and
image generation and editing, each either over an OpenAI-compatible endpoint or through a function the user
supplies. (Local Hugging Face models: ``hf_models.py``; a detector over HTTP: ``http_detector.py``.)

They are registered only when configured; nothing here answers without a real model or function behind it.
File arguments are resolved inside the run's working directory and may not leave it; files a tool makes
are written there (``write_output``), owned like the directory, so the step's code can open them.
"""
from __future__ import annotations

import base64
import mimetypes
import os
import uuid
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


class OpenAIImageGenerator:
    """``generate_image(prompt)`` by an OpenAI-compatible images endpoint; the PNG is saved in the workdir."""

    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", size: str = "1024x1024",
                 timeout_s: float = 120.0, max_retries: int = 2):
        from openai import OpenAI
        self.model, self.size = model, size
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def __call__(self, prompt: str, workdir: str) -> str:
        reply = self.client.images.generate(model=self.model, prompt=prompt, size=self.size, n=1,
                                            response_format="b64_json")
        return write_output(workdir, "generated", _image_bytes(reply))


class OpenAIImageEditor:
    """``edit_image(image, prompt)`` by an OpenAI-compatible images/edits endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", timeout_s: float = 120.0,
                 max_retries: int = 2):
        from openai import OpenAI
        self.model = model
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def __call__(self, image: str, prompt: str, workdir: str) -> str:
        path = resolve_inside(workdir, image)
        with open(path, "rb") as f:
            reply = self.client.images.edit(model=self.model, image=(path.name, f.read()), prompt=prompt, n=1,
                                            response_format="b64_json")
        return write_output(workdir, f"{path.stem}_edited", _image_bytes(reply))


def _image_bytes(reply) -> bytes:
    if not reply.data or not reply.data[0].b64_json:
        raise RuntimeError("the images endpoint returned no image data")
    return base64.b64decode(reply.data[0].b64_json)


def write_output(workdir: str, stem: str, data: bytes, suffix: str = ".png") -> str:
    """Write a tool's output file into the working directory under a fresh name; return that name.
    The file gets the directory's owner (the run's own uid when the sandbox has one)."""
    root = Path(workdir).resolve()
    path = root / f"{stem}_{uuid.uuid4().hex[:6]}{suffix}"
    path.write_bytes(data)
    owner = root.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(path, owner.st_uid, owner.st_gid)
    return path.name


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
