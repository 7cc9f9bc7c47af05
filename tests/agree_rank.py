"""One rank of the set-up agreement test (tests/dpo/test_distributed.py): rank 1's set-up fails."""
import sys

from sport_fast.dpo.distributed import DataParallel
from sport_fast.run.errors import SetupError
from sport_fast.run.setup import agreed


def build(rank: int):
    if rank == 1:
        raise SetupError("no sandbox on this rank")
    return "parts"


if __name__ == "__main__":
    parallel = DataParallel.start(sys.argv[1], timeout_min=2)
    try:
        agreed(parallel, lambda: build(parallel.rank))
    except Exception as err:  # noqa: BLE001 - what train.main prints
        print(f"rank {parallel.rank} stopped: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)
    parallel.send({"kind": "never"})  # unreachable: nothing is sent when a rank failed
