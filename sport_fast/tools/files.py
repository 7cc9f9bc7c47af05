"""Read a task file: text, CSV (a list of row dicts), JSON (parsed) or PDF (its text, via pypdf)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

MAX_CHARS = 20_000


def read_file(path: str) -> str | list | dict:
    """contents of a file: text as a string, CSV as a list of row dicts, JSON parsed, PDF as its text

    Args:
        path: the file
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [dict(row) for row in csv.DictReader(f)]
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if suffix == ".pdf":
        return _pdf_text(path)
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + f"\n...[{len(text) - MAX_CHARS} more characters]"


def _pdf_text(path: str) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise RuntimeError("read_file: reading PDF needs the pypdf package (pip install pypdf)") from None
    return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)[:MAX_CHARS]
