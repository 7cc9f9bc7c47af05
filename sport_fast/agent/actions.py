"""Parsing a sampled step: ``Thought: ...`` then one fenced Python block ending with ``<end_action>``.

Tolerated near-misses (each noted in ``ParsedStep.repairs``): ``Thoughts:``/``thought:``; a fence tagged
``python``/``py``/``py3`` or untagged; ``Code:`` before the fence; a missing closing fence before
``<end_action>``; ``<end_action>`` inside the fence, missing, or followed by more text (ignored).
Refused, with the reason (a malformed step is a valid rejected candidate, not a crash): no code, more than
one code block, empty code, code that does not compile.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

END_ACTION = "<end_action>"
_THOUGHT = re.compile(r"^\s*thoughts?\s*:\s*", re.IGNORECASE)
_FENCE_OPEN = re.compile(r"```[ \t]*(?:python3?|py3?)?[ \t]*\n", re.IGNORECASE)


class MalformedStep(ValueError):
    """A step that cannot be executed; ``str(err)`` says precisely why."""


@dataclass
class ParsedStep:
    thought: str
    code: str
    repairs: list[str] = field(default_factory=list)


def parse_step(text: str) -> ParsedStep:
    repairs: list[str] = []
    body, _, _ = text.partition(END_ACTION)
    if END_ACTION not in text:
        repairs.append(f"no {END_ACTION}")
    opens = list(_FENCE_OPEN.finditer(body))
    if not opens:
        raise MalformedStep(f"no fenced Python code block (expected ```py ... ``` before {END_ACTION})")
    if len(opens) > 1 and _closed_blocks(body) > 1:
        raise MalformedStep(f"{_closed_blocks(body)} code blocks; a step must have exactly one")
    head, code = body[:opens[0].start()], body[opens[0].end():]
    close = code.find("```")
    if close < 0:
        repairs.append("missing closing ```")
    else:
        code = code[:close]
    code = code.strip("\n").rstrip()
    if not code.strip():
        raise MalformedStep("the code block is empty")
    _check_compiles(code)
    return ParsedStep(thought=_thought(head, repairs), code=code, repairs=repairs)


def render_step(thought: str, code: str) -> str:
    """The canonical text of a step (what ``parse_step`` reads back exactly, with no repair)."""
    return f"Thought: {thought}\n```py\n{code}\n```{END_ACTION}"


def _closed_blocks(body: str) -> int:
    return body.count("```") // 2


def _thought(head: str, repairs: list[str]) -> str:
    head = re.sub(r"\n\s*code\s*:\s*$", "", head.rstrip(), flags=re.IGNORECASE)
    match = _THOUGHT.match(head)
    if match is None:
        repairs.append("no 'Thought:'")
        return head.strip()
    if match.group(0).strip() != "Thought:":
        repairs.append(f"'{match.group(0).strip()}' for 'Thought:'")
    return head[match.end():].strip()


def _check_compiles(code: str) -> None:
    try:
        with warnings.catch_warnings():  # the model's SyntaxWarnings are not the host's business
            warnings.simplefilter("ignore")
            compile(code, "<step>", "exec")
    except SyntaxError as err:
        raise MalformedStep(f"the code does not compile: SyntaxError: {err.msg} (line {err.lineno})") from None
