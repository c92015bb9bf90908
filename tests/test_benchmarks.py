"""Every benchmark still runs against the library: each script of ``benchmarks/run_all.py`` in its
``--smoke`` mode (tiny sizes, one repeat), in a fresh process as run_all starts it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run_all import BENCHMARKS  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_smoke_run_writes_its_section(name, tmp_path):
    out = tmp_path / f"{name}.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / BENCHMARKS[name]), "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("### (") and "Smoke run" in text
    assert "| " in text  # its table was filled


def test_every_benchmark_script_is_run_by_run_all():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert scripts == set(BENCHMARKS.values())
