"""`compare --jobs N` / `--cluster ADDRESS`: the results of a serial run whatever runs the cells;
the results store under concurrent writers (claims, stale claims of dead processes, a second
`compare` on the same --out); failed cells reported while the others finish; one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from moe_retriever.cli import main
from moe_retriever.training.comparison import cells as comparison_cells
from moe_retriever.training.comparison import run_comparison, store
from moe_retriever.training.comparison.cells import CellTask, run_cell
from moe_retriever.workers import this_worker
from test_kill_resume import ENV, ROOT, cli, compare_results, run_to_the_end, tiny_config

METHODS = ["majority", "zero", "moe_retriever"]
N_CELLS = 3 * len(METHODS)  # 3 folds x 1 repeat per method
# the log line of a cell trained now (a reused one logs nothing)
TRAINED = re.compile(r"^(tiny \| \S+ \| repeat 0 \(seed 0\) fold \d seed 0): acc ", re.M)


def write_config(root: Path) -> Path:
    """The tiny comparison: one synthetic dataset, three methods, 3-fold cv once (9 cells)."""
    tiny = tiny_config(root / "tiny.yaml")
    spec = {
        "name": "parallel",
        "seeds": [0],
        "protocol": {"kind": "cv", "folds": 3, "repeats": 1},
        "studies": [{"title": "t", "methods": METHODS, "datasets": [{"config": str(tiny), "label": "tiny"}]}],
    }
    path = root / "compare.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The serial comparison of the `config` fixture's study, run once for the module."""
    root = tmp_path_factory.mktemp("reference")
    run_comparison(write_config(root), root / "out", "cpu", log=lambda _: None)
    return compare_results(root / "out")


def without_paths(results: dict) -> dict:
    """``compare_results`` without the temporary folder names inside the stored configs."""
    text = json.dumps(results)
    return json.loads(re.sub(r'"[^"]*?/tiny\.yaml"', '"tiny.yaml"', text))


def compare_argv(config: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", "--config", str(config), "--out", str(out), "--device", "cpu", "--threads", "1"] + [
        *extra
    ]


# ---------------------------------------------------------------------------------------- errors


def test_jobs_zero_is_a_one_line_error(config, tmp_path, capsys):
    assert main(compare_argv(config, tmp_path / "out", "--jobs", "0")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "moe-retriever: error: --jobs 0: the number of worker processes must be 1 or more"
    assert not (tmp_path / "out").exists()


def test_cluster_without_dask_names_the_extra(config, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails as when not installed
    assert main(compare_argv(config, tmp_path / "out", "--cluster", "tcp://127.0.0.1:1")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and '"cluster" extra' in err and "pip install" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- failures and records


def test_a_failing_cell_is_reported_and_the_others_finish(config, tmp_path, monkeypatch):
    real = comparison_cells.train_seed

    def diverging(cfg, dataset, seed, *args, partition, **kwargs):
        if cfg.method == "zero" and partition.fold == 1:
            raise RuntimeError("loss is nan at epoch 2")
        return real(cfg, dataset, seed, *args, partition=partition, **kwargs)

    monkeypatch.setattr(comparison_cells, "train_seed", diverging)
    out = tmp_path / "out"
    lines: list[str] = []
    results = run_comparison(config, out, "cpu", log=lines.append)
    cell = "tiny | zero | repeat 0 (seed 0) fold 1 seed 0"
    assert results["errors"] == [f"{cell}: RuntimeError: loss is nan at epoch 2"]
    assert f"{cell}: FAILED (RuntimeError: loss is nan at epoch 2)" in lines
    assert len(list(out.glob("runs/*/*.json"))) == N_CELLS - 1
    rows = {r["entry"]: r for r in results["studies"][0]["tables"][0]["rows"]}
    assert rows["zero"]["partitions"] == ["fold_s0_k0", "fold_s0_k2"]
    assert "## Failed runs" in (out / "results.md").read_text()
    assert not list(out.glob("runs/*/*.claim.*"))  # the failed cell's claim is released

    monkeypatch.setattr(comparison_cells, "train_seed", real)
    again: list[str] = []
    results = run_comparison(config, out, "cpu", log=again.append)
    assert results["errors"] == [] and TRAINED.findall("\n".join(again)) == [cell]


def test_a_damaged_record_is_trained_again_with_a_message(config, tmp_path):
    out = tmp_path / "out"
    run_comparison(config, out, "cpu", log=lambda _: None)
    record = sorted(out.glob("runs/*/fold_s0_k1.json"))[0]
    before = json.loads(record.read_text())
    record.write_text(record.read_text()[:100])
    lines: list[str] = []
    run_comparison(config, out, "cpu", log=lines.append)
    assert any(line.startswith(f"{record}: the stored record is not complete JSON") for line in lines)
    assert len(TRAINED.findall("\n".join(lines))) == 1
    assert {k: v for k, v in json.loads(record.read_text()).items() if "seconds" not in k} == {
        k: v for k, v in before.items() if "seconds" not in k
    }


def test_the_dataset_is_loaded_once_per_process(config, tmp_path, monkeypatch):
    loads = []
    real = comparison_cells.load_dataset
    monkeypatch.setattr(comparison_cells, "_DATASETS", {})
    monkeypatch.setattr(comparison_cells, "load_dataset", lambda d: loads.append(d) or real(d))
    run_comparison(config, tmp_path / "out", "cpu", log=lambda _: None)
    assert len(loads) == 1


# -------------------------------------------------------------------------------------- claims


def _task(tmp_path: Path) -> CellTask:
    from moe_retriever.config import load_config
    from moe_retriever.data.partitions import Partition

    cfg = load_config(tiny_config(tmp_path / "t.yaml"), ["method=zero", "train.epochs=1"])
    return CellTask(cfg, Partition(0), tmp_path / "runs" / "k" / "seed_0.json", "tiny | zero seed 0")


def test_a_cell_claimed_by_a_live_process_is_left_to_it(tmp_path):
    task = _task(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)  # its /proc entry exists
        start = Path(f"/proc/{other.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        worker = f"{socket.gethostname()}:{other.pid}:{start}"
        task.record.parent.mkdir(parents=True)
        claim = task.record.with_name("seed_0.claim.0")
        claim.write_text(json.dumps({"worker": worker, "time": "now"}))
        outcome = run_cell(task)
        assert outcome.status == "busy" and worker in outcome.message
        assert not task.record.exists() and claim.is_file()
    finally:
        other.kill()
        other.wait()
    # its process is gone: the claim is stale, taken over (claim 1), the cell trained and freed
    outcome = run_cell(task)
    assert outcome.status == "trained" and task.record.is_file()
    assert not list(task.record.parent.glob("*.claim.*"))


def test_claims_of_other_hosts_are_stale_after_the_grace_period():
    other = {"worker": "elsewhere.example:123:456"}
    now = time.time()
    assert not store.claim_is_stale(other, now - 10, now)
    assert store.claim_is_stale(other, now - store.GRACE_SECONDS - 1, now)
    assert not store.claim_is_stale({"worker": this_worker()}, now - 10 * store.GRACE_SECONDS, now)


def test_only_one_of_two_claims_on_a_cell_wins(tmp_path):
    record = tmp_path / "k" / "seed_0.json"
    first = store.claim_cell(record)
    assert isinstance(first, store.Claim)
    assert isinstance(store.claim_cell(record), str)  # this process still runs: the cell is busy
    first.release()
    second = store.claim_cell(record)
    assert isinstance(second, store.Claim) and second.path.name == "seed_0.claim.0"
    second.release()


# ------------------------------------------------------------------- worker processes and Dask


@pytest.mark.slow
def test_jobs_give_the_serial_results(config, tmp_path, reference):
    assert main(compare_argv(config, tmp_path / "jobs", "--jobs", "2")) == 0
    assert without_paths(compare_results(tmp_path / "jobs")) == without_paths(reference)


@pytest.mark.slow
def test_a_dask_cluster_gives_the_serial_results(config, tmp_path, reference):
    from dask.distributed import LocalCluster  # the "cluster" extra, part of "test"

    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1) as cluster:
        assert main(compare_argv(config, tmp_path / "dask", "--cluster", cluster.scheduler_address)) == 0
    assert without_paths(compare_results(tmp_path / "dask")) == without_paths(reference)


@pytest.mark.slow
def test_two_compares_on_one_out_train_every_cell_once(config, tmp_path, reference):
    out = tmp_path / "out"
    argv = cli(*compare_argv(config, out))
    procs = [subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    trained = [TRAINED.findall(log) for log in logs]
    assert all(trained), logs  # both trained some cells
    everything = trained[0] + trained[1]
    assert len(everything) == len(set(everything)) == N_CELLS
    assert without_paths(compare_results(out)) == without_paths(reference)


@pytest.mark.slow
def test_a_worker_killed_mid_cell_then_the_command_again_ends_as_a_serial_run(config, tmp_path, reference):
    out = tmp_path / "out"
    argv = cli(*compare_argv(config, out, "--jobs", "2"))
    log = tmp_path / "killed.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    deadline, victim = time.monotonic() + 120, None
    # the second cell to be claimed: a worker mid-training, after one record may be stored
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for claim in out.glob("runs/*/*.claim.*"):
            holder = json.loads(claim.read_text() or "{}")
            if holder.get("pid"):
                victim = holder["pid"], claim
                break
        time.sleep(0.01)
    assert victim is not None, log.read_text()
    os.kill(victim[0], signal.SIGKILL)
    assert proc.wait(timeout=120) == 2, log.read_text()
    assert "run the same command again" in log.read_text()
    assert victim[1].is_file()  # the dead worker's claim stays, stale
    assert len(list(out.glob("runs/*/*.json"))) < N_CELLS

    run_to_the_end(argv)
    assert without_paths(compare_results(out)) == without_paths(reference)
    assert not list(out.glob("runs/*/*.claim.*"))
