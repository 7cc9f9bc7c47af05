"""The run directory: resolved config, a manifest of completed phases per round, atomic checkpoints.

Layout::

    config.yaml            the resolved config (a resumed run must resolve to the same one, or to it with
                           more rounds: the run goes on)
    manifest.json          {"phases": {"<round>": {"<phase>": {...summary...}}}}, rewritten atomically
    round_<r>/             that round's records (trajectories.jsonl, store/, eval/)
    checkpoints/round_<r>/ weights.safetensors + meta.json + COMPLETE (written last)
    metrics.jsonl, tensorboard/, rounds.png

A phase counts as done only once its manifest entry exists, and the entry is written after everything
the phase produced is on disk. Checkpoints are written into a temporary folder, fsynced, marked
``COMPLETE`` and renamed into place: a reader sees a whole checkpoint or none. Weights are safetensors,
state is JSON: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import yaml

from sport_fast.run.durable import atomic_write, atomic_write_json, fsync_dir
from sport_fast.run.crash_points import crash_point
from sport_fast.run.errors import ResumeError


def config_changes(saved: Path, config_yaml: str, reread) -> dict[str, tuple]:
    """Dotted key -> (saved value, new value) for every key where the run's ``config.yaml`` and ``config_yaml``
    differ. A run written before a release added config keys is read by this release (``reread``: the new keys
    at their defaults), so those keys are no change."""
    text = saved.read_text()
    if text == config_yaml:
        return {}
    if reread is not None:
        text = reread(saved) or text
    old, new = _flat(yaml.safe_load(text) or {}), _flat(yaml.safe_load(config_yaml) or {})
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def _describe(changes: dict) -> str:
    shown = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changes.items())[:3]]
    return "; ".join(shown) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")


def _more_rounds(changes: dict) -> tuple[int, int] | None:
    """A resumed run may only be given more rounds: nothing before them depends on how many there are."""
    if set(changes) != {"rounds"}:
        return None
    old, new = changes["rounds"]
    return (old, new) if isinstance(old, int) and isinstance(new, int) and new > old else None


class RunDir:
    def __init__(self, root: str | Path, config_yaml: str, backends: dict | None = None, reread=None):
        """Open (or start) the run in ``root``; a resumed run must have the same resolved config and, when
        given, the same resolved ``backends`` (``sport_fast.backends``): either would change its data.
        ``reread(path)``: a saved config file as this release resolves it (``config.reread_config``)."""
        self.root = Path(root)
        saved = self.root / "config.yaml"
        changes = config_changes(saved, config_yaml, reread) if saved.exists() else {}
        self.extended = _more_rounds(changes)  # (saved rounds, new rounds), or None
        if changes and self.extended is None:
            raise ResumeError(f"run directory {self.root} holds a run with a different config ({_describe(changes)}); "
                              f"resume it with the same command, or choose another out_dir")
        self.manifest_path = self.root / "manifest.json"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {"phases": {}}
        _check_backends(self.root, self.manifest.get("backends"), backends)
        self.root.mkdir(parents=True, exist_ok=True)
        if not saved.exists() or self.extended:
            atomic_write(saved, config_yaml)
        if backends is not None and "backends" not in self.manifest:
            self.manifest["backends"] = backends
            atomic_write_json(self.manifest_path, self.manifest)

    @property
    def resumed(self) -> bool:
        return bool(self.manifest["phases"])

    def done(self, round_: int | str, phase: str) -> dict | None:
        return self.manifest["phases"].get(str(round_), {}).get(phase)

    def mark(self, round_: int | str, phase: str, summary: dict) -> None:
        self.manifest["phases"].setdefault(str(round_), {})[phase] = summary
        atomic_write_json(self.manifest_path, self.manifest)

    def round_dir(self, round_: int) -> Path:
        path = self.root / f"round_{round_}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- checkpoints -------------------------------------------------------------------------------
    def checkpoint_dir(self, round_: int | str) -> Path:
        """``checkpoints/round_<r>``; the warm start's is ``checkpoints/sft``."""
        return self.root / "checkpoints" / ("sft" if round_ == "sft" else f"round_{round_}")

    def save_checkpoint(self, round_: int | str, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
        from safetensors.torch import save_file
        final = self.checkpoint_dir(round_)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "weights.safetensors"))
        with open(tmp / "weights.safetensors", "rb+") as f:
            os.fsync(f.fileno())
        crash_point("checkpoint.weights_written")
        atomic_write_json(tmp / "meta.json", meta)
        atomic_write(tmp / "COMPLETE", "ok\n")
        if final.exists():  # an earlier attempt of this round finished writing but was never marked done
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return final

    def load_checkpoint(self, round_: int | str) -> dict[str, torch.Tensor]:
        return read_checkpoint(self.checkpoint_dir(round_))


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a complete checkpoint folder (``COMPLETE`` present); else FileNotFoundError."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / "COMPLETE").exists():
        raise FileNotFoundError(f"checkpoint {path} is missing or incomplete")
    return load_file(str(path / "weights.safetensors"))


def find_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, the run directory holding it or None) for a checkpoint folder or a run directory
    (its last complete round)."""
    path = Path(path)
    if (path / "COMPLETE").exists():
        run = path.parent.parent if path.parent.name == "checkpoints" else None
        return path, run if run is not None and (run / "config.yaml").exists() else None
    done = sorted((p for p in (path / "checkpoints").glob("round_*") if (p / "COMPLETE").exists()),
                  key=lambda p: int(p.name.split("_")[1]))
    done = done or [p for p in [path / "checkpoints" / "sft"] if (p / "COMPLETE").exists()]
    if not done:
        raise FileNotFoundError(f"{path} is neither a complete checkpoint nor a run directory with one")
    return done[-1], path


def _check_backends(root: Path, recorded: dict | None, now: dict | None) -> None:
    if recorded is None or now is None or recorded == now:
        return
    differ = ", ".join(f"{k} {recorded.get(k)} -> {now.get(k)}" for k in sorted(set(recorded) | set(now))
                       if recorded.get(k) != now.get(k))
    raise ResumeError(f"run directory {root} was run with other backends ({differ}); its data would differ: set "
                      f"them in the config's backends section to resume, or choose another out_dir")
