"""Tiny random models and step groups for fast tests, plus the slow reference: separate forwards."""
from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image

from sport_fast import StepGroup
from sport_fast.warmstart.demonstrations import Demonstration

VOCAB = 101
TINY_TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=1024)


def tiny_qwen2(seed: int = 0, tie: bool = False):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen2Config(**TINY_TEXT, num_key_value_heads=2, tie_word_embeddings=tie, attn_implementation="sdpa")
    return Qwen2ForCausalLM(cfg).eval()


def tiny_llama(seed: int = 0, tie: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(**TINY_TEXT, num_key_value_heads=4, tie_word_embeddings=tie, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


# Qwen2-VL special tokens inside the tiny vocabulary.
VISION_START, IMAGE_PAD, VISION_END = VOCAB - 3, VOCAB - 2, VOCAB - 1


def tiny_qwen2_vl(seed: int = 0):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(
        text_config=dict(**TINY_TEXT, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=IMAGE_PAD, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
        attn_implementation="sdpa")
    return Qwen2VLForConditionalGeneration(cfg).eval()


def tiny_image_processor():
    from transformers import Qwen2VLImageProcessorPil  # the torchvision-free backend
    return Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56)


def random_image(seed: int, size=(56, 56)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def random_ids(rng: random.Random, n: int, high: int = VOCAB - 3) -> list[int]:
    return [rng.randrange(high) for _ in range(n)]


def random_groups(seed: int, n_groups: int = 3, k: int = 4, ctx_len=(5, 30), cand_len=(1, 12)) -> list[StepGroup]:
    """Groups with shared candidate prefixes, duplicate candidates and a trajectory continuation."""
    rng = random.Random(seed)
    groups = []
    for _ in range(n_groups):
        ctx = random_ids(rng, rng.randint(*ctx_len))
        stem = random_ids(rng, 2)
        cands = [stem + random_ids(rng, rng.randint(*cand_len)) if rng.random() < 0.5
                 else random_ids(rng, rng.randint(*cand_len)) for _ in range(k)]
        cands[-1] = list(cands[0])  # two identical samples
        groups.append(StepGroup(context_ids=ctx, candidate_ids=cands, chosen=0, rejected=list(range(1, k))))
    prev = groups[0]  # next step of the first trajectory: context = context + chosen + observation
    groups.append(StepGroup(context_ids=prev.context_ids + prev.candidate_ids[0] + random_ids(rng, 4),
                            candidate_ids=[random_ids(rng, 3), random_ids(rng, 5)], chosen=1, rejected=[0]))
    return groups


@torch.no_grad()
def separate_forward_logps(model, group: StepGroup, image_token: int | None = None, **model_inputs) -> list[float]:
    """Reference: one ordinary forward per (context + candidate), float64 log-softmax of the logits."""
    out = []
    for cand in group.candidate_ids:
        ids = torch.tensor([group.context_ids + cand])
        if image_token is not None:
            model_inputs["mm_token_type_ids"] = (ids == image_token).int()
        logits = model(input_ids=ids, **model_inputs).logits[0].double()
        logp = logits.log_softmax(-1)
        c = len(group.context_ids)
        out.append(sum(logp[c - 1 + j, t].item() for j, t in enumerate(cand)))
    return out


def vl_tokenizer():
    """Word-level tokenizer whose special tokens sit at the tiny Qwen2-VL model's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<|im_start|>", "<|im_end|>", "[PAD]", "[UNK]", "<|video_pad|>",
                "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
    vocab = {f"w{i}": i for i in range(101 - len(specials))}
    vocab.update({s: 101 - len(specials) + i for i, s in enumerate(specials)})
    assert vocab["<|image_pad|>"] == IMAGE_PAD
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                  additional_special_tokens=specials)
    tok.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    return tok


def vision_tasks(folder: Path) -> list:
    """Two tasks, each with an image and a text file, in ``folder``."""
    from sport_fast.tasks.task import Task
    tasks = []
    for i in range(2):
        random_image(70 + i).save(folder / f"pic{i}.png")
        (folder / f"notes{i}.txt").write_text("w1 w2")
        tasks.append(Task(id=f"t{i}", question="w3 w4 w5", answer="w6",
                          files={"notes.txt": str(folder / f"notes{i}.txt"), "pic.png": str(folder / f"pic{i}.png")}))
    return tasks


def byte_tokenizer():
    """A byte-level tokenizer (every text round-trips exactly, no merges: one token per byte) with a ChatML
    template: scripted policies write real Python steps with it, no model file needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


# Whole agent steps as single tokens of a 101-token vocabulary: a random tiny model writes runnable steps
# (some print, one raises, one answers, one is malformed), so exploration on it runs the sandbox and the judge.
STEP_CODES = ["print(1)", "print(2)", "print(3)", "print(len('abc'))", "x = 1 / 0", "final_answer('w6')",
              "print(4 * 4)"]


def step_tokenizer():
    """Word-level tokenizer of exactly ``VOCAB`` ids: ChatML specials, one token per whole step in
    ``STEP_CODES`` (plus a malformed one), and filler words ``w0, w1, ...``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<|im_start|>", "<|im_end|>", "[PAD]", "[UNK]"]
    steps = [f"Thought: step.\n```py\n{code}\n```<end_action>" for code in STEP_CODES] + ["Thought: none.<end_action>"]
    words = [f"w{i}" for i in range(VOCAB - len(specials) - len(steps))]
    vocab = {t: i for i, t in enumerate(words + steps + specials)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    return tok


def step_tasks(n: int, prefix: str = "t", first: int = 60) -> list:
    """``n`` tasks of different question lengths (hence context lengths) whose answer is ``w6``; task i's
    question opens with the word ``w<first + i>``, so no two (of different ``first``) look alike."""
    from sport_fast.tasks.task import Task
    words = lambda i: [f"w{first + i}"] + [f"w{(i * 7 + j) % 50}" for j in range(2 + i % 4)]  # noqa: E731
    return [Task(id=f"{prefix}{i}", question=" ".join(words(i)), answer="w6") for i in range(n)]


def demonstrations(seed: int) -> list[Demonstration]:
    """Two random demonstrations of three steps each, with observations between them."""
    rng = random.Random(seed)
    out = []
    for t in range(2):
        steps = [random_ids(rng, rng.randint(2, 9)) for _ in range(3)]
        observations = [random_ids(rng, rng.randint(1, 5)) for _ in range(2)]
        out.append(Demonstration(f"t{t}", random_ids(rng, rng.randint(4, 12)), steps, observations))
    return out


@torch.no_grad()
def separate_nll(model, groups) -> float:
    """Mean NLL of every group's candidate tokens, each (context + step) run on its own, in float64."""
    total, tokens = 0.0, 0
    for g in groups:
        for cand in g.candidate_ids:
            logits = model(input_ids=torch.tensor([g.context_ids + cand])).logits[0].double()
            logp = logits.log_softmax(-1)
            c = len(g.context_ids)
            total -= sum(logp[c - 1 + j, t].item() for j, t in enumerate(cand))
            tokens += len(cand)
    return total / tokens
