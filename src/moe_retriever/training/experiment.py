"""Multi-seed experiments: split, simulate missingness, train, test, write the run directory.

:func:`run_experiment` trains every partition of the config's protocol (:mod:`.fitting`), writes
the run directory (its file format: :mod:`.run_files`) and the summary over the partitions;
:func:`evaluate_run` tests a run's saved models again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig, save_config
from ..data.bank import training_bank
from ..data.dataset import MultimodalDataset
from ..data.missingness import missingness_summary
from ..data.partitions import (
    Partition,
    bank_only_usage,
    partition_from_meta,
    partition_split,
    prepare_partition,
    protocol_partitions,
)
from ..data.sources import load_dataset
from ..errors import InputNotFoundError
from ..files import atomic_write_text
from ..task_config import resolve_task
from .distributed import SINGLE_PROCESS, DistContext
from .distributed import setup as setup_distributed
from .distributed import teardown as teardown_distributed
from .endpoints import TaskHead
from .fitting import train_seed
from .markdown import results_markdown
from .metrics import aggregate
from .run_files import (
    CHECKPOINT,
    SEED_METRICS,
    TRAINING_STATE,
    load_seed_checkpoint,
    partition_checkpoints,
    remove_run_bank,
)
from .run_log import ExperimentLogger
from .summary import summarize
from .trainer import Trainer, resolve_device


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    dataset: MultimodalDataset | None = None,
    log=print,
    resume: bool = False,
    on_epoch=None,
) -> dict[str, Any]:
    """Train and test ``cfg.method`` over ``cfg.train.seeds`` (every partition of
    ``cfg.protocol``: one split per seed, or the folds of each repeat); write the run directory.

    Training state is saved after every epoch; with ``resume`` the seeds whose metrics exist are
    read back and an interrupted seed continues from its last finished epoch.
    ``on_epoch(i, epoch, entry)`` follows every training epoch of the ``i``-th seed (partition).

    Under torchrun (``WORLD_SIZE`` > 1) every process trains data-parallel (see
    ``training/distributed.py``) and only rank 0 logs and writes.
    """
    dist_ctx, dist_device = setup_distributed(cfg.train.device)
    try:
        device = dist_device if dist_device is not None else resolve_device(cfg.train.device)
        return run_seeds(
            cfg,
            dataset if dataset is not None else load_dataset(cfg.data),
            Path(out_dir) if out_dir is not None else None,
            device,
            dist_ctx,
            log if dist_ctx.is_main else _silent,
            resume,
            on_epoch,
        )
    finally:
        teardown_distributed(dist_ctx)


def _silent(*args: Any, **kwargs: Any) -> None:
    pass


def run_seeds(
    cfg: ExperimentConfig,
    dataset: MultimodalDataset,
    run_dir: Path | None,
    device: torch.device,
    dist_ctx: DistContext = SINGLE_PROCESS,
    log=print,
    resume: bool = False,
    on_epoch=None,
) -> dict[str, Any]:
    """``train_seed`` for every partition of the protocol (:func:`protocol_partitions`: the seeds
    of ``cfg.train.seeds``, or the folds of each cross-validation repeat), reading back the
    finished ones when ``resume``, then the summary over them. Every rank trains; only the main rank writes
    ``run_dir``."""
    out = run_dir if dist_ctx.is_main else None
    cfg = resolve_task(cfg, dataset.task, log)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log(dataset.describe())
    partitions = protocol_partitions(cfg)
    first, parts = partition_split(cfg, dataset, partitions[0])
    combos = first.combination_counts()
    log(
        f"modality combinations (seed {cfg.train.seeds[0]}): "
        + ", ".join(f"{k}={v}" for k, v in combos.items())
    )
    usage = bank_only_usage(cfg, dataset, partitions[0])
    if usage is not None:
        log(usage)
    if out is not None:
        summary = missingness_summary(first, parts)
        atomic_write_text(
            out / "combinations.json", json.dumps({"seed": cfg.train.seeds[0], **summary}, indent=2)
        )
    runs = []
    t0 = time.perf_counter()
    logger = ExperimentLogger(cfg, out, enabled=dist_ctx.is_main)
    try:
        for i, part in enumerate(partitions):
            runs.append(
                _seed_record(
                    cfg, dataset, part, i, run_dir, out, device, dist_ctx, log, resume, on_epoch, logger
                )
            )
    except BaseException:
        logger.close()
        raise
    results = summarize(cfg, dataset.name, runs, combos)
    results["wall_seconds"] = time.perf_counter() - t0
    results["device"] = str(device)
    results["processes"] = dist_ctx.world_size
    logger.final(results)
    if out is not None:
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))
        atomic_write_text(out / "results.md", results_markdown(results))
    return results


def _seed_record(
    cfg: ExperimentConfig,
    dataset: MultimodalDataset,
    part: Partition,
    i: int,
    run_dir: Path | None,
    out: Path | None,
    device: torch.device,
    dist_ctx: DistContext,
    log,
    resume: bool,
    on_epoch,
    logger: ExperimentLogger,
) -> dict[str, Any]:
    """The ``i``-th partition's record: read back when it finished earlier, else trained now."""
    unit_dir = run_dir / part.name if run_dir is not None else None
    finished = unit_dir / SEED_METRICS if unit_dir is not None else None
    if resume and finished is not None and finished.is_file():
        log(f"{part.label}: finished earlier, results read from {finished}")
        return json.loads(finished.read_text())
    if not resume and unit_dir is not None and dist_ctx.is_main:
        # a fresh run never continues from a state left by an earlier, interrupted one
        (unit_dir / TRAINING_STATE).unlink(missing_ok=True)
        if i == 0 and run_dir is not None:
            # nor refers to the bank file of an earlier run in the same directory
            remove_run_bank(run_dir)

    def unit_on_epoch(epoch: int, entry: dict[str, Any]) -> None:
        logger.epoch(part.name, entry)
        if on_epoch is not None:
            on_epoch(i, epoch, entry)

    r = train_seed(cfg, dataset, part.seed, out, device, dist_ctx, unit_dir, unit_on_epoch, part)
    log(
        f"{part.label}: best epoch {r['best_epoch']}, test "
        + metrics_text(r["test"], dataset.task)
        + f" ({r['train_seconds']:.1f} s)"
    )
    return r


def metrics_text(metrics: dict[str, float], task: str) -> str:
    """``name=value, ...``: classification metrics in %, regression ones in the target's units,
    survival ones as fractions."""
    if task == "classification":
        return ", ".join(f"{k}={100 * v:.2f}" for k, v in metrics.items())
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def evaluate_run(run_dir: str | Path, device: str = "auto", log=print) -> dict[str, Any]:
    """Re-evaluate every seed's (or fold's) saved model on its test split; returns the
    aggregated metrics."""
    run = Path(run_dir)
    paths = list(partition_checkpoints(run).values())
    if not paths:
        raise InputNotFoundError(
            f"{run}: no seed_*/{CHECKPOINT} or fold_s*_k*/{CHECKPOINT} found; is this a run directory?"
        )
    dev = resolve_device(device)
    per_seed, parts = [], []
    dataset = None
    for path in paths:
        loaded = load_seed_checkpoint(path)
        cfg = loaded.cfg
        part = partition_from_meta(loaded.meta)
        dataset = dataset if dataset is not None else load_dataset(cfg.data)
        resolve_task(cfg, dataset.task, None)  # the data must still be of the model's task
        data = prepare_partition(cfg, dataset, part)
        bank = training_bank(data.train, data.bank_only, dev)
        head = TaskHead.from_dict(loaded.meta.get("task_head"), cfg.train)
        trainer = Trainer(
            loaded.model, cfg.train, bank, dev, part.rng_seed, cfg.model.retriever.eval_draws, head=head
        )
        metrics = trainer.evaluate(data.test)
        log(f"{part.label}: " + metrics_text(metrics, head.task))
        per_seed.append(metrics)
        parts.append(part)
    out: dict[str, Any] = {"test": aggregate(per_seed), "partitions": [p.name for p in parts]}
    out["seeds"] = sorted({p.seed for p in parts}) if parts[0].fold is not None else [p.seed for p in parts]
    return out
