"""The tool registry: each tool's name, callable and what the agent is told about it, rendered into the
system prompt.

A tool either runs in the sandbox (``runs_in="sandbox"``: a module-level function the child imports by
module and name, so no code object crosses the boundary) or in the parent (``runs_in="host"``: any
callable, reached from the child over the JSON pipe; it gets the run's working directory to resolve
file arguments). Every result must be JSON-serialisable; the child checks.

What the agent reads comes from one place, ``describe.py``: the signature and docstring of the tool's
``spec``, which is the function itself for a sandbox tool and, for a host tool, the interface it fills
(``interfaces.py``), whatever backend answers it. ``tool_sets.py`` builds the named sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from sport_fast.tools.describe import ToolDoc, render_compact, render_sport, tool_doc

STYLES = ("compact", "sport")


def final_answer(answer):
    """end the task with this answer

    Args:
        answer: the final answer to the problem
    """


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable
    description: str | None = None   # replaces the docstring's summary (for ad-hoc tools)
    runs_in: str = "sandbox"
    spec: Callable | None = None     # what the agent is told (signature, docstring); default: ``fn``

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"tool name {self.name!r} is not a Python identifier")
        if self.runs_in not in ("sandbox", "host"):
            raise ValueError(f"tool {self.name}: runs_in must be 'sandbox' or 'host', got {self.runs_in!r}")
        if self.runs_in == "sandbox" and (self.fn.__qualname__ != self.fn.__name__ or "<" in self.fn.__qualname__):
            raise ValueError(f"tool {self.name}: a sandbox tool must be a module-level function")
        if self.runs_in == "sandbox" and self.spec is not None and self.spec is not self.fn:
            raise ValueError(f"tool {self.name}: a sandbox tool is described by its own function")
        self.doc  # noqa: B018 - parse the docstring now, so a bad one fails where the tool is defined

    @cached_property
    def doc(self) -> ToolDoc:
        return tool_doc(self.spec or self.fn, self.description)

    @property
    def signature(self) -> str:
        return self.doc.signature

    def render(self, style: str = "compact") -> str:
        if style not in STYLES:
            raise ValueError(f"tool list style must be one of {', '.join(STYLES)}, got {style!r}")
        return render_sport(self.name, self.doc) if style == "sport" else render_compact(self.name, self.doc)


class ToolRegistry:
    """Tools by name. ``benchmark_names``: a benchmark's tool name (GTA's ``OCR``, SPORT's ``visualizer``) ->
    the tool of this registry that fulfils it, or None where this configuration lacks one (see ``tool_sets``)."""

    def __init__(self, tools: list[Tool] | tuple[Tool, ...] = (), name: str = "custom",
                 benchmark_names: dict[str, str | None] | None = None):
        self.name = name
        self.benchmark_names = dict(benchmark_names or {})
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

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    @property
    def unavailable(self) -> list[str]:
        """The benchmark tool names this configuration cannot serve (a task needing one is reported so)."""
        return [name for name, ours in self.benchmark_names.items() if ours is None]

    def render(self, style: str = "compact") -> str:
        """The tool list for the system prompt, ``final_answer`` last: one line per tool (``compact``, for
        small models), or SPORT's name / description / inputs / output type blocks (``sport``)."""
        lines = [t.render(style) for t in self._tools.values()]
        return "\n".join(lines + [Tool("final_answer", final_answer).render(style)])

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
