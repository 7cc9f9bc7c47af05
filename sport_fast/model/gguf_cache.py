"""The embedded default's GGUF, converted once: transformers de-quantises SmolLM2's GGUF and builds its tokenizer
from the GGUF vocabulary on every load (10-30 s on 2 cores), while the same weights and tokenizer saved as a
Hugging Face folder load in under a second. The first load writes that folder; later loads read it.

The folder is keyed by the GGUF file's content and the transformers version (the conversion is theirs), lives
under ``$SPORT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/sport_fast`` or ``~/.cache/sport_fast``), is written to a
temporary name and renamed into place whole (two processes may race; one wins, nothing torn is ever read), and
holds the de-quantised float32 weights: loading it gives bit-identical parameters and tokens (tested). A cache
that cannot be written (a read-only home) is one warning line; the load goes on from the GGUF.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

MARK = "COMPLETE"


def cache_root() -> Path:
    explicit = os.environ.get("SPORT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sport_fast"


def converted_folder(gguf: Path) -> Path:
    """Where ``gguf``'s conversion lives (whether or not it is there yet)."""
    import transformers
    stat = gguf.stat()
    return cache_root() / f"{gguf.stem}-{_digest(str(gguf), stat.st_size, stat.st_mtime_ns)}-transformers" \
                          f"{transformers.__version__}"


@functools.lru_cache(maxsize=4)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """The file's content hash, read once per process (and again only if the file changed)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def cached(gguf: Path) -> Path | None:
    """The converted folder of ``gguf`` if a complete one exists."""
    folder = converted_folder(gguf)
    return folder if (folder / MARK).exists() else None


def save_converted(model, tokenizer, gguf: Path) -> None:
    """Write ``model`` (de-quantised from ``gguf``, float32) and ``tokenizer`` as ``gguf``'s converted folder."""
    final = converted_folder(gguf)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache (SPORT_CACHE_DIR) from other users
        _write(model, tokenizer, tmp)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first: its folder is the same conversion
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        print(f"sport_fast: could not cache the converted SmolLM2 under {final.parent} ({err}); it will be "
              f"converted from its GGUF at every load (set SPORT_CACHE_DIR to a writable folder)", file=sys.stderr)


def _write(model, tokenizer, folder: Path) -> None:
    """The weights are plain float32 tensors once de-quantised; transformers still marks the model as quantised
    and refuses to save it, so the marks are dropped for the save and put back."""
    marks = getattr(model.config, "quantization_config", None)
    quantizer = getattr(model, "hf_quantizer", None)
    model.config.quantization_config, model.hf_quantizer = None, None
    try:
        model.save_pretrained(folder)
    finally:
        model.config.quantization_config, model.hf_quantizer = marks, quantizer
    tokenizer.save_pretrained(folder)
    (folder / MARK).write_text("")
