"""A round's training records: each micro step's loss, accuracy, margin and chosen reward stay tensors on the device (no host
synchronisation per micro step); at an optimizer step they are made floats in one transfer, together with the
gradient norm the finite check needs (``.tolist()`` is the one sync of a step)."""
from __future__ import annotations

import math
import warnings

import torch


class TrainingTotals:
    def __init__(self):
        self.losses, self.accs, self.margins, self.chosen, self.grad_norms = [], [], [], [], []
        self.tokens, self.seconds, self.steps, self.refused = 0, 0.0, 0, 0
        self.pending: list[dict] = []
        self.last_loss = float("nan")

    def add(self, record: dict) -> None:
        """A micro step's record: ``loss`` (and ``acc``, ``margin``, ``chosen`` or None) as 0-d tensors, ``tokens``."""
        self.pending.append(record)
        self.tokens += record["tokens"]

    def settle(self, *extra: torch.Tensor) -> tuple[float, list[float]]:
        """(the pending micro steps' summed loss, ``extra`` as floats), in one host transfer."""
        if not self.pending:  # a rank that only padded this step
            return 0.0, [float(e) for e in extra]
        keys = [k for k in ("loss", "acc", "margin", "chosen") if any(r.get(k) is not None for r in self.pending)]
        # a micro step that defines no accuracy (demonstrations alone) records NaN there, left out of the means
        nan = torch.tensor(math.nan, device=self.pending[0]["loss"].device)
        values = [(nan if r.get(k) is None else r[k]).detach().float().reshape(()) for r in self.pending for k in keys]
        device = values[0].device
        flat = torch.stack(values + [e.detach().float().reshape(()).to(device) for e in extra]).tolist()
        per = [flat[i:i + len(keys)] for i in range(0, len(self.pending) * len(keys), len(keys))]
        for row in per:
            named = dict(zip(keys, row))
            self.losses.append(named["loss"])
            self.accs.append(named.get("acc"))
            self.margins.append(named.get("margin"))
            self.chosen.append(named.get("chosen"))
        self.pending = []
        if per:
            self.last_loss = per[-1][0]
        return sum(row[0] for row in per), flat[len(per) * len(keys):]

    def stepped(self, norm: float, seconds: float) -> None:
        self.steps += 1
        self.grad_norms.append(norm)
        self.seconds += seconds

    def refuse(self, loss: float, norm: float, seconds: float = 0.0) -> None:
        self.refused += 1
        self.seconds += seconds
        warnings.warn(f"refused an optimizer step: loss {loss}, gradient norm {norm} (not finite)")

    def summary(self, groups: int, pairs: int) -> dict:
        n = max(1, len(self.losses))
        return {"train_steps": self.steps, "refused_steps": self.refused, "groups": groups, "pairs": pairs,
                "loss_first": self.losses[0], "loss_last": self.losses[-1], "loss_mean": sum(self.losses) / n,
                "reward_accuracy": _mean_of(self.accs), "reward_margin": _mean_of(self.margins),
                # beta x (policy - reference) of the chosen steps, at the last micro step: below 0, DPO has
                # lowered the chosen steps' likelihood too (displacement; train.sft_weight holds it up)
                "reward_chosen_last": next((v for v in reversed(self.chosen) if _defined(v)), None),
                "grad_norm_mean": sum(self.grad_norms) / max(1, len(self.grad_norms)),
                "train_tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
                "train_s": round(self.seconds, 3)}


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _mean_of(values: list) -> float | None:
    """The mean of the defined values (the warm start's records define no accuracy or margin)."""
    defined = [v for v in values if _defined(v)]
    return sum(defined) / len(defined) if defined else None


def _defined(value: float | None) -> bool:
    return value is not None and not math.isnan(value)
