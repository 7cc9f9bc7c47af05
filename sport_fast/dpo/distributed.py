"""Data-parallel step-DPO training over DeepSpeed ZeRO (stages 1, 2 and 3), launched by ``torchrun`` or
``deepspeed``.

Rank 0 leads the round (tasks, the merge of explored data, reference log-probs, checkpoints); every rank
explores and evaluates its share of the round's lockstep batches (``run.work``), then every rank trains on
its share of the round's batches (``trainer.shard``) and DeepSpeed averages the gradients. ZeRO-1/2 partition
optimizer state and gradients, not parameters, so after each step every rank holds the same whole model and
its sampler explores with it directly. ZeRO-3 also partitions the parameters: each round trains a
partitioned copy of the policy (the whole policy waits in host memory meanwhile), and the trained parameters
are gathered back into every rank's policy when the round's training ends, so every rank samples with whole
weights. A step whose loss is not finite on any rank is skipped by all ranks; DeepSpeed itself skips a step
whose gradients are not finite (counted as refused from its ``skipped_steps``).

Control messages (work, results, the set-up check) go over a gloo side group, on the CPU: a rank may wait
there for hours while the others explore, which a NCCL collective would hold under its watchdog.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sport_fast.dpo.module import TreeDPOModule


class DistributedError(ValueError):
    pass


def load_ds_config(path: str | Path) -> dict:
    """The DeepSpeed JSON at ``path``, checked for what this trainer supports."""
    path = Path(path)
    if not path.is_file():
        raise DistributedError(f"distributed.deepspeed: {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DistributedError(f"distributed.deepspeed: {path} is not valid JSON ({err})") from None
    stage = zero_stage(config)
    if stage not in (0, 1, 2, 3):
        raise DistributedError(f"distributed.deepspeed: ZeRO stage {stage!r} does not exist (0, 1, 2 or 3)")
    owned = {"optimizer", "scheduler", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping"}
    if owned & set(config):
        raise DistributedError(f"distributed.deepspeed: {path} sets {sorted(owned & set(config))}; these come from "
                               f"the train section of the recipe")
    return config


def check_precision(config: dict, dtype: torch.dtype) -> None:
    """The policy's dtype and the DeepSpeed config's precision section must agree: DeepSpeed keeps float32
    master weights only for the 16-bit type it is told about, and casts the (shared) policy to that type."""
    for key, half in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        enabled = bool(config.get(key, {}).get("enabled", False))
        if dtype == half and not enabled:
            raise DistributedError(f"distributed.deepspeed: the policy is {half} but the DeepSpeed config does not "
                                   f"enable {key} (its optimizer would step {half} weights with no float32 masters)")
        if enabled and dtype != half:
            raise DistributedError(f"distributed.deepspeed: the DeepSpeed config enables {key} but the policy is "
                                   f"{dtype} (DeepSpeed would cast it, the sampler's copy included); "
                                   f"set model.dtype to match")


def zero_stage(config: dict):
    return config.get("zero_optimization", {}).get("stage", 0)


@dataclass
class DataParallel:
    rank: int
    world: int
    ds_config: dict
    control: object = None           # the gloo group control messages travel on (None: the default group)
    agreed: bool = False             # every rank's set-up succeeded (``agree``): work may be sent

    @classmethod
    def start(cls, ds_json: str | Path, timeout_min: int = 360, dtype: torch.dtype | None = None) -> "DataParallel":
        """Join the process group the launcher set up (one rank if it set none); ``dtype``: the policy's."""
        config = load_ds_config(ds_json)
        if dtype is not None:
            check_precision(config, dtype)
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        timeout = datetime.timedelta(minutes=timeout_min)
        if torch.cuda.is_available():  # first: the process group binds the current device
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
        control = torch.distributed.new_group(backend="gloo", timeout=timeout)
        return cls(torch.distributed.get_rank(), torch.distributed.get_world_size(), config, control)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def zero3(self) -> bool:
        return zero_stage(self.ds_config) == 3

    def agree(self, problem: str | None) -> None:
        """Every rank says whether its set-up succeeded; if one did not, every rank raises, naming it (so no
        rank waits for work that will never come)."""
        said = [None] * self.world
        torch.distributed.all_gather_object(said, problem, group=self.control)
        failed = [(r, p) for r, p in enumerate(said) if p is not None]
        if failed:
            raise DistributedError("; ".join(f"rank {r}: {p}" for r, p in failed))
        self.agreed = True

    def send(self, work: dict | None) -> None:
        """Rank 0: the next piece of work for the other ranks (None: stop). Nothing goes out before every
        rank agreed its set-up succeeded (the others are gone otherwise)."""
        if self.world > 1 and self.agreed:
            torch.distributed.broadcast_object_list([work], src=0, group=self.control)

    def receive(self) -> dict | None:
        """Other ranks: wait (up to the timeout) for rank 0's next piece of work."""
        box = [None]
        torch.distributed.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, result) -> list | None:
        """Every rank's ``result`` on rank 0, in rank order (None on the others)."""
        parts = [None] * self.world if self.main else None
        torch.distributed.gather_object(result, parts, dst=0, group=self.control)
        return parts

    def stepper(self, model, cfg, images=None, backends=None, module=TreeDPOModule) -> "DeepSpeedStepper":
        return DeepSpeedStepper(model, cfg, self.ds_config, images, backends, module)

    def merge(self, totals):
        """Every rank's training totals combined (losses and metrics of all real micro steps)."""
        parts = [None] * self.world
        torch.distributed.all_gather_object(parts, totals.__dict__, group=self.control)
        merged = type(totals)()
        for part in parts:
            for key in ("losses", "accs", "margins", "chosen"):
                getattr(merged, key).extend(part[key])
            merged.tokens += part["tokens"]
            merged.seconds = max(merged.seconds, part["seconds"])
        merged.steps, merged.refused, merged.grad_norms = totals.steps, totals.refused, totals.grad_norms
        merged.last_loss = totals.last_loss
        return merged


class DeepSpeedStepper:
    """A fresh DeepSpeed engine per round (as the one-process trainer starts a fresh AdamW), wrapping the
    step-DPO module. ZeRO-1/2 train the policy in place. ZeRO-3 moves the whole policy to host memory and
    trains a copy of it partitioned across the ranks (the engine moves the copy to the device whole, then
    broadcasts rank 0's weights and partitions them, so a device briefly holds one whole copy); ``finish``
    gathers the trained parameters back into the policy on every rank, one tensor at a time, and returns the
    policy to its device: the sampler and the checkpoint read it whole."""

    def __init__(self, model, cfg, ds_config: dict, images=None, backends=None, module=TreeDPOModule):
        import deepspeed
        config = {**ds_config, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": cfg.grad_accum,
                  "gradient_clipping": cfg.max_grad_norm if cfg.max_grad_norm > 0 else 0.0,
                  "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                            "torch_adam": True}}}
        config.pop("train_batch_size", None)
        self.zero3 = zero_stage(config) == 3
        self.home = next(model.parameters()).device
        module = module(copy.deepcopy(model.to("cpu")) if self.zero3 else model, cfg, images, backends)
        params = [p for p in module.parameters() if p.requires_grad]
        self.engine, *_ = deepspeed.initialize(model=module, model_parameters=params, config=config)
        if self.zero3:
            module.register_head_for_zero3()
        self.window = time.perf_counter()

    def pack(self, groups):
        return self.engine.module.pack(groups)

    def forward(self, groups, batch=None) -> tuple[torch.Tensor, dict]:
        return self.engine(groups, batch)

    def finish(self, model) -> None:
        if self.zero3:
            import deepspeed
            trained = dict(self.engine.module.policy.named_parameters())
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if param.requires_grad:
                        with deepspeed.zero.GatheredParameters([trained[name]], modifier_rank=None):
                            param.copy_(trained[name].data)
            model.to(self.home)
        self.engine.destroy()
        del self.engine

    def backward_and_step(self, loss: torch.Tensor, boundary: bool, totals) -> dict | None:
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if finite.item() == 0.0:  # some rank's loss is not finite: every rank skips this micro step
            lost, _ = totals.settle()
            totals.refuse(lost, float("nan"))
            return {"loss": lost, "grad_norm": float("nan"), "refused": True}
        skipped = self.engine.skipped_steps
        self.engine.set_gradient_accumulation_boundary(boundary)  # our boundaries, as in one process
        self.engine.backward(loss)
        self.engine.step()
        if not boundary:
            return None
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else float("nan")
        loss_sum, _ = totals.settle()
        seconds, self.window = time.perf_counter() - self.window, time.perf_counter()
        if self.engine.skipped_steps > skipped:
            totals.refuse(loss_sum, norm, seconds)
            return {"loss": loss_sum, "grad_norm": norm, "refused": True}
        totals.stepped(norm, seconds)
        return {"loss": loss_sum, "grad_norm": norm, "refused": False}


def _free_port() -> int:
    """A loopback port nothing listens on now (for a one-rank group that no launcher set up)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
