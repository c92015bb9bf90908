"""One cell of a comparison, as a worker process runs it: a (dataset, method or preset, partition)
training, or the nested tuning of one, seeded by its config and partition alone, so a cell gives
the same record in whichever process, machine or order it runs.

:func:`run_cell` is what ``compare`` runs in this process, in ``--jobs`` worker processes and on
the workers of a Dask cluster; it reuses a stored record, or claims the cell
(:mod:`.store`), trains it and writes its record. Datasets are loaded once per process
(:func:`cached_dataset`), not once per cell.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ...config import DataConfig, ExperimentConfig, to_dict
from ...data.dataset import MultimodalDataset
from ...data.partitions import Partition
from ...data.sources import load_dataset
from ...files import atomic_write_text
from ...tuning import SpaceSpec, tune_partition
from ..fitting import train_seed
from ..metric_display import PAIRED_BY_TASK, task_of, value_text
from ..metric_display import label as label_of
from ..trainer import resolve_device
from .store import claim_cell, read_record
from .study_config import TuningConfig

# the datasets this process has loaded, by their data config: a worker loads each once
_DATASETS: dict[str, MultimodalDataset] = {}


def cached_dataset(data: DataConfig) -> MultimodalDataset:
    """The dataset of ``data``, loaded once per process."""
    key = json.dumps([data.name, data.path, data.format, data.options, data.trust_pickle], sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(data)
    return _DATASETS[key]


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell (picklable)."""

    cfg: ExperimentConfig
    partition: Partition
    record: Path  # <out>/runs/<key>/<unit>.json
    label: str  # e.g. "p=0.2 | zero | fold_s0_k1 seed 0", for messages
    device: str = "cpu"
    # the nested search's settings and space; None: one training
    tuning: tuple[TuningConfig, SpaceSpec] | None = None
    # torch threads of a worker process; None: leave this process's setting alone
    threads: int | None = None


@dataclass
class CellOutcome:
    """What became of a cell: ``reused`` (its record was stored), ``trained`` (stored now),
    ``failed`` (``message``: the error), ``busy`` (claimed by the live process named in
    ``message``: wait for its record). ``notes``: lines to log (a damaged record)."""

    status: Literal["reused", "trained", "failed", "busy"]
    record: dict[str, Any] | None = None
    message: str = ""
    notes: tuple[str, ...] = ()


def trained_line(label: str, result: dict[str, Any], tuned: bool) -> str:
    """The log line of a cell trained now."""
    t = result["test"]
    task = task_of(t)
    if task == "classification":
        scores = f"acc {100 * t['accuracy']:.2f}, F1 {100 * t['macro_f1']:.2f}"
    else:
        scores = ", ".join(f"{label_of(k)} {value_text(t[k], k)}" for k in PAIRED_BY_TASK[task])
    return f"{label}: {scores} ({result['cpu_seconds']:.1f} CPU s)" + (
        f", tuned in {result['n_trials']} trials" if tuned else ""
    )


def train_cell(task: CellTask) -> dict[str, Any]:
    """Train (or tune) the cell and return its record, timed."""
    dataset = cached_dataset(task.cfg.data)
    device = resolve_device(task.device)
    part = task.partition
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if task.tuning is None:
        result = train_seed(task.cfg, dataset, part.seed, None, device, partition=part)
        result["config"] = to_dict(task.cfg)
    else:
        settings, space = task.tuning
        result = tune_partition(
            task.cfg, dataset, part, space, settings.trials, device, settings.sampler_seed
        )
    result["cpu_seconds"] = time.process_time() - cpu0
    result["wall_seconds"] = time.perf_counter() - wall0
    result.pop("history", None)
    return result


def run_cell(task: CellTask) -> CellOutcome:
    """Reuse the cell's stored record, or claim, train and store it (see :mod:`.store`). Any
    exception of the training is the cell's failure, returned: one failed cell (a diverged
    loss, say) must not stop the rest of the comparison."""
    if task.threads:
        torch.set_num_threads(task.threads)
    record, damaged = read_record(task.record)
    if record is not None:
        return CellOutcome("reused", record)
    claim = claim_cell(task.record)
    if isinstance(claim, str):
        return CellOutcome("busy", message=claim)
    try:
        # finished by another process between the first look and the claim
        record, _ = read_record(task.record)
        if record is not None:
            return CellOutcome("reused", record)
        notes = (damaged,) if damaged else ()
        try:
            result = train_cell(task)
        except Exception as exc:
            return CellOutcome("failed", message=f"{type(exc).__name__}: {exc}", notes=notes)
        text = json.dumps(result, indent=2)
        atomic_write_text(task.record, text)
        # the record as it is read back, so a cell trained now and a reused one aggregate alike
        return CellOutcome(
            "trained", json.loads(text), trained_line(task.label, result, task.tuning is not None), notes
        )
    finally:
        claim.release()
