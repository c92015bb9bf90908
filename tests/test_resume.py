"""A run killed mid-training (SIGKILL) and resumed ends with the same metrics as an uninterrupted
run; the same config and seed give identical metrics in two separate processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--config",
    str(ROOT / "configs" / "synthetic.yaml"),
    "--seeds",
    "0",
    "1",
    "--no-progress",
    "--set",
    "data.options={n_samples: 600, n_modalities: 3, n_classes: 3}",
    "--set",
    "model.hidden=32",
    "--set",
    "model.retriever.moe.expert_hidden=32",
    "--set",
    "train.epochs=8",
    "--set",
    "train.warmup_epochs=2",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def train(*extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "moe_retriever", "train", *extra],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    full, again, killed = tmp_path / "full", tmp_path / "again", tmp_path / "killed"
    proc = train(*ARGS, "--out", str(killed))
    # wait until seed 1 has finished at least two epochs, then kill without warning
    state = killed / "seed_1" / "training_state.pt"
    deadline = time.time() + 240
    seen = 0
    while time.time() < deadline and proc.poll() is None:
        if state.is_file():
            seen += 1
            if seen == 2:
                break
            time.sleep(0.3)
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted: " + proc.stdout.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    assert (killed / "seed_0" / "metrics.json").is_file()
    json.loads((killed / "seed_0" / "metrics.json").read_text())  # complete, never half-written

    for out in (full, again):
        p = train(*ARGS, "--out", str(out))
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, log
    resumed = subprocess.run(
        [sys.executable, "-m", "moe_retriever", "train", "--resume", str(killed), "--no-progress"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "seed 0: finished earlier" in resumed.stdout

    def metrics(run: Path) -> dict:
        res = json.loads((run / "results.json").read_text())
        return {k: res["test"][k]["per_seed"] for k in ("accuracy", "macro_f1", "auroc", "auprc")}

    assert metrics(full) == metrics(again), "two processes with the same config and seed differ"
    assert metrics(killed) == metrics(full), "the resumed run differs from the uninterrupted one"
    assert not (killed / "seed_1" / "training_state.pt").exists()


def test_resume_refuses_a_directory_without_a_run(tmp_path, capsys):
    from moe_retriever.cli import main

    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
