"""Triton kernels, installed as ``sport_fast.kernels``.

Empty until the fused lm-head + log-softmax + DPO kernel lands; ``sport_fast.logprobs`` holds the
plain-PyTorch reference it will be tested against.
"""
