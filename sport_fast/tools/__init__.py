"""Tools the agent's code calls. ``registry.py`` holds and renders them (``describe.py``: from each tool's
signature and docstring); one file per family implements them; ``tool_sets.py`` names the sets.

Offline tools (image inspection and markup, OCR, calculator, solver, charts, file reader) run inside the
sandbox next to the code; model-backed tools (visual question answering, captioning, detection,
segmentation, web search, image generation) run in the parent, which has the network and the models, and
exist only when configured (``backends.py``). The names below are imported on first use, so the sandbox's
child, which imports one tool module, pays for nothing else.
"""
from importlib import import_module

_EXPORTS = {"Tool": "sport_fast.tools.registry", "ToolRegistry": "sport_fast.tools.registry",
            "default_registry": "sport_fast.tools.tool_sets", "tool_set": "sport_fast.tools.tool_sets"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sport_fast.tools' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
