"""Tools the agent's code calls. ``registry.py`` describes them; one file per family implements them.

Offline tools (image inspection, OCR, calculator, file reader) run inside the sandbox next to the code;
model-backed tools (visual question answering, web search) run in the parent, which has the network, and
exist only when configured.
"""
from sport_fast.tools.registry import Tool, ToolRegistry, default_registry

__all__ = ["Tool", "ToolRegistry", "default_registry"]
