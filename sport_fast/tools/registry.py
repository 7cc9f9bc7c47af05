"""The tool registry: name, typed signature and description of each tool, rendered into the system prompt.

A tool either runs in the sandbox (``runs_in="sandbox"``: a module-level function the child imports by
module and name, so no code object crosses the boundary) or in the parent (``runs_in="host"``: any
callable, reached from the child over the JSON pipe; it gets the run's working directory to resolve
file arguments). Every result must be JSON-serialisable; the child checks.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable
    description: str
    runs_in: str = "sandbox"

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"tool name {self.name!r} is not a Python identifier")
        if self.runs_in not in ("sandbox", "host"):
            raise ValueError(f"tool {self.name}: runs_in must be 'sandbox' or 'host', got {self.runs_in!r}")
        if self.runs_in == "sandbox" and (self.fn.__qualname__ != self.fn.__name__ or "<" in self.fn.__qualname__):
            raise ValueError(f"tool {self.name}: a sandbox tool must be a module-level function")

    @property
    def signature(self) -> str:
        sig = inspect.signature(self.fn)
        params = [p for p in sig.parameters.values() if p.name != "workdir"]
        return str(sig.replace(parameters=params)).replace("'", "")

    def render(self) -> str:
        return f"- {self.name}{self.signature}: {self.description}"


class ToolRegistry:
    def __init__(self, tools: list[Tool] | tuple[Tool, ...] = ()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools or tool.name == "final_answer":
            raise ValueError(f"tool {tool.name!r} is already defined")
        self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def render(self) -> str:
        """The tool list for the system prompt, ``final_answer`` last."""
        lines = [t.render() for t in self._tools.values()]
        return "\n".join(lines + ["- final_answer(answer): end the task with this answer"])

    def sandbox_specs(self) -> list[dict]:
        return [{"name": t.name, "module": t.fn.__module__, "attr": t.fn.__name__}
                for t in self._tools.values() if t.runs_in == "sandbox"]

    def host_names(self) -> list[str]:
        return [t.name for t in self._tools.values() if t.runs_in == "host"]

    def call_host(self, name: str, args: list, kwargs: dict, workdir: str):
        tool = self._tools.get(name)
        if tool is None or tool.runs_in != "host":
            raise KeyError(f"no host tool {name!r}")
        return tool.fn(*args, workdir=workdir, **kwargs)


def default_registry(vqa: Callable | None = None, web_search: Callable | None = None) -> ToolRegistry:
    """The offline tools, plus the model-backed ones that are configured (absent, not faked, otherwise).
    ``vqa``/``web_search``: host callables, e.g. from ``tools.model_backed``."""
    from sport_fast.tools import calculator, files, image, ocr
    tools = [
        Tool("image_size", image.image_size, "width, height and colour mode of an image file"),
        Tool("crop", image.crop, "crop box=(left, top, right, bottom) out of an image, save it, return the new path"),
        Tool("color_stats", image.color_stats, "mean colour and the main named colours of an image (or of a box)"),
        Tool("count_objects", image.count_objects,
             "connected regions of one named colour (or of any non-background colour): count, and per region "
             "its colour, bounding box, area in pixels and centroid"),
        Tool("ocr", ocr.ocr, "text printed in an image (or in a box of it), read by Tesseract"),
        Tool("calculator", calculator.calculator, "evaluate an arithmetic expression exactly (+ - * / // % ** "
             "parentheses, sqrt, round, min, max, abs)"),
        Tool("read_file", files.read_file, "contents of a file: text as a string, CSV as a list of row dicts, "
             "JSON parsed, PDF as its text"),
    ]
    if vqa is not None:
        tools.append(Tool("visual_qa", vqa, "answer a question about an image", runs_in="host"))
    if web_search is not None:
        tools.append(Tool("web_search", web_search, "search the web; a list of results with title and text",
                          runs_in="host"))
    return ToolRegistry(tools)
