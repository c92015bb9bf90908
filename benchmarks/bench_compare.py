"""(j) Wall time of one comparison run serially, with ``--jobs 2`` and on a two-worker Dask cluster.

One small study (two synthetic datasets, ``configs/synthetic.yaml`` at p = 0.3 and 0.6, x three
methods, zero, mean and moe_retriever, x 5-fold cross-validation: 30 cells) runs three times,
each a fresh ``moe-retriever compare`` process on a fresh ``--out``, with one torch thread per
worker: serially, with ``--jobs 2`` (worker processes started with "spawn"), and with
``--cluster`` on a ``LocalCluster(processes=True, n_workers=2, threads_per_worker=1)`` started
beforehand (when Dask is installed; its start-up is not timed: ``--cluster`` is for a running
scheduler). The wall time
includes each command's start-up, the workers' start-up and data loading, and writing the report.
The results of the three runs are checked to be identical (timing fields excepted).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ROOT, SYNTHETIC, base_parser, finish, start, table  # noqa: E402

METHODS = ["zero", "mean", "moe_retriever"]
# configs/synthetic.yaml as it is (900 samples, 4 modalities, 12 epochs): a cell of a few CPU
# seconds, as in the built-in studies, against the seconds the workers take to start
OVERRIDES: list[str] = []
TIMING = {"cpu_seconds", "wall_seconds", "train_seconds", "epoch_seconds", "epoch_seconds_median", "seconds"}


def study(path: Path, smoke: bool, quick: bool) -> Path:
    overrides = common.SMOKE_OVERRIDES + ["train.epochs=1"] if smoke else OVERRIDES
    if quick and not smoke:
        overrides = [*overrides, "train.epochs=3"]
    spec = {
        "name": "bench_compare",
        "seeds": [0],
        "overrides": overrides,
        "protocol": {"kind": "cv", "folds": 2 if smoke else 5, "repeats": 1},
        "studies": [
            {
                "title": "benchmark",
                "methods": METHODS,
                "datasets": [
                    {"config": str(SYNTHETIC), "label": f"p={p}", "overrides": [f"data.missing.p={p}"]}
                    for p in (0.3, 0.6)
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def timed_compare(config: Path, out: Path, threads: int, extra: list[str]) -> tuple[float, Any]:
    argv = [sys.executable, "-m", "moe_retriever", "compare", "--config", str(config), "--out", str(out)]
    argv += ["--device", "cpu", "--threads", str(threads), "--no-progress", *extra]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    results = json.loads((out / "results.json").read_text())
    del results["date"], results["machine"]
    return wall, without_timing(results)


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    start(args)
    try:
        from dask.distributed import LocalCluster
    except ImportError:
        LocalCluster = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = study(root / "study.yaml", args.smoke, args.quick)
        n_cells = len(METHODS) * 2 * (2 if args.smoke else 5)
        runs: dict[str, tuple[float, Any]] = {}
        runs["serial"] = timed_compare(config, root / "serial", args.threads, [])
        runs["--jobs 2"] = timed_compare(config, root / "jobs", args.threads, ["--jobs", "2"])
        if LocalCluster is not None:
            with LocalCluster(processes=True, n_workers=2, threads_per_worker=1) as cluster:
                runs["--cluster (2 Dask workers)"] = timed_compare(
                    config, root / "dask", args.threads, ["--cluster", cluster.scheduler_address]
                )
    serial, reference = runs["serial"]
    rows = [
        [name, f"{wall:.1f}", f"{serial / wall:.2f}", "yes" if results == reference else "**no**"]
        for name, (wall, results) in runs.items()
    ]
    body = (
        f"One study: 2 datasets x {len(METHODS)} methods x {2 if args.smoke else 5}-fold cv = "
        f"{n_cells} cells, {args.threads} torch thread(s) per worker; wall seconds of the whole "
        "command (start-up, workers, data, report).\n\n"
        + table(["run", "wall s", "speed-up vs serial", "results identical"], rows)
        + ("" if LocalCluster is not None else "\n\nDask is not installed: no cluster run.")
        + "\n"
    )
    finish(args, "(j) A comparison serially, in worker processes and on a Dask cluster", body)
    if any(results != reference for _, results in runs.values()):
        raise SystemExit("the runs' results differ")


if __name__ == "__main__":
    main()
