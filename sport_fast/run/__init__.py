"""The loop's machinery: set-up, the phases of a round, exploration as a resumable phase, the run directory
(manifest, atomic checkpoints), crash-safe files, metrics."""
