"""The warm start (SPORT improves an agent that can already act: T3-Agent, SFT on verified trajectories):
demonstrations as step groups of one candidate each, and the supervised loss on the agent's own turns over
the same tree-packed forward as step-DPO (a trajectory's steps share their context; nothing is computed twice)."""
