"""sport_fast: step-wise DPO for self-taught tool-using agents (SPORT), made fast.

Data flows one way: step groups -> packed trees -> log-prob sums -> DPO loss -> weights.
"""
from sport_fast.branch_logps import branch_logps, packed_branch_logps
from sport_fast.dpo import dpo_loss
from sport_fast.pairs import pair_indices
from sport_fast.step_group import StepGroup
from sport_fast.store import StepStore
from sport_fast.tree import PackedTree, pack_step_groups

__all__ = ["StepGroup", "StepStore", "PackedTree", "pack_step_groups", "branch_logps",
           "packed_branch_logps", "dpo_loss", "pair_indices"]
__version__ = "0.1.0"
