"""One rank of the sharded exploration test (tests/run/test_sharded_explore.py launches it under torchrun):
the round's exploration and the held-out evaluation through the loop's own phases, on the tiny agent."""
import json
import os
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))

from tiny_agent import tiny_config, tiny_run_parts  # noqa: E402
from tiny_models import step_tasks  # noqa: E402

from sport_fast.agent.prompt import system_prompt, user_turn  # noqa: E402
from sport_fast.dpo.distributed import DataParallel  # noqa: E402
from sport_fast.run import phases  # noqa: E402
from sport_fast.run.run_dir import RunDir  # noqa: E402
from sport_fast.run.work import work_loop  # noqa: E402

TASKS, HELDOUT = step_tasks(8), step_tasks(6, "h", first=70)


def noting_starts(run, path: Path) -> None:
    """Append the id of every task whose trajectory the sampler starts to ``path``."""
    ids = {zlib.crc32(str(run.chat.prompt_ids(system_prompt(run.tools), user_turn(t))).encode()): t.id
           for t in TASKS + HELDOUT}
    start = run.sampler.start

    def noted(context_ids, images=()):
        with open(path, "a") as f:
            f.write(ids[zlib.crc32(str(list(context_ids)).encode())] + "\n")
        return start(context_ids, images)
    run.sampler.start = noted


if __name__ == "__main__":
    ds_json, out, judge_url = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if os.environ.get("KILL_RANK") == os.environ.get("RANK"):
        os.environ["SPORT_KILL_AT"] = "explore.batch_written:1"  # this rank dies after its first batch
    parallel = DataParallel.start(ds_json, timeout_min=3)
    run = tiny_run_parts(tiny_config(out), judge_url, parallel)
    noting_starts(run, out / f"starts_rank{parallel.rank}.txt")
    parallel.agree(None)
    if not parallel.main:
        work_loop(run)
        sys.exit(0)
    run.dir, run.tasks = RunDir(out, "name: sharded exploration test\n"), SimpleNamespace(heldout=HELDOUT)
    try:
        phases.explore_round(run, 0, run.dir.round_dir(0), TASKS, seed=11)
        phases.evaluate_heldout(run, "initial", out)
    finally:
        parallel.send(None)
    (out / "done.json").write_text(json.dumps(run.dir.manifest))
