"""One process's optimizer side: AdamW, gradients accumulated over ``grad_accum`` micro steps, clipped, and a
step refused (gradients dropped) when the accumulated loss or the gradient norm is not finite.

Trainable parameters held in bfloat16 or float16 train through float32 master copies, as mixed precision
does: gradients accumulate in float32, AdamW's state and update are float32, and the policy gets the result
rounded after each step (an update below the policy's precision is kept, not lost)."""
from __future__ import annotations

import time

import torch

from sport_fast.dpo.module import TreeDPOModule
from sport_fast.dpo.totals import finite

_FULL = (torch.float32, torch.float64)


class LocalStepper:
    def __init__(self, model, cfg, images=None, backends=None, module=TreeDPOModule):
        self.module = module(model, cfg, images, backends)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.masters = [p if p.dtype in _FULL else p.detach().float().clone() for p in self.params]
        self.opt = torch.optim.AdamW(self.masters, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.cfg, self.window = cfg, time.perf_counter()

    def pack(self, groups):
        return self.module.pack(groups)

    def forward(self, groups, batch=None) -> tuple[torch.Tensor, dict]:
        return self.module(groups, batch)

    def finish(self, model) -> None:
        """The policy was trained in place: nothing to hand back."""

    def backward_and_step(self, loss: torch.Tensor, boundary: bool, totals) -> dict | None:
        (loss / self.cfg.grad_accum).backward()
        self._gradients_to_masters()
        if not boundary:
            return None
        step = self._optimizer_step(totals)
        with torch.no_grad():
            for param, master in zip(self.params, self.masters):
                if master is not param:
                    param.copy_(master)
        return step

    def _optimizer_step(self, totals) -> dict:
        """Clip; one host sync for the finite check and the records; step or refuse."""
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        norm_t = torch.nn.utils.clip_grad_norm_(self.masters, max_norm)
        loss, (norm,) = totals.settle(norm_t)
        seconds, self.window = time.perf_counter() - self.window, time.perf_counter()
        if not finite(loss, norm):
            self.opt.zero_grad(set_to_none=True)
            totals.refuse(loss, norm, seconds)
            return {"loss": loss, "grad_norm": norm, "refused": True}
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        totals.stepped(norm, seconds)
        return {"loss": loss, "grad_norm": norm, "refused": False}

    def _gradients_to_masters(self) -> None:
        for param, master in zip(self.params, self.masters):
            if master is not param and param.grad is not None:
                grad = param.grad.float()
                master.grad = grad if master.grad is None else master.grad.add_(grad)
                param.grad = None
