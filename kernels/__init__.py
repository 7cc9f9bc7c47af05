"""Kernels, imported as ``sport_fast.kernels``: the fused lm-head + log-softmax + gather, and the per-branch
sums over it (``segment_logps``).

``linear_logprobs`` (``linear_logprobs.py``) has its Triton kernels beside it (``linear_logprobs_triton.py``)
and its plain-PyTorch reference (``linear_logprobs_reference.py``), the oracle and the CPU path. Which one
runs is decided in ``sport_fast.backends``. Triton is imported only when the Triton path runs.
"""
from sport_fast.kernels.linear_logprobs import linear_logprobs
from sport_fast.kernels.segment_logps import segment_logps

__all__ = ["linear_logprobs", "segment_logps"]
