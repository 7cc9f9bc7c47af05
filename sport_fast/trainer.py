"""Step-DPO epochs over a round's step groups: tree-packed batches, the fused loss, accumulation, and a
finite check before every optimizer step.

Each round starts a fresh AdamW from the round's starting weights (SPORT trains each round as its own
DPO run), so a crash inside training resumes by re-running the round's training from its start; with
the same seed, batches come in the same order and the result is the same. Batches hold whole
trajectories' groups up to ``max_tokens_per_batch`` unpacked tokens; their order is shuffled per epoch.
A step whose loss or gradient norm is not finite is refused (gradients dropped), counted and reported.
"""
from __future__ import annotations

import math
import random
import time
import warnings

import torch

from sport_fast.reference import token_budget_batches
from sport_fast.tree_batch import make_tree_batch
from sport_fast.tree_dpo import tree_step_dpo_loss


def train_round(model, groups: list, cfg, seed: int, progress=None, log_step=None) -> dict:
    """``cfg``: a ``TrainSection``. Returns the round's training summary."""
    paired = [g for g in groups if g.rejected]
    if not paired:
        return {"train_steps": 0, "pairs": 0, "note": "no preference pairs this round: nothing to train"}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = list(token_budget_batches(paired, cfg.max_tokens_per_batch))
    rng, totals = random.Random(seed), _Totals()
    model.train()
    for epoch in range(cfg.epochs):
        order = rng.sample(range(len(batches)), len(batches))
        for i, b in enumerate(order):
            totals.add(_forward_backward(model, batches[b], cfg))
            if (i + 1) % cfg.grad_accum == 0 or i + 1 == len(order):
                step = _optimizer_step(opt, params, cfg.max_grad_norm, totals)
                if log_step is not None:
                    log_step({"epoch": epoch, **step})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{totals.last_loss:.4f}")
    model.eval()
    return totals.summary(len(paired), sum(len(g.rejected) for g in paired))


def _forward_backward(model, groups, cfg) -> dict:
    t0 = time.perf_counter()
    batch = make_tree_batch(model, groups, candidates="paired")
    loss, metrics = tree_step_dpo_loss(model, batch, groups, beta=cfg.beta, loss_type=cfg.loss_type,
                                       kernel_impl=cfg.kernel_impl)
    (loss / cfg.grad_accum).backward()
    return {"loss": float(loss.detach()), "acc": float(metrics["rewards/accuracies"]),
            "margin": float(metrics["rewards/margins"]), "tokens": batch.tree.num_tokens,
            "seconds": time.perf_counter() - t0}


def _optimizer_step(opt, params, max_norm: float, totals) -> dict:
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
    loss = totals.pending_loss
    if not (math.isfinite(loss) and math.isfinite(norm)):
        opt.zero_grad(set_to_none=True)
        totals.refused += 1
        totals.pending_loss = 0.0
        warnings.warn(f"refused an optimizer step: loss {loss}, gradient norm {norm} (not finite)")
        return {"loss": loss, "grad_norm": norm, "refused": True}
    opt.step()
    opt.zero_grad(set_to_none=True)
    totals.steps += 1
    totals.grad_norms.append(norm)
    totals.pending_loss = 0.0
    return {"loss": loss, "grad_norm": norm, "refused": False}


class _Totals:
    def __init__(self):
        self.losses, self.accs, self.margins, self.grad_norms = [], [], [], []
        self.tokens, self.seconds, self.steps, self.refused = 0, 0.0, 0, 0
        self.pending_loss, self.last_loss = 0.0, float("nan")

    def add(self, r: dict) -> None:
        self.losses.append(r["loss"])
        self.accs.append(r["acc"])
        self.margins.append(r["margin"])
        self.tokens += r["tokens"]
        self.seconds += r["seconds"]
        self.pending_loss += r["loss"]
        self.last_loss = r["loss"]

    def summary(self, groups: int, pairs: int) -> dict:
        n = max(1, len(self.losses))
        return {"train_steps": self.steps, "refused_steps": self.refused, "groups": groups, "pairs": pairs,
                "loss_first": self.losses[0], "loss_last": self.losses[-1], "loss_mean": sum(self.losses) / n,
                "reward_accuracy": sum(self.accs) / n, "reward_margin": sum(self.margins) / n,
                "grad_norm_mean": sum(self.grad_norms) / max(1, len(self.grad_norms)),
                "train_tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
                "train_s": round(self.seconds, 3)}
