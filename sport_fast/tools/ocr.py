"""OCR through the Tesseract command-line program, when it is installed (``make`` installs it where it can)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile

from PIL import Image


def ocr(path: str, box: list[int] | None = None) -> str:
    exe = shutil.which("tesseract")
    if exe is None:
        raise RuntimeError("ocr: Tesseract is not installed on this machine (Debian/Ubuntu: apt-get install "
                           "tesseract-ocr)")
    with Image.open(path) as im, tempfile.NamedTemporaryFile(suffix=".png", dir=".") as tmp:
        im = im.convert("RGB").crop(tuple(box)) if box else im.convert("RGB")
        im.resize((im.width * 2, im.height * 2), Image.LANCZOS).save(tmp.name)  # Tesseract likes large glyphs
        done = subprocess.run([exe, tmp.name, "stdout", "--psm", "6"], capture_output=True, text=True,
                              timeout=60, env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise RuntimeError(f"ocr: tesseract failed: {done.stderr.strip()[-300:]}")
    return "\n".join(line.rstrip() for line in done.stdout.splitlines() if line.strip())
