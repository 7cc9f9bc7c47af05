"""Kernels, installed as ``sport_fast.kernels``: fused lm-head log-probs and the step-DPO loss.

Each fast path has its plain-PyTorch reference beside it (``reference.py``) and one dispatch point
(``dispatch.py``). Triton is imported only when the Triton path runs.
"""
from sport_fast.kernels.dispatch import resolve_kernel_impl
from sport_fast.kernels.linear_logprobs import linear_logprobs
from sport_fast.kernels.step_dpo import segment_logps, step_dpo_loss

__all__ = ["linear_logprobs", "step_dpo_loss", "segment_logps", "resolve_kernel_impl"]
