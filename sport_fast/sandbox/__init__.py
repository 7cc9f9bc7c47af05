"""Stage 3a, execution: a fresh isolated child process per candidate (own uid, no network, private tmp,
rlimits), its I/O pump and self-test."""
