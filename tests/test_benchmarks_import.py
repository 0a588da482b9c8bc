"""The benchmark scripts stay in step with the package: each one's imports resolve (run as a module
body, not as a program, so nothing is measured). A renamed function otherwise breaks them unseen,
since the suite never runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_benchmark_script_imports():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert scripts
    code = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='benchmark_import_check')\n"
    done = subprocess.run([sys.executable, "-c", code, *map(str, scripts)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
