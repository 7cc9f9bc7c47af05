"""Stage 4c, step-wise DPO: the one loss path (packed tree -> fused lm-head kernel -> per-branch sums -> DPO),
reference sums, the training step as a module, the round's epochs, DeepSpeed data parallelism."""
