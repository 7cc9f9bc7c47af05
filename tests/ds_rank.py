"""One rank of the 2-rank DeepSpeed test (launched by tests/test_distributed.py through torchrun)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ds_case import case  # noqa: E402
from sport_fast.dpo.distributed import DataParallel  # noqa: E402
from sport_fast.dpo.trainer import train_round  # noqa: E402

if __name__ == "__main__":
    config_json, out = sys.argv[1], Path(sys.argv[2])
    parallel = DataParallel.start(config_json, timeout_min=5)
    model, groups, cfg = case(grad_accum=1)
    summary = train_round(model, groups, cfg, seed=3, parallel=parallel)
    state = {k: v.tolist() for k, v in model.state_dict().items()}
    (out / f"rank{parallel.rank}.json").write_text(json.dumps({"summary": summary, "state": state}))
