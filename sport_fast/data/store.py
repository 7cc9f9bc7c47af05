"""StepStore: an append-only, crash-safe JSON-lines store of StepGroups, with images stored once.

Layout of a store directory::

    groups.jsonl       one record per line: {"kind": "group", "hash": ..., "group": {...}}
                       or {"kind": "ref_logps", "hash": ..., "values": [...]}  (added later, never rewritten)
    images/<sha256><ext>

Every append is one ``write`` of a whole line followed by ``fsync``, so a crash can only leave a torn
*last* line. Opening the store repairs it: a last line that parses is completed with its newline, one that
does not is cut off (and reported). Any other unreadable line is an error naming file and line: nothing is
silently dropped. Groups are deduplicated by ``StepGroup.content_hash``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sport_fast.run.durable import append_jsonl, atomic_write, read_jsonl, repair_torn_tail
from sport_fast.data.step_group import StepGroup

_GROUPS = "groups.jsonl"


class StepStore:
    """Open (creating if needed) the store in ``directory``; see the module docstring."""

    def __init__(self, directory: str | os.PathLike):
        self.root = Path(directory)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self.path = self.root / _GROUPS
        self.path.touch(exist_ok=True)
        self._groups: dict[str, StepGroup] = {}
        self.duplicates_skipped = 0
        self.repaired_bytes = repair_torn_tail(self.path)
        for lineno, record in read_jsonl(self.path):
            self._apply(record, lineno)

    # -- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self):
        return iter(self._groups.values())

    def __contains__(self, group_hash: str) -> bool:
        return group_hash in self._groups

    def get(self, group_hash: str) -> StepGroup:
        return self._groups[group_hash]

    def image_path(self, image_hash: str) -> Path:
        matches = list((self.root / "images").glob(f"{image_hash}.*"))
        if not matches:
            raise FileNotFoundError(f"StepStore: no image with hash {image_hash} in {self.root / 'images'}")
        return matches[0]

    def image_inputs(self, processor):
        """The store's images as the reference and training passes read them (``model.vision.ImageInputs``)."""
        from PIL import Image

        from sport_fast.model.vision import ImageInputs

        def load(image_hash: str):
            with Image.open(self.image_path(image_hash)) as im:
                return im.convert("RGB")
        return ImageInputs(loader=load, processor=processor)

    # -- writing -------------------------------------------------------------------------------
    def append(self, group: StepGroup) -> bool:
        """Append ``group``; False (and counted) when an identical group is already stored."""
        group.validate()
        missing = [h for h in group.images if not list((self.root / "images").glob(f"{h}.*"))]
        if missing:
            raise ValueError(f"StepStore: group refers to image {missing[0]} that is not in the store")
        h = group.content_hash()
        if h in self._groups:
            self.duplicates_skipped += 1
            return False
        self._write({"kind": "group", "hash": h, "group": group.to_json()})
        self._groups[h] = group
        return True

    def set_ref_logps(self, group_hash: str, values: list[float]) -> None:
        """Record reference log-prob sums for a stored group (appended, never rewritten)."""
        group = self._groups[group_hash]
        record = {"kind": "ref_logps", "hash": group_hash, "values": [float(v) for v in values]}
        self._check_ref(record, group, "set_ref_logps")
        self._write(record)
        group.ref_logps = record["values"]

    def put_image(self, data: bytes, suffix: str = ".png") -> str:
        """Store image bytes once, by content hash; returns the hash."""
        h = hashlib.sha256(data).hexdigest()
        target = self.root / "images" / f"{h}{suffix}"
        if not list((self.root / "images").glob(f"{h}.*")):
            atomic_write(target, data)
        return h

    # -- internals -----------------------------------------------------------------------------
    def _write(self, record: dict) -> None:
        append_jsonl(self.path, record)

    def _apply(self, record: dict, lineno: int) -> None:
        where = f"{self.path}:{lineno}"
        kind, h = record.get("kind"), record.get("hash")
        if kind == "group":
            group = StepGroup.from_json(record["group"])
            if group.content_hash() != h:
                raise ValueError(f"{where}: stored hash does not match the group's content")
            if h in self._groups:
                self.duplicates_skipped += 1
            else:
                self._groups[h] = group
        elif kind == "ref_logps":
            if h not in self._groups:
                raise ValueError(f"{where}: ref_logps for unknown group {h}")
            self._check_ref(record, self._groups[h], where)
            self._groups[h].ref_logps = [float(v) for v in record["values"]]
        else:
            raise ValueError(f"{where}: unknown record kind {kind!r}")

    @staticmethod
    def _check_ref(record: dict, group: StepGroup, where: str) -> None:
        if len(record["values"]) != group.num_candidates:
            raise ValueError(f"{where}: {len(record['values'])} ref_logps for {group.num_candidates} candidates")
