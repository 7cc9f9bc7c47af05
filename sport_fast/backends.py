"""The one place that decides which implementation runs each hot path, and says so.

Four choices, each taken from the run's config first (section ``backends``; ``auto`` defers), from its
``SPORT_*`` variable second, and from the machine last:

| choice           | options                 | ``auto`` picks                                    | variable           |
|------------------|-------------------------|---------------------------------------------------|--------------------|
| ``kernel``       | triton, torch           | triton for CUDA tensors (bf16/fp16/fp32)          | SPORT_KERNEL_IMPL  |
| ``trie``         | cpp, python             | cpp when ``sport_fast._C`` was built              | SPORT_TRIE_IMPL    |
| ``tree_attention``| flex, dense            | flex for a FlexAttention model on CUDA            | SPORT_TREE_ATTN    |
| ``decode``       | dynamic, static, graph  | dynamic (graph is opt-in: it has not run on a GPU) | SPORT_DECODE       |

``resolve(section, device, model)`` gives the run's ``Backends``: printed at start and recorded in the run's
manifest, so that a run resumed under another environment is refused instead of silently producing
different data. The per-call functions below (``kernel_impl``, ``trie_impl``, ``tree_attention``,
``decode_mode``) are what the kernels, the packer and the sampler call with an explicit choice or ``auto``;
they read no config, and every fallback is announced once, loudly. What the machine offers is probed once,
at import: nothing here runs per call that ``torch.compile`` could not trace.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import asdict, dataclass

import torch

KERNELS = ("auto", "triton", "torch")
TRIES = ("auto", "cpp", "python")
TREE_ATTENTIONS = ("auto", "flex", "dense")
DECODES = ("auto", "dynamic", "static", "graph")
TRITON_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
ENV = {"kernel": "SPORT_KERNEL_IMPL", "trie": "SPORT_TRIE_IMPL", "tree_attention": "SPORT_TREE_ATTN",
       "decode": "SPORT_DECODE"}
WHAT = {"kernel": "kernel impl", "trie": "trie impl", "tree_attention": "tree attention", "decode": "decode mode"}

TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
_warned: set[str] = set()


def interpreter_problem() -> str | None:
    """Why the Triton interpreter cannot run here: Triton 3.6's fails with numpy >= 2.4 ("only 0-dimensional
    arrays can be converted"), which the GPU image's smoke runs meet."""
    if not (TRITON_INSTALLED and INTERPRETING):
        return None
    import numpy
    import triton
    major_minor = lambda v: tuple(int(x) for x in v.split(".")[:2])  # noqa: E731
    if major_minor(triton.__version__) < (3, 7) and major_minor(numpy.__version__) >= (2, 4):
        return (f"the Triton {triton.__version__} interpreter fails with numpy {numpy.__version__}: "
                f"pip install 'numpy<2.4' (or a newer triton) to run kernels under TRITON_INTERPRET=1")
    return None


def _native_trie():
    try:
        from sport_fast import _C
    except ImportError as err:  # the build is optional; the Python twin gives identical results
        return None, err
    return _C, None


NATIVE_TRIE, NATIVE_TRIE_ERROR = _native_trie()


@dataclass(frozen=True)
class Backends:
    """The resolved choice of every hot path for one run (no ``auto`` left)."""
    kernel: str
    trie: str
    tree_attention: str
    decode: str

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return "backends: " + ", ".join(f"{k} {v}" for k, v in asdict(self).items())


def resolve(section, device: torch.device, model=None) -> Backends:
    """The run's backends from its config section (``BackendsSection``), the variables, and the machine."""
    device = torch.device(device)
    kernel = _requested("kernel", section.kernel, KERNELS)
    if kernel == "auto":
        kernel = "triton" if device.type == "cuda" and TRITON_INSTALLED else "torch"
    attn = tree_attention(model, device, section.tree_attention) if model is not None else \
        _requested("tree_attention", section.tree_attention, TREE_ATTENTIONS)
    return Backends(kernel=kernel, trie=trie_impl(section.trie), tree_attention=attn,
                    decode=decode_mode(section.decode, device))


def _requested(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` unless it is ``auto``, then the ``SPORT_*`` variable (if set), checked against ``choices``."""
    if value == "auto":
        value = os.environ.get(ENV[name]) or "auto"
    if value not in choices:
        raise ValueError(f"{WHAT[name]} must be one of {', '.join(choices)}, got {value!r} "
                         f"(from {'$' + ENV[name] if os.environ.get(ENV[name]) == value else 'the caller'})")
    return value


# -- kernels ---------------------------------------------------------------------------------------
def kernel_impl(impl: str, x: torch.Tensor) -> str:
    """"triton" or "torch" for a kernel call with ``impl`` on tensors like ``x``; refuses what cannot work."""
    impl = _requested("kernel", impl, KERNELS)
    if impl == "torch":
        return impl
    problem = _triton_problem(x)
    if impl == "triton":
        if problem:
            raise ValueError(f"kernel impl 'triton' cannot run here: {problem}")
        return impl
    if problem and x.is_cuda:
        warn_once(f"sport_fast kernels: falling back to the plain-PyTorch path ({problem}); slower, and it "
                  "materialises a (chunk, V) float32 logits tile")
    return "torch" if problem or not x.is_cuda else "triton"


def _triton_problem(x: torch.Tensor) -> str | None:
    if not TRITON_INSTALLED:
        return "triton is not installed"
    if x.dtype not in TRITON_DTYPES:
        return f"dtype {x.dtype} (the Triton path takes bf16/fp16/fp32)"
    if not x.is_cuda and not INTERPRETING:
        return "tensors are on the CPU and TRITON_INTERPRET=1 is not set"
    return None if x.is_cuda else interpreter_problem()


# -- trie ------------------------------------------------------------------------------------------
def trie_impl(impl: str = "auto") -> str:
    """"cpp" or "python"; ``auto`` takes the C++ extension when it was built, and says so when it was not."""
    impl = _requested("trie", impl, TRIES)
    if impl == "cpp" and NATIVE_TRIE is None:
        raise RuntimeError(f"trie impl 'cpp' requested but sport_fast._C did not import: {NATIVE_TRIE_ERROR}")
    if impl == "auto":
        impl = "cpp" if NATIVE_TRIE is not None else "python"
        if impl == "python":
            warn_once(f"sport_fast._C is not built ({NATIVE_TRIE_ERROR}); tree packing uses the pure-Python trie, "
                      "about 15x slower (64 groups of 4k-token contexts: 0.39 s instead of 0.027 s; reinstall "
                      "with a C++ compiler: pip install -e .)")
    return impl


# -- tree attention --------------------------------------------------------------------------------
def tree_attention(model, device: torch.device, attn: str = "auto") -> str:
    """"flex" when the model runs FlexAttention on CUDA, else "dense"."""
    attn = _requested("tree_attention", attn, TREE_ATTENTIONS)
    uses_flex = getattr(model.config, "_attn_implementation", None) == "flex_attention"
    if attn == "auto":
        return "flex" if uses_flex and torch.device(device).type == "cuda" else "dense"
    if attn == "flex" and not uses_flex:
        raise ValueError("tree attention 'flex' needs a model loaded with attn_implementation='flex_attention'")
    return attn


# -- decode ----------------------------------------------------------------------------------------
def decode_mode(mode: str, device: torch.device) -> str:
    """How the sampler runs decode forwards (``sampler.decode_steps``). ``auto`` is ``dynamic`` everywhere:
    the CUDA-graph mode stays opt-in until it has passed on a GPU. ``graph`` without CUDA runs ``static``."""
    mode = _requested("decode", mode, DECODES)
    if mode == "auto":
        return "dynamic"
    if mode == "graph" and torch.device(device).type != "cuda":
        warnings.warn("decode mode 'graph' needs CUDA; falling back to 'static' (uncaptured)", stacklevel=2)
        return "static"
    return mode


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)
