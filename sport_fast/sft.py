"""``python -m sport_fast.sft [--config default] [key=value ...] --out FOLDER``: the warm start on its own.

Supervised fine-tuning on verified demonstrations (``sft`` section: the suite's reference programs of the
chosen families, or a file of trajectories), in the run directory of the recipe (``out_dir``: resumable like
any run), then the warm-started model written as a Hugging Face folder (LoRA merged into the weights) with
its tokenizer: ``python -m sport_fast.train model.path=FOLDER`` then starts SPORT from it, on one process or
under DeepSpeed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sport_fast.config import ConfigError, dump_config, load_config, reread_config


def main(argv: list[str] | None = None) -> int:
    from sport_fast.model.loader import ModelLoadError
    from sport_fast.run.errors import ResumeError, SetupError
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config or "default", [*args.overrides, "sft.enabled=true"])
        return run(cfg, Path(args.out))
    except (ConfigError, SetupError, ResumeError, ModelLoadError) as err:
        print(f"sport_fast.sft: {err}", file=sys.stderr)
        return 2


def run(cfg, out: Path) -> int:
    import torch

    from sport_fast.run.setup import build_run
    from sport_fast.run.warm_start import warm_start
    torch.manual_seed(cfg.seed)
    parts = build_run(cfg, dump_config(cfg), reread=reread_config)
    print(f"sport_fast.sft: {parts.sandbox_report}", flush=True)
    warm_start(parts)
    model = parts.model.merge_and_unload() if hasattr(parts.model, "merge_and_unload") else parts.model
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    parts.tokenizer.save_pretrained(out)
    parts.stop_judge()
    print(f"sport_fast.sft: the warm-started model is in {out}", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sport_fast.sft", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="a recipe (path or name; default: default)")
    p.add_argument("--out", required=True, help="the folder the warm-started model is written to")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.families=count_colour,table_best")
    return p


if __name__ == "__main__":
    sys.exit(main())
