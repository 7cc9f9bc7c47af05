"""Step-DPO epochs over a round's step groups: tree-packed batches, the fused loss, accumulation, and a
finite check before every optimizer step; in one process, or data-parallel over DeepSpeed ranks.

Each round starts a fresh AdamW from the round's starting weights (SPORT trains each round as its own
DPO run), so a crash inside training resumes by re-running the round's training from its start; with
the same seed, batches come in the same order and the result is the same. Batches hold whole
trajectories' groups up to ``max_tokens_per_batch`` unpacked tokens; their order is shuffled per epoch.
A step whose loss or gradient norm is not finite is refused (gradients dropped), counted and reported.
"""
from __future__ import annotations

import math
import random
import warnings

import torch

from sport_fast.dpo.module import TreeDPOModule
from sport_fast.warmstart.loss import TreeSFTModule
from sport_fast.tree.batching import token_budget_batches

OBJECTIVES = {"dpo": TreeDPOModule, "sft": TreeSFTModule}


def train_round(model, groups: list, cfg, seed: int, progress=None, log_step=None, parallel=None,
                images=None, backends=None, objective: str = "dpo") -> dict:
    """``cfg``: a ``TrainSection``; ``parallel``: a ``distributed.DataParallel`` to train on several ranks
    (each takes every world-th batch of the shuffled order), None for one process; ``images``: an
    ``ImageInputs`` when the groups show images; ``backends``: the run's resolved ``Backends``;
    ``objective``: "dpo" (the groups' preference pairs) or "sft" (every group's candidates, the warm start).
    Returns the round's training summary (over all ranks)."""
    paired = [g for g in groups if g.rejected] if objective == "dpo" else list(groups)
    if not paired:
        return {"train_steps": 0, "pairs": 0, "note": "no preference pairs this round: nothing to train"}
    model.train()
    module = OBJECTIVES[objective]
    stepper = parallel.stepper(model, cfg, images, backends, module) if parallel is not None else \
        LocalStepper(model, cfg, images, backends, module)
    rank, world = (parallel.rank, parallel.world) if parallel is not None else (0, 1)
    batches = list(token_budget_batches(paired, cfg.max_tokens_per_batch))
    rng, totals = random.Random(seed), _Totals()
    for epoch in range(cfg.epochs):
        mine = shard(rng.sample(range(len(batches)), len(batches)), rank, world)
        for i, (b, real) in enumerate(mine):
            loss, record = stepper.forward(batches[b])
            if real:
                totals.add(record)
            boundary = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(mine)
            step = stepper.backward_and_step(loss if real else loss * 0.0, boundary, totals)
            if step is not None and log_step is not None:
                log_step({"epoch": epoch, **step})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{totals.last_loss:.4f}")
    stepper.finish(model)
    model.eval()
    if parallel is not None:
        totals = parallel.merge(totals)
    return totals.summary(len(paired), sum(len(g.rejected) for g in paired))


def shard(order: list[int], rank: int, world: int) -> list[tuple[int, bool]]:
    """Rank ``rank``'s batches of ``order``: every world-th one. Every rank gets the same number of micro
    steps (the collective calls must match); a rank short of one repeats a batch with zero weight."""
    per_rank = -(-len(order) // world)
    mine = order[rank::world]
    return [(b, True) for b in mine] + [(order[0], False)] * (per_rank - len(mine))


class LocalStepper:
    """One process: AdamW, gradients accumulated over ``grad_accum`` micro steps, clipped, and a step
    refused (gradients dropped) when the accumulated loss or the gradient norm is not finite.

    Trainable parameters held in bfloat16 or float16 train through float32 master copies, as mixed
    precision does: gradients accumulate in float32, AdamW's state and update are float32, and the policy
    gets the result rounded after each step (an update below the policy's precision is kept, not lost)."""

    def __init__(self, model, cfg, images=None, backends=None, module=TreeDPOModule):
        self.module = module(model, cfg, images, backends)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.masters = [p if p.dtype in _FULL else p.detach().float().clone() for p in self.params]
        self.opt = torch.optim.AdamW(self.masters, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.cfg = cfg

    def forward(self, groups) -> tuple[torch.Tensor, dict]:
        return self.module(groups)

    def finish(self, model) -> None:
        """The policy was trained in place: nothing to hand back."""

    def backward_and_step(self, loss: torch.Tensor, boundary: bool, totals) -> dict | None:
        (loss / self.cfg.grad_accum).backward()
        self._gradients_to_masters()
        if not boundary:
            return None
        step = _optimizer_step(self.opt, self.masters, self.cfg.max_grad_norm, totals)
        with torch.no_grad():
            for param, master in zip(self.params, self.masters):
                if master is not param:
                    param.copy_(master)
        return step

    def _gradients_to_masters(self) -> None:
        for param, master in zip(self.params, self.masters):
            if master is not param and param.grad is not None:
                grad = param.grad.float()
                master.grad = grad if master.grad is None else master.grad.add_(grad)
                param.grad = None


_FULL = (torch.float32, torch.float64)


def _optimizer_step(opt, params, max_norm: float, totals) -> dict:
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
    loss = totals.pending_loss
    if not (math.isfinite(loss) and math.isfinite(norm)):
        opt.zero_grad(set_to_none=True)
        totals.refuse(loss, norm)
        return {"loss": loss, "grad_norm": norm, "refused": True}
    opt.step()
    opt.zero_grad(set_to_none=True)
    totals.stepped(norm)
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

    def stepped(self, norm: float) -> None:
        self.steps += 1
        self.grad_norms.append(norm)
        self.pending_loss = 0.0

    def refuse(self, loss: float, norm: float) -> None:
        self.refused += 1
        self.pending_loss = 0.0
        warnings.warn(f"refused an optimizer step: loss {loss}, gradient norm {norm} (not finite)")

    def summary(self, groups: int, pairs: int) -> dict:
        n = max(1, len(self.losses))
        return {"train_steps": self.steps, "refused_steps": self.refused, "groups": groups, "pairs": pairs,
                "loss_first": self.losses[0], "loss_last": self.losses[-1], "loss_mean": sum(self.losses) / n,
                "reward_accuracy": _mean_of(self.accs), "reward_margin": _mean_of(self.margins),
                "grad_norm_mean": sum(self.grad_norms) / max(1, len(self.grad_norms)),
                "train_tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
                "train_s": round(self.seconds, 3)}


def _mean_of(values: list) -> float | None:
    """The mean of the defined values (the warm start's records define no accuracy or margin)."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None
