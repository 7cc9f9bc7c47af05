"""The run's task sets: the training tasks (the suite, a task file, or synthesised per round) and the
held-out tasks; the rotation that gives each round its share.

The suite is generated into a staging folder and moved into the run directory only once the whole
set-up has succeeded (``TaskSets.place``), so a failed start leaves nothing behind there.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sport_fast.run.errors import SetupError


@dataclass
class TaskSets:
    cfg: object                          # the run's Config
    train: list
    heldout: list
    staged_suite: Path | None = None     # a freshly generated suite, not yet in the run directory

    def place(self, root: Path) -> None:
        """Move a staged suite into ``root/suite`` and read the tasks back from there."""
        if self.staged_suite is None:
            return
        target = root / "suite"
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(self.staged_suite), str(target))
        self.train, self.heldout = _read_sets(self.cfg, target)
        self.staged_suite = None


def load_task_sets(cfg, root: Path) -> TaskSets:
    """The tasks as ``cfg`` (a ``Config``) says; a suite not yet in ``root/suite`` is generated, staged."""
    t, suite, staged = cfg.tasks, None, None
    if t.source == "suite" or not t.heldout_file:
        from sport_fast.tasks.suite import generate_suite
        suite = root / "suite"
        if not (suite / "heldout.jsonl").exists():
            staged = suite = Path(tempfile.mkdtemp(prefix="sport_fast_suite_"))
            generate_suite(suite, t.n_train, t.n_heldout, t.suite_seed)
    train, heldout = _read_sets(cfg, suite)
    return TaskSets(cfg, train, heldout, staged)


def _read_sets(cfg, suite: Path | None) -> tuple[list, list]:
    from sport_fast.tasks.task import load_tasks
    t = cfg.tasks
    try:
        heldout = load_tasks(t.heldout_file) if t.heldout_file else load_tasks(suite / "heldout.jsonl")
        train = {"file": lambda: load_tasks(t.train_file), "suite": lambda: load_tasks(suite / "train.jsonl"),
                 "synth": lambda: []}[t.source]()  # synth: written per round
    except (OSError, ValueError) as err:
        raise SetupError(str(err)) from None
    for task in train + heldout:
        _check_files(task)
    return train, heldout


def _check_files(task) -> None:
    """Every image a task names must open: a corrupt one is named here, not deep in a sandbox run."""
    from sport_fast.tasks.task import image_problem
    for name, path in task.files.items():
        problem = image_problem(path)
        if problem:
            raise SetupError(f"task {task.id}: image {name}: {problem}")


def rotation(tasks: list, per_round: int, round_: int) -> list:
    """A fixed rotation through the task list: round r takes the next ``per_round`` tasks."""
    if not tasks:
        return []
    start = (round_ * per_round) % len(tasks)
    return [tasks[(start + i) % len(tasks)] for i in range(min(per_round, len(tasks)))]
