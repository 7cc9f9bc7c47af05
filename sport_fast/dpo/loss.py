"""Step-wise DPO over per-candidate log-prob sums, in plain PyTorch (the oracle for the fused kernel).

For a pair (c, r) with policy sums pi and reference sums ref, the implicit rewards are
``beta * (pi_c - ref_c)`` and ``beta * (pi_r - ref_r)``, and ``delta = (pi_c - ref_c) - (pi_r - ref_r)``:

- "sigmoid" (DPO): ``-(1 - eps) logsig(beta delta) - eps logsig(-beta delta)``; eps = label_smoothing
  (conservative DPO, as LLaMA-Factory applies it; eps = 0 is TRL's "sigmoid").
- "robust" (rDPO, as TRL): the sigmoid terms unbiased by ``/(1 - 2 eps)``, the flipped term subtracted.
- "ipo": ``(delta_c/len_c - delta_r/len_r - 1/(2 beta))^2`` with per-candidate token counts ``lengths``,
  the length-normalised form TRL uses (confirmed by IPO's authors).

``sft_weight`` w > 0 adds w times the chosen steps' negative log-likelihood per token (the chosen tokens of
every pair, a token mean: TRL's ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, w]``; RPO, Pang et al.
2024). DPO on pairs that differ in a few tokens (a typo that raises against the step that runs) can lower the
chosen step's likelihood along with the rejected one's ("likelihood displacement", Pal et al. 2024; Razin et al.
2024); the term holds the chosen step up.

A segment may sit in several pairs (SPORT's chosen step against up to four rejected); its sum is used
by index, never recomputed. The loss is the mean over pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "ipo")


def dpo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, chosen: torch.Tensor,
             rejected: torch.Tensor, beta: float = 0.1, *, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, lengths: torch.Tensor | None = None, sft_weight: float = 0.0):
    """Mean loss over pairs and a dict of detached metrics (rewards, margins, accuracy, log-probs).

    policy_logps, ref_logps: (S,) sums per segment; chosen, rejected: (P,) segment indices;
    lengths: (S,) token counts, required by "ipo" and by sft_weight > 0. Math in float32 (float64 if given float64).
    """
    _check(policy_logps, ref_logps, chosen, rejected, beta, loss_type, label_smoothing, lengths, sft_weight)
    dtype = torch.promote_types(policy_logps.dtype, torch.float32)
    log_ratio = policy_logps.to(dtype) - ref_logps.to(dtype).detach()  # (S,)
    chosen_ratio, rejected_ratio = log_ratio[chosen], log_ratio[rejected]  # (P,) each
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == "robust":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * delta)
                  + label_smoothing * F.logsigmoid(-beta * delta)) / (1 - 2 * label_smoothing)
    else:
        lengths = lengths.to(dtype).clamp(min=1)
        ipo_delta = chosen_ratio / lengths[chosen] - rejected_ratio / lengths[rejected]
        losses = (ipo_delta - 1 / (2 * beta)) ** 2
    metrics = _metrics(beta * chosen_ratio, beta * rejected_ratio, policy_logps, chosen, rejected)
    if sft_weight == 0:
        return losses.mean(), metrics
    nll = -policy_logps.to(dtype)[chosen].sum() / lengths.to(dtype)[chosen].sum().clamp(min=1)
    metrics["nll/chosen"] = nll.detach()
    return losses.mean() + sft_weight * nll, metrics


def _metrics(chosen_rewards, rejected_rewards, policy_logps, chosen, rejected) -> dict[str, torch.Tensor]:
    """Means over pairs, detached (no .item(): that would sync the GPU on every step)."""
    with torch.no_grad():
        return {
            "rewards/chosen": chosen_rewards.mean().detach(),
            "rewards/rejected": rejected_rewards.mean().detach(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean().detach(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
            "logps/chosen": policy_logps[chosen].float().mean().detach(),
            "logps/rejected": policy_logps[rejected].float().mean().detach(),
        }


def _check(policy_logps, ref_logps, chosen, rejected, beta, loss_type, label_smoothing, lengths, sft_weight) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if policy_logps.shape != ref_logps.shape or policy_logps.ndim != 1:
        raise ValueError(f"policy_logps {tuple(policy_logps.shape)} and ref_logps {tuple(ref_logps.shape)} "
                         "must both be (S,)")
    if chosen.shape != rejected.shape or chosen.ndim != 1 or chosen.numel() == 0:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must be equal, "
                         "non-empty (P,) index tensors")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if loss_type == "ipo" and (lengths is None or lengths.shape != policy_logps.shape):
        raise ValueError("loss_type='ipo' needs lengths: (S,) token counts per segment")
    if sft_weight < 0:
        raise ValueError(f"sft_weight must be >= 0, got {sft_weight}")
    if sft_weight > 0 and (lengths is None or lengths.shape != policy_logps.shape):
        raise ValueError("sft_weight > 0 needs lengths: (S,) token counts per segment")
