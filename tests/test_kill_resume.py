"""Kill and resume: ``train`` (holdout and cv), ``compare`` and ``tune`` killed with SIGKILL at a
seeded random point and then continued with their documented resume command end where an
uninterrupted run ends (results and records equal except timing fields; tune: exactly
``--trials`` finished trials).

Each killed run is a subprocess; the uninterrupted reference runs in this process meanwhile (the
same code path, one torch thread as in the subprocess), and a watcher thread kills the subprocess
once its kill point is reached: a unit's training state, or a number of stored records or
finished trials, has appeared, plus a random delay. The seeds fix the kill points; the delays
are short against the work left, and a run that ends before its kill point fails the test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml

from _tiny_run import TINY
from moe_retriever.cli import main
from moe_retriever.config import apply_overrides
from test_tuning import _trial_states, _tune_argv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
# the fields that measure time (they differ between any two runs)
TIMING = {"train_seconds", "epoch_seconds", "epoch_seconds_median", "wall_seconds", "cpu_seconds", "seconds"}
# seconds after the kill point: well below the work left at any kill point (five epochs of a
# seed, two trainings of a comparison, two trials) on a fast machine too
MAX_DELAY = 0.1


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "moe_retriever", *args]


class Kill:
    """Start ``argv`` and SIGKILL it ``delay`` seconds after ``reached()`` first holds; ``wait``
    says whether it was killed while still running (and its output when not)."""

    def __init__(self, argv: list[str], log: Path, reached: Callable[[], bool], delay: float) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.outcome = "not started"
        self.thread = threading.Thread(target=self._watch, args=(reached, delay), daemon=True)
        self.thread.start()

    def _watch(self, reached: Callable[[], bool], delay: float) -> None:
        deadline = time.monotonic() + 240
        while not reached():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.outcome = "ended before its kill point"
                return
            time.sleep(0.02)
        time.sleep(delay)
        if self.proc.poll() is not None:
            self.outcome = "finished before it was killed"
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.outcome = "killed"

    def wait(self) -> None:
        self.thread.join(timeout=300)
        if self.proc.poll() is None:
            self.proc.kill()
        assert self.outcome == "killed", f"{self.outcome}:\n{self.log.read_text()}"


def run_to_the_end(argv: list[str]) -> str:
    done = subprocess.run(argv, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def tiny_config(path: Path) -> Path:
    """The tiny synthetic run of the other tests, with enough epochs to be killed mid-seed."""
    data = apply_overrides({}, [*TINY, "train.epochs=6", "train.warmup_epochs=1"])
    path.write_text(yaml.safe_dump(data))
    return path


def unit_results(run: Path) -> dict[str, Any]:
    """A train run's results.json and every seed's or fold's metrics.json, without timing."""
    out = {"results.json": without_timing(json.loads((run / "results.json").read_text()))}
    for metrics in sorted(run.glob("*/metrics.json")):
        out[metrics.parent.name] = without_timing(json.loads(metrics.read_text()))
    return out


@pytest.mark.parametrize(
    "protocol, units, seed",
    [
        ([], ["seed_0", "seed_1"], 11),
        (
            ["--protocol", "cv", "--folds", "3", "--repeats", "1"],
            ["fold_s0_k0", "fold_s0_k1", "fold_s0_k2"],
            12,
        ),
    ],
    ids=["holdout", "cv"],
)
def test_train_killed_and_resumed_ends_as_an_uninterrupted_run(tmp_path, capsys, protocol, units, seed):
    rng = random.Random(seed)
    config = tiny_config(tmp_path / "tiny.yaml")
    seeds = ["--seeds", "0", "1"] if not protocol else ["--seeds", "0"]
    args = ["train", "--config", str(config), *seeds, *protocol, "--no-progress"]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    # mid-training of a randomly chosen seed or fold (its state is written after every epoch)
    state = killed / rng.choice(units) / "training_state.pt"
    kill = Kill(
        cli(*args, "--out", str(killed)), tmp_path / "killed.log", state.is_file, rng.uniform(0, MAX_DELAY)
    )
    assert main([*args, "--out", str(reference)]) == 0
    capsys.readouterr()
    kill.wait()
    assert not (killed / "results.json").exists()

    run_to_the_end(cli("train", "--resume", str(killed), "--no-progress"))
    assert unit_results(killed) == unit_results(reference)
    assert not list(killed.glob("*/training_state.pt"))


def compare_results(out: Path) -> dict[str, Any]:
    """A comparison's stored records and results.json, without timing, the date and the machine."""
    records = {
        str(p.relative_to(out)): without_timing(json.loads(p.read_text()))
        for p in sorted(out.glob("runs/*/*.json"))
    }
    results = without_timing(json.loads((out / "results.json").read_text()))
    del results["date"], results["machine"]
    return {"records": records, "results.json": results}


def test_compare_killed_and_run_again_ends_as_an_uninterrupted_comparison(tmp_path, capsys):
    from moe_retriever.training.comparison import run_comparison

    rng = random.Random(21)
    tiny = tiny_config(tmp_path / "tiny.yaml")
    methods = ["majority", "zero", "moe_retriever"]
    spec = {
        "name": "kill",
        "seeds": [0],
        "protocol": {"kind": "cv", "folds": 3, "repeats": 1},
        "studies": [{"title": "t", "methods": methods, "datasets": [{"config": str(tiny), "label": "tiny"}]}],
    }
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(spec))
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    command = cli("compare", "--config", str(config), "--out", str(killed), "--device", "cpu")
    # after a random number of the 9 records is stored, at least two trainings before the end
    stored = rng.randint(1, 7)
    kill = Kill(
        command,
        tmp_path / "killed.log",
        lambda: len(list(killed.glob("runs/*/*.json"))) >= stored,
        rng.uniform(0, MAX_DELAY),
    )
    run_comparison(config, reference, "cpu", log=lambda _: None)
    kill.wait()
    assert not (killed / "results.json").exists()
    assert len(list(killed.glob("runs/*/*.json"))) < 3 * len(methods)

    run_to_the_end(command)
    assert compare_results(killed) == compare_results(reference)
    assert len(compare_results(killed)["records"]) == 3 * len(methods)


def test_tune_killed_and_run_again_finishes_exactly_the_requested_trials(tmp_path):
    rng = random.Random(31)
    out, trials = tmp_path / "t", 4
    argv = cli(*_tune_argv(out, trials))
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    # while trial k + 1 runs, for a random k of 0..2 (two or more trials left)
    before = rng.randint(0, 2)

    def reached() -> bool:
        db = out / "study.db"
        if not db.is_file():
            return False
        try:
            states = [t.state for t in _trial_states(db)]
        except Exception:  # the study is being created
            return False
        finished = sum(s in finished_states for s in states)
        return finished >= before and bool(states) and states[-1] == optuna.trial.TrialState.RUNNING

    Kill(argv, tmp_path / "killed.log", reached, rng.uniform(0, MAX_DELAY)).wait()

    run_to_the_end(argv)
    states = [t.state for t in _trial_states(out / "study.db")]
    assert sum(s in finished_states for s in states) == trials
    assert optuna.trial.TrialState.RUNNING not in states
    table = pd.read_csv(out / "trials.csv")
    assert table["state"].isin(["COMPLETE", "PRUNED"]).sum() == trials
    assert (out / "best.yaml").is_file()
