"""Tools the agent's code calls. ``registry.py`` holds and renders them (``describe.py``: from each tool's
signature and docstring); one file per family implements them; ``tool_sets.py`` names the sets.

Offline tools (image inspection and markup, OCR, calculator, solver, charts, file reader) run inside the
sandbox next to the code; model-backed tools (visual question answering, captioning, detection,
segmentation, web search, image generation) run in the parent, which has the network and the models, and
exist only when configured (``backends.py``).
"""
from sport_fast.tools.registry import Tool, ToolRegistry, default_registry
from sport_fast.tools.tool_sets import tool_set

__all__ = ["Tool", "ToolRegistry", "default_registry", "tool_set"]
