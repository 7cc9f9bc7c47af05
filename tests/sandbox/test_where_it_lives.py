"""The sandbox works wherever the package lives: the child runs the very package its parent imported, and
what it needs from the masked trees (/tmp, the homes) is bound back read-only, nothing else of them."""
import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers

pytestmark = pytest.mark.skipif(not all(available_layers()[k] for k in REQUIRED_LAYERS),
                                reason="binding back under the masks is the root mode's (the user mode has tests of its own)")
PACKAGE = Path(__file__).resolve().parents[2] / "sport_fast"
RUN = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import sport_fast
    from sport_fast.sandbox.sandbox import Sandbox
    from sport_fast.tools import default_registry
    r = Sandbox(timeout_s=30, tools=default_registry()).run(
        "import os, sport_fast\\nprint(image_size('pic.png'), sport_fast.__file__)\\n"
        "print(sorted(os.listdir(os.path.dirname(os.path.dirname(sport_fast.__file__)))))",
        files={"pic.png": sys.argv[2]})
    print(json.dumps({"parent": sport_fast.__file__, "stdout": r.stdout, "error": r.error}))
""")


def copy_package_to(root: Path) -> Path:
    """The package (without its compiled extension) as a checkout at ``root`` would hold it, plus a file
    beside it that the run must not see."""
    root.mkdir(parents=True)
    shutil.copytree(PACKAGE, root / "sport_fast", ignore=shutil.ignore_patterns("__pycache__", "*.so", "kernels"))
    (root / "secret.txt").write_text("not for the sandbox")
    return root


@pytest.mark.parametrize("where", ["/tmp/sport_fast_{id}/checkout", "/tmp/sport fast {id}/with space",
                                   "/root/sport_fast_{id}"])
def test_a_checkout_under_a_masked_tree_runs_tools_and_shows_only_the_package(where, tmp_path):
    from PIL import Image
    root = Path(where.format(id=uuid.uuid4().hex[:8]))
    try:
        copy_package_to(root)
        Image.new("RGB", (7, 5)).save(tmp_path / "pic.png")
        done = subprocess.run([sys.executable, "-c", RUN, str(root), str(tmp_path / "pic.png")],
                              capture_output=True, text=True, timeout=120, cwd="/")
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["error"] is None, report
        assert report["parent"].startswith(str(root)), report
        sizes, listing = report["stdout"].splitlines()[0], report["stdout"].splitlines()[1]
        assert "'width': 7" in sizes and str(root / "sport_fast") in sizes, f"the child ran another package: {sizes}"
        assert listing == "['sport_fast']", f"the run saw more of the checkout than the package: {listing}"
    finally:
        shutil.rmtree(Path(*root.parts[:3]), ignore_errors=True)



SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from sport_fast.sandbox.sandbox import Sandbox
    from sport_fast.tools import default_registry
    probe = "import os, sys\\nprint(image_size('pic.png'))\\nprint([os.path.exists(p) for p in sys.argv[1:]])"
    r = Sandbox(timeout_s=30, tools=default_registry()).run(
        probe.replace("sys.argv[1:]", repr(sys.argv[3:])), files={"pic.png": sys.argv[2]})
    print(json.dumps({"stdout": r.stdout, "error": r.error}))
""")


@pytest.mark.parametrize("folder", ["/tmp", "/root"])
def test_a_script_run_from_the_top_of_a_masked_tree_neither_breaks_the_sandbox_nor_unmasks_it(folder, tmp_path):
    """``python /tmp/script.py`` puts /tmp itself on sys.path: it is not bound back (that once made the run's
    work folder read-only, and would have shown every file there)."""
    from PIL import Image
    tag = uuid.uuid4().hex[:8]
    script, marker = Path(folder) / f"sport_fast_script_{tag}.py", Path(folder) / f"sport_fast_marker_{tag}.txt"
    Image.new("RGB", (7, 5)).save(tmp_path / "pic.png")
    script.write_text(SCRIPT)
    marker.write_text("not for the sandbox")
    try:
        done = subprocess.run([sys.executable, str(script), str(PACKAGE.parent), str(tmp_path / "pic.png"),
                               str(marker), str(script)], capture_output=True, text=True, timeout=120, cwd="/")
    finally:
        script.unlink()
        marker.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["error"] is None, report
    sizes, seen = report["stdout"].splitlines()
    assert "'width': 7" in sizes and seen == "[False, False]", report["stdout"]
