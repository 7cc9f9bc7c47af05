"""The training case shared by the 2-rank DeepSpeed test and its one-process reference."""
import torch

from sport_fast.config import TrainSection
from sport_fast.dpo.reference_logps import compute_ref_logps
from tiny_models import random_groups, tiny_qwen2


def case(grad_accum: int):
    """A tiny Qwen2 and 5 step groups in batches of about one group, references computed."""
    model = tiny_qwen2(0)
    groups = random_groups(4, n_groups=4)
    compute_ref_logps(model, groups)
    with torch.no_grad():  # move the policy off the reference so that the first loss is not log 2
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    sizes = [len(g.context_ids) + sum(len(c) for c in g.candidate_ids) for g in groups]
    cfg = TrainSection(lr=3e-3, epochs=2, grad_accum=grad_accum, max_tokens_per_batch=max(sizes), max_grad_norm=1.0)
    return model, groups, cfg
