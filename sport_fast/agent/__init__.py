"""Stage 3b, the agent: K candidates per step, parsed, executed on replayed state, one chosen, the observation
fed back; its records, and evaluation (AnsAcc, ToolAcc, CodeExec)."""
