"""Stage 3c, step verification: the judge picks the best candidate that ran, or abstains; per-round counters."""
