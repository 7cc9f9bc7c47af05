"""Token ids of the agent's turns, derived from the tokenizer's own chat template.

A step ends at ``<end_action>`` inside an open assistant turn, so the next context is: the step's tokens
verbatim + the template's text that closes the assistant turn and opens a user turn + ``Observation: ...``
+ the text that closes it and opens the next assistant turn. Those two pieces of glue are read off the
template by rendering it around sentinel strings, so any chat model's own format is used.
"""
from __future__ import annotations

_A, _U = "\x00ASSISTANT_SENTINEL\x00", "\x00USER_SENTINEL\x00"


def template_ids(tokenizer, messages: list[dict], generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` under the tokenizer's chat template, with the assistant turn opened (unless
    ``generation_prompt`` is False); transformers returns a list or an encoding, depending on version."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return [int(t) for t in (ids["input_ids"] if hasattr(ids, "keys") else ids)]


class ChatFormat:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": _A}, {"role": "user", "content": _U}],
            tokenize=False, add_generation_prompt=True)
        if _A not in rendered or _U not in rendered:
            raise ValueError("ChatFormat: the tokenizer's chat template drops message contents")
        self.close_assistant_open_user = rendered.split(_A, 1)[1].split(_U, 1)[0]
        self.close_user_open_assistant = rendered.split(_U, 1)[1]
        eos = getattr(tokenizer, "eos_token_id", None)
        self.turn_end_ids = () if eos is None else (int(eos),)  # a step that emits these has ended its turn

    def prompt_ids(self, system: str, user: str) -> list[int]:
        return template_ids(self.tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": user}])

    def observation_ids(self, step_text: str, observation: str) -> list[int]:
        """Tokens that follow a step's own tokens: end of the assistant turn (unless the step already
        ended it), the observation as a user turn, and the opening of the next assistant turn."""
        close = self.close_assistant_open_user
        turn_end = close.split("\n", 1)[0] if "\n" in close else ""
        if turn_end and step_text.rstrip().endswith(turn_end.strip()):
            close = close[len(turn_end):]
        text = close + f"Observation:\n{observation}" + self.close_user_open_assistant
        return self.tokenizer.encode(text, add_special_tokens=False)
