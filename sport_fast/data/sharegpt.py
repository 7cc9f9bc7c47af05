"""Import SPORT's released preference data (LLaMA-Factory sharegpt pairwise format) as StepGroups.

A record (JSON list or JSON lines)::

    {"conversations": [{"from": "human", "value": "<image>Question..."}, {"from": "gpt", ...}, ...],
     "chosen": {"from": "gpt", "value": "Thought: ..."}, "rejected": {"from": "gpt", "value": "..."},
     "images": ["path/to/img.jpg"], "system": "optional system prompt"}

``role``/``content`` keys are accepted too. The context is the chat template applied to the system
prompt and conversation with a generation prompt; a candidate is the tokens the template appends for
the assistant reply (so it ends with the end-of-turn token, exactly what a model must emit). Consecutive
records with the same context and the same chosen reply become one group with several rejected
candidates; anything else starts a new group. Images are copied into the StepStore once by content hash.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sport_fast.data.step_group import StepGroup
from sport_fast.model.chat_format import template_ids
from sport_fast.data.store import StepStore
from sport_fast.run.durable import read_jsonl

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
          "observation": "user", "system": "system"}


@dataclass
class Qwen2VLImagePlaceholder:
    """Expands ``<image>`` as Qwen2-VL does: vision start, one pad per merged patch, vision end."""
    image_processor: object
    merge_size: int = 2
    text: str = "<|vision_start|>{pads}<|vision_end|>"
    pad: str = "<|image_pad|>"

    def expand(self, image) -> str:
        grid = self.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
        return self.text.format(pads=self.pad * (int(grid.prod()) // self.merge_size ** 2))


def read_records(path: str | Path) -> list[dict]:
    """A JSON list or JSON lines file of records."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path}: empty file")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [record for _, record in read_jsonl(path, repair=False, what="sharegpt record")]


def import_sharegpt_pairs(path: str | Path, tokenizer, store: StepStore | None = None, *,
                          image_root: str | Path | None = None,
                          placeholder: Qwen2VLImagePlaceholder | None = None) -> list[StepGroup]:
    """StepGroups from a sharegpt pairwise file; appended to ``store`` when given (deduplicated)."""
    groups: list[StepGroup] = []
    last_key = None
    for n, record in enumerate(read_records(path)):
        where = f"{path}: record {n}"
        messages, images = _messages(record, where, image_root, placeholder)
        context = _template(tokenizer, messages, where, generation_prompt=True)
        chosen = reply_tokens(tokenizer, messages, context, _text_of(record, "chosen", where), where)
        rejected = reply_tokens(tokenizer, messages, context, _text_of(record, "rejected", where), where)
        key = (tuple(context), tuple(chosen), tuple(_image_hashes(images)))
        if key == last_key and rejected not in groups[-1].candidate_ids:
            groups[-1] = _with_rejected(groups[-1], rejected)
        elif key != last_key:
            groups.append(StepGroup(context_ids=context, candidate_ids=[chosen, rejected], chosen=0, rejected=[1],
                                    images=_image_hashes(images), meta={"source": str(path), "record": n}))
        last_key = key
        if store is not None:
            for data, suffix in images:
                store.put_image(data, suffix)
    if store is not None:
        for group in groups:
            store.append(group)
    return groups


def _with_rejected(group: StepGroup, rejected: list[int]) -> StepGroup:
    group.candidate_ids.append(rejected)
    group.rejected.append(len(group.candidate_ids) - 1)
    group.validate()
    return group


def _messages(record, where, image_root, placeholder):
    if "conversations" not in record:
        raise ValueError(f"{where}: no 'conversations' field")
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    messages += [{"role": _role(turn, where), "content": _content(turn, where)} for turn in record["conversations"]]
    images = [_read_image(p, image_root, where) for p in record.get("images") or []]
    n_tags = sum(m["content"].count("<image>") for m in messages)
    if n_tags != len(images):
        raise ValueError(f"{where}: {n_tags} <image> tags for {len(images)} images")
    if images and placeholder is None:
        raise ValueError(f"{where}: has images; pass placeholder= for the model's image tokens")
    if images:
        _expand_images(messages, images, placeholder)
    return messages, images


def _expand_images(messages, images, placeholder) -> None:
    from io import BytesIO

    from PIL import Image
    queue = [Image.open(BytesIO(data)).convert("RGB") for data, _ in images]
    for m in messages:
        while "<image>" in m["content"]:
            m["content"] = m["content"].replace("<image>", placeholder.expand(queue.pop(0)), 1)


def _role(turn, where) -> str:
    raw = turn.get("from", turn.get("role"))
    if raw not in _ROLES:
        raise ValueError(f"{where}: unknown role {raw!r} (expected one of {sorted(_ROLES)})")
    return _ROLES[raw]


def _content(turn, where) -> str:
    value = turn.get("value", turn.get("content"))
    if not isinstance(value, str):
        raise ValueError(f"{where}: a turn has no text 'value'/'content'")
    return value


def _text_of(record, field, where) -> str:
    reply = record.get(field)
    if isinstance(reply, str):
        return reply
    if not isinstance(reply, dict):
        raise ValueError(f"{where}: no '{field}' reply")
    return _content(reply, where)


def template_context(tokenizer, messages, where) -> list[int]:
    """The tokens before an assistant turn: ``messages`` under the chat template, the assistant turn opened."""
    return _template(tokenizer, messages, where, generation_prompt=True)


def conversation_messages(record, where) -> list[dict]:
    """A multi-turn record's messages (system prompt first, if any); one with images is refused by name."""
    if record.get("images") or record.get("image"):
        raise ValueError(f"{where}: has images; trajectories with images are not supported for the warm start")
    messages, _ = _messages(record, where, None, None)
    return messages


def _template(tokenizer, messages, where, generation_prompt) -> list[int]:
    ids = template_ids(tokenizer, messages, generation_prompt)
    if not ids:
        raise ValueError(f"{where}: the chat template produced no tokens")
    return [int(t) for t in ids]


def reply_tokens(tokenizer, messages, context, reply, where) -> list[int]:
    full = _template(tokenizer, messages + [{"role": "assistant", "content": reply}], where, False)
    if full[:len(context)] != context:
        raise ValueError(f"{where}: the chat template does not extend the prompt with the reply; "
                         "cannot split context and candidate tokens")
    if len(full) == len(context):
        raise ValueError(f"{where}: empty reply")
    return full[len(context):]


def _read_image(path, image_root, where) -> tuple[bytes, str]:
    p = Path(image_root) / path if image_root is not None else Path(path)
    if not p.is_file():
        raise ValueError(f"{where}: image {p} not found")
    return p.read_bytes(), p.suffix or ".png"


def _image_hashes(images) -> list[str]:
    import hashlib
    return [hashlib.sha256(data).hexdigest() for data, _ in images]
