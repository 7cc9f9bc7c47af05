"""A stand-in inference engine for W6's judge overlap in the GPU's regime, where decoding a step is quick
beside the sandbox and the judge (on this CPU the 135M model's decode is most of a step, so nothing else is
left to hide).

An OpenAI-compatible ``/v1/completions`` endpoint (token ids in and out, as ``explore.backend=openai`` asks):
every request takes ``decode_s`` (concurrent requests overlap, as an engine batches them), and its candidates
are the offline suite's reference steps, or variants of them, picked by each candidate's seed, so the reply
is a function of the request and two runs with the same seeds get the same data:
  seed % 3 == 0: the reference step with the warm start's thought (it runs);
  seed % 3 == 1: the same code with another thought (it runs, and differs: the judge is asked);
  seed % 3 == 2: a step that raises (a rejected candidate).
The task is the one whose question the prompt holds; the step is how many ``<end_action>`` follow it.
"""
from __future__ import annotations

import time
from pathlib import Path

from fake_openai import FakeOpenAI

from sport_fast.agent.actions import END_ACTION, render_step
from sport_fast.warmstart.demonstrations import thought_for


class ScriptedEngine:
    def __init__(self, suite_file: Path, decode_s: float):
        from sport_fast.model.loader import load_tokenizer
        self.suite_file, self.decode_s = Path(suite_file), decode_s
        self.tokenizer = load_tokenizer("smollm2")
        self._tasks = None  # read on the first request: the run writes its suite after the engine starts
        self.server = FakeOpenAI(self._respond)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()

    def _respond(self, path: str, body: dict, server):
        if not path.endswith("/completions"):
            return 404, {"error": {"message": f"no route {path}"}}
        time.sleep(self.decode_s)
        prompt = self.tokenizer.decode(body["prompt"])
        task = self._task(prompt)
        step = prompt[prompt.rindex(task.question) + len(task.question):].count(END_ACTION)
        choices = [self._choice(i, self._text(task, step, body["seed"] + i)) for i in range(body.get("n") or 1)]
        return 200, {"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                     "choices": choices}

    def _task(self, prompt: str):
        if self._tasks is None:
            from sport_fast.tasks.task import load_tasks
            self._tasks = load_tasks(self.suite_file)
        held = [t for t in self._tasks if t.question in prompt]
        if not held:
            raise ValueError("scripted engine: the prompt holds no task of the suite")
        return max(held, key=lambda t: prompt.rindex(t.question))

    def _text(self, task, step: int, seed: int) -> str:
        code = task.reference_steps[min(step, len(task.reference_steps) - 1)]
        variant = seed % 3
        if variant == 0:
            return render_step(thought_for(code, task.expected_tools), code)
        if variant == 1:
            return render_step("Let me work this out with the tools, one step at a time.", code)
        return render_step("I use what I computed before.", "print(value_from_before)")

    def _choice(self, index: int, text: str) -> dict:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return {"index": index, "text": text, "finish_reason": "stop", "token_ids": ids,
                "logprobs": {"token_logprobs": [0.0] * len(ids), "tokens": None, "text_offset": None,
                             "top_logprobs": None}}
