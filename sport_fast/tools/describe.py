"""What the agent is told about a tool, from one source: the function's signature and docstring.

A tool's docstring is laid out Google-style:

    first paragraph: what the tool does and returns (both renderings show it)

    Args:
        name: what the argument means (SPORT's rendering shows these)

Any other paragraph is for developers and never reaches the prompt. Two renderings:

- ``compact`` (one line per tool, for the 135M default model's ~2k-token budget):
  ``- crop(path: str, box: list | str, out: str | None = None) -> str: crop box=(x1, y1, x2, y2) out of ...``
- ``sport``, the tool list of SPORT's system prompt (transformers agents' template)::

    - crop: Crop box=(x1, y1, x2, y2) out of ...
        Takes inputs: {'path': {'description': 'the image file', 'type': 'string'}, ...}
        Returns an output of type: string

Types are SPORT's names (str: string, int: integer, float: number, bool: boolean, else any); an optional
argument's description starts "[Optional, default X]: " ("[Optional]: " when the default is None).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

# SPORT's type vocabulary (transformers agents); everything else is "any"
_TYPE_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_HIDDEN_PARAMS = ("workdir",)   # host tools receive the run's working directory; the agent never passes it


@dataclass(frozen=True)
class ToolDoc:
    summary: str
    signature: str                # "(path: str, box: list | str) -> str", without the hidden parameters
    inputs: dict[str, dict]       # name -> {"description", "type"}, in signature order
    output_type: str


def tool_doc(fn: Callable, summary: str | None = None) -> ToolDoc:
    """Read ``fn``'s signature and docstring; ``summary`` replaces the docstring's first paragraph."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name not in _HIDDEN_PARAMS]
    first, args = _parse_docstring(inspect.getdoc(_documented(fn)) or "")
    unknown = sorted(set(args) - {p.name for p in params} - set(_HIDDEN_PARAMS))
    if unknown:
        raise ValueError(f"{getattr(fn, '__name__', fn)!r}: the docstring documents no such argument {unknown}")
    inputs = {p.name: {"description": _input_description(p, args.get(p.name, "")), "type": _type_name(p.annotation)}
              for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return ToolDoc(summary=summary if summary is not None else first, signature=_signature(params, sig),
                   inputs=inputs, output_type=_type_name(sig.return_annotation))


def render_compact(name: str, doc: ToolDoc) -> str:
    return f"- {name}{doc.signature}: {doc.summary}" if doc.summary else f"- {name}{doc.signature}"


def render_sport(name: str, doc: ToolDoc) -> str:
    return (f"- {name}: {_sentence(doc.summary)}\n    Takes inputs: {doc.inputs}\n"
            f"    Returns an output of type: {doc.output_type}")


def _documented(fn: Callable):
    """Where the docstring lives: the function, the wrapped function, or a callable object's ``__call__``."""
    fn = inspect.unwrap(fn)
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return fn
    return type(fn).__call__ if type(fn).__call__.__doc__ else fn


def _parse_docstring(text: str) -> tuple[str, dict[str, str]]:
    """(first paragraph joined into one line, {argument: description}) of a Google-style docstring."""
    paragraphs = text.split("\n\n")
    summary = " ".join(line.strip() for line in paragraphs[0].splitlines()).strip()
    args: dict[str, str] = {}
    current, in_args = None, False
    for line in text.splitlines():
        if line.strip() == "Args:":
            in_args = True
        elif in_args and line.startswith("    ") and not line.startswith("     ") and ":" in line:
            current, _, desc = line.strip().partition(":")
            args[current] = desc.strip()
        elif in_args and line.startswith("     ") and current:
            args[current] += " " + line.strip()
        elif in_args and line.strip():
            in_args, current = False, None   # a dedented line ends the section
    return summary, args


def _signature(params: list[inspect.Parameter], sig: inspect.Signature) -> str:
    """Like ``str(signature)`` but with annotations unquoted (they are strings under postponed evaluation)."""
    parts = []
    for p in params:
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}" if p.annotation is not p.empty else f"={p.default!r}"
        parts.append(text)
    ret = "" if sig.return_annotation is sig.empty else f" -> {_annotation(sig.return_annotation)}"
    return f"({', '.join(parts)}){ret}"


def _annotation(annotation) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _type_name(annotation) -> str:
    """SPORT's name for an annotation: ``str | None`` is "string"; a union of two real types is "any"."""
    if annotation is inspect.Parameter.empty:
        return "any"
    kinds = [a.strip() for a in _annotation(annotation).split("|") if a.strip() != "None"]
    return _TYPE_NAMES.get(kinds[0].split("[")[0], "any") if len(kinds) == 1 else "any"


def _input_description(p: inspect.Parameter, text: str) -> str:
    if p.default is p.empty:
        return text
    flag = "[Optional]" if p.default is None else f"[Optional, default {p.default!r}]"
    return f"{flag}: {text}" if text else flag


def _sentence(text: str) -> str:
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
