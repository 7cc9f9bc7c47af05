"""sport_fast: step-wise DPO for self-taught tool-using agents (SPORT), made fast.

Data flows one way: tasks -> trajectories (sampler + sandbox + judge) -> step groups -> packed trees ->
log-prob sums -> DPO loss -> weights.

The public names below are imported on first use (PEP 562), so ``import sport_fast.sandbox.sandbox`` or the
sandbox's child process does not pay for importing torch.
"""
import os
from importlib import import_module

# OpenMP's default wait policy keeps a thread spinning on its core between parallel regions. When a machine has
# more runnable threads than cores (sandbox workers, a judge server, a second rank, a busy CI runner), every
# small forward then waits on descheduled spinners: SmolLM2's 2-token forward took 1.9 s instead of 0.07 s at a
# load of 3.7 on 2 cores (docs/measurements.md). Passive waiting must be chosen before torch loads OpenMP, so
# it is set here, on the package's first import; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_EXPORTS = {
    "StepGroup": "sport_fast.data.step_group",
    "StepStore": "sport_fast.data.store",
    "PackedTree": "sport_fast.tree.pack",
    "pack_step_groups": "sport_fast.tree.pack",
    "branch_logps": "sport_fast.dpo.branch_logps",
    "packed_branch_logps": "sport_fast.dpo.branch_logps",
    "dpo_loss": "sport_fast.dpo.loss",
    "pair_indices": "sport_fast.dpo.pairs",
}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sport_fast' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
