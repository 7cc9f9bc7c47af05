"""The embedded SmolLM2's converted folder: written once, whole, by the first load; later loads read it and
get exactly the model and tokenizer that the GGUF gives (parameters, logits, tokens, chat template)."""
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sport_fast.model import gguf_cache
from sport_fast.model.loader import load_smollm2, load_tokenizer, smollm2_gguf_path

MESSAGES = [{"role": "system", "content": "Tools: ocr(path)."},
            {"role": "user", "content": "héllo <end_action> ```py\nprint(ocr('a.png'))\n```"}]


pytestmark = [pytest.mark.slow]  # loads SmolLM2 from its GGUF


def encode(tokenizer) -> list[int]:
    ids = tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPORT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def from_gguf():
    path = smollm2_gguf_path()
    return (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))


def test_the_first_load_writes_the_folder_and_every_load_equals_the_gguf_exactly(empty_cache):
    reference, ref_tok = from_gguf()
    assert gguf_cache.cached(smollm2_gguf_path()) is None
    first, tok = load_smollm2()
    folder = gguf_cache.cached(smollm2_gguf_path())
    assert folder is not None and folder.parent == empty_cache and not list(empty_cache.glob(".*")), \
        "the folder was not renamed into place whole"
    second, tok2 = load_smollm2()
    ids = encode(ref_tok)
    for tokenizer in (tok, tok2, load_tokenizer("smollm2")):
        assert encode(tokenizer) == ids
        assert tokenizer.eos_token_id == ref_tok.eos_token_id and tokenizer.chat_template == ref_tok.chat_template
        assert tokenizer.decode(ids) == ref_tok.decode(ids)
    want = reference.state_dict()
    for model in (first, second):
        got = model.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        with torch.no_grad():
            assert torch.equal(model(torch.tensor([ids])).logits, reference(torch.tensor([ids])).logits)


def test_a_cache_that_cannot_be_written_is_one_warning_and_the_load_goes_on(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # the cache root is a file: nothing can be made under it
    code = ("from sport_fast.model.loader import load_smollm2; m, t = load_smollm2(); "
            "print(m.config.model_type, t.eos_token_id)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SPORT_CACHE_DIR": str(blocked / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["llama", "2"]
    assert "could not cache the converted SmolLM2" in done.stderr and "SPORT_CACHE_DIR" in done.stderr
