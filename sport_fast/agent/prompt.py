"""What the policy is shown: the system prompt (how to act, the tools) and the task's user turn (the question,
its files, and for a vision-language policy its images). One source, for the agent and for the warm start's
demonstrations, so that both put the same tokens in front of the model."""
from __future__ import annotations

from sport_fast.agent.actions import END_ACTION

SYSTEM_PROMPT = """You are an agent that solves tasks by writing Python code that calls tools.
At each step write 'Thought:' with your reasoning, then one Python code block, then {end}, like this:
Thought: I need the size of the image first.
```py
print(image_size('photo.png'))
```{end}
What your code prints is shown to you as the next observation. Variables persist between steps.
When you know the answer, call final_answer(answer) in your code.
Tools, already defined as Python functions:
{tools}"""


def system_prompt(tools, style: str = "compact") -> str:
    """``style``: how the tool list is rendered (compact: one line per tool; sport: SPORT's format)."""
    return SYSTEM_PROMPT.format(end=END_ACTION, tools=tools.render(style))


def user_turn(task, vision=None, shown=()) -> str:
    """The first user turn: the images' block (``vision``: a ``VisionPrompt``, ``shown`` its images of the
    task), the question, and the names of the files in the working directory."""
    files = ", ".join(task.files) if task.files else "none"
    images = vision.block(list(shown)) if vision is not None and shown else ""
    return f"{images}{task.question}\nFiles in your working directory: {files}"
