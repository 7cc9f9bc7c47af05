"""Demonstrations for the warm start, as step groups of one candidate each (chosen, nothing rejected).

Two sources:
- ``reference_demonstrations``: the offline suite's reference programs rendered as agent steps (a thought,
  the code, ``<end_action>``), each run in the sandbox on the state of the steps before it for its real
  observation, in the model's own chat template exactly as the agent builds its contexts
  (``agent.prompt``, ``ChatFormat``). Only programs that reach the task's answer are kept (verified).
- ``conversation_demonstrations``: trajectory files in the multi-turn sharegpt form MAT/T3-Agent-style data
  comes in (``{"conversations": [{"from": "human"|"gpt"|"observation"|"system", "value": ...}], "images":
  [...]}``): each assistant turn is a step, its context everything before it under the chat template.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sport_fast.agent.actions import render_step
from sport_fast.agent.prompt import system_prompt, user_turn
from sport_fast.data.step_group import StepGroup
from sport_fast.tasks.answer_rules import task_answer_correct


@dataclass
class Demonstration:
    task_id: str
    context_ids: list[int]                 # the prompt: system, the task's user turn, the assistant opened
    steps: list[list[int]] = field(default_factory=list)          # each step's tokens
    observations: list[list[int]] = field(default_factory=list)   # the turn after each step but the last

    def groups(self, meta: dict | None = None) -> list[StepGroup]:
        """One group per step: the context so far, the step as the only (chosen) candidate."""
        out, context = [], list(self.context_ids)
        for n, step in enumerate(self.steps):
            out.append(StepGroup(context_ids=context, candidate_ids=[step], chosen=0, rejected=[],
                                 meta={**(meta or {}), "task_id": self.task_id, "step": n, "source": "demonstration"}))
            if n < len(self.observations):
                context = context + step + self.observations[n]
        return out


def thought_for(code: str, tool_names: list[str]) -> str:
    """A short thought for a reference step: which tools it calls, or that it answers."""
    if "final_answer(" in code:
        return "I have what I need, so I give the final answer."
    used = [t for t in tool_names if f"{t}(" in code]
    return f"I call {', '.join(used)} and print what I need." if used else "I work it out from what I have."


def reference_demonstrations(tasks, chat, tools, sandbox, tool_style: str = "compact", workers: int = 4) \
        -> tuple[list[Demonstration], list[str]]:
    """(demonstrations of the tasks whose reference program reaches their answer, ids of those that did not),
    in task order; ``tool_style``: the prompt's tool list, as the agent that will act renders it; ``workers``
    tasks' programs run at a time (their steps one after another)."""
    from concurrent.futures import ThreadPoolExecutor
    system, kept, failed = system_prompt(tools, tool_style), [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        demos = list(pool.map(lambda task: _reference_demonstration(task, chat, tools, sandbox, system), tasks))
    for task, demo in zip(tasks, demos):
        (kept.append(demo) if demo is not None else failed.append(task.id))
    return kept, failed


def _reference_demonstration(task, chat, tools, sandbox, system) -> Demonstration | None:
    demo = Demonstration(task.id, chat.prompt_ids(system, user_turn(task)))
    for n, code in enumerate(task.reference_steps):
        result = sandbox.run(code, files=task.files, prelude=task.reference_steps[:n])
        if not result.ok or result.prelude_errors:
            return None
        text = render_step(thought_for(code, tools.names), code)
        demo.steps.append(chat.tokenizer.encode(text, add_special_tokens=False))
        if result.has_final_answer:
            return demo if task_answer_correct(task, result.final_answer) else None
        demo.observations.append(chat.observation_ids(text, result.observation()))
    return None  # the program never answered


def conversation_demonstrations(path, tokenizer) -> list[list[StepGroup]]:
    """Per trajectory of a multi-turn sharegpt file, its step groups (text only: a record with images is
    refused by name, as the importer of preference pairs does without an image placeholder)."""
    from sport_fast.data.sharegpt import conversation_messages, read_records, reply_tokens, template_context
    out = []
    for n, record in enumerate(read_records(path)):
        where = f"{path}: record {n}"
        messages = conversation_messages(record, where)
        groups = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            context = template_context(tokenizer, messages[:i], where)
            step = reply_tokens(tokenizer, messages[:i], context, message["content"], where)
            groups.append(StepGroup(context_ids=context, candidate_ids=[step], chosen=0, rejected=[],
                                    meta={"source": str(path), "record": n, "step": len(groups)}))
        if not groups:
            raise ValueError(f"{where}: no assistant turn to learn from")
        out.append(groups)
    return out
