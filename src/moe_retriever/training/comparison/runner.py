"""Running a comparison: every (study, dataset, method or preset, partition) cell trained, or read
back from ``<out>/runs/``, then aggregated into tables and written as ``results.json`` and
``results.md``."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...ablations import ABLATIONS
from ...config import ConfigError, ExperimentConfig, ProtocolConfig, to_dict
from ...data.dataset import MultimodalDataset
from ...data.partitions import Partition, partition_split, prepare_partition, protocol_partitions
from ...errors import MoERetrieverError, UsageError
from ...files import atomic_write_text
from ...task_config import select_metric_for
from ...tuning import SpaceSpec
from ..metrics import aggregate, classification_metrics, regression_metrics, survival_metrics
from ..summary import with_intervals
from ..trainer import resolve_device
from .cells import CellOutcome, CellTask, cached_dataset
from .execution import Workers, run_cells
from .keys import run_key, tuned_run_key, unit_key
from .report import comparison_markdown, write_rank_diagrams
from .stats import (
    ALPHA,
    add_paired_comparisons,
    combination_results,
    study_ranks,
    tuning_effect,
    tuning_summary,
)
from .store import read_record
from .study_config import (
    CV_MAX_SAMPLES,
    DEFAULT_CV,
    CompareConfig,
    CompareDataset,
    TuningConfig,
    derived_label,
    entry_config,
    entry_space,
    load_compare_config,
    merged_protocol,
    study_tuning,
)

# a method ties the majority-class predictor when both numbers agree to this precision
TIE_TOLERANCE = 1e-9
# the metrics a tie with the reference predictor is judged on, per task
TIE_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "regression": ("rmse", "mae"),
    "survival": ("c_harrell", "c_uno"),
}


def majority_reference(
    cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int, partition: Partition | None = None
) -> dict[str, Any]:
    """What predicting the training split's majority class (regression: the training mean;
    survival: one risk for every sample) scores on this seed's (or this ``partition``'s) test
    split on the task's :data:`TIE_METRICS`, and a fingerprint of that test split (its sample
    ids and observed masks); survival references also count the test events."""
    data = prepare_partition(cfg, dataset, partition if partition is not None else Partition(seed))
    train, test = data.train, data.test
    out: dict[str, Any]
    if dataset.task == "regression":
        pred = np.full(len(test), float(train.target.double().mean()))
        m = regression_metrics(pred, test.target.numpy())
        out = {k: m[k] for k in TIE_METRICS["regression"]}
    elif dataset.task == "survival":
        outcome = (test.time.numpy(), test.event.numpy(), train.time.numpy(), train.event.numpy())
        m = survival_metrics(np.zeros(len(test)), *outcome)
        out = {k: m[k] for k in TIE_METRICS["survival"]} | {"events": int(test.event.sum())}
    else:
        counts = np.bincount(train.labels.numpy(), minlength=dataset.n_classes)
        probs = np.zeros((len(test), dataset.n_classes))
        probs[:, int(np.argmax(counts))] = 1.0
        m = classification_metrics(probs, test.labels.numpy(), dataset.n_classes)
        out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    digest = hashlib.sha1("\n".join(test.ids).encode())
    digest.update(test.observed.numpy().tobytes())
    return {**out, "test_fingerprint": digest.hexdigest()[:12], "n_test": len(test)}


def ties_majority(test: dict[str, float], ref: dict[str, Any]) -> bool:
    """Whether test metrics equal those of the reference ``ref`` (:func:`majority_reference`) on
    every one of the task's :data:`TIE_METRICS` (classification: accuracy and macro-F1), to
    :data:`TIE_TOLERANCE`; a NaN on both sides counts as equal."""
    names = next(
        (m for t, m in TIE_METRICS.items() if t != "classification" and m[0] in ref),
        TIE_METRICS["classification"],
    )
    return all(
        abs(test[k] - ref[k]) < TIE_TOLERANCE or (np.isnan(test[k]) and np.isnan(ref[k])) for k in names
    )


def machine_description(device: torch.device) -> dict[str, Any]:
    """The CPU, thread counts, platform, Python and torch versions and ``device`` a comparison
    ran on, for the report's header."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }


@dataclass(frozen=True)
class _PlannedRow:
    """One row of a table before anything runs: its entry, config, key and cells by unit."""

    study: int
    dataset: int
    label: str
    entry: str
    cfg: ExperimentConfig
    key: str
    untuned: str | None
    tasks: dict[int | str, CellTask]


class Comparison:
    """Runs (or reuses) every cell of a comparison config and aggregates the results."""

    def __init__(
        self,
        cmp: CompareConfig,
        out_dir: str | Path,
        device: str = "auto",
        cached_only: bool = False,
        log=print,
        workers: Workers | None = None,
        progress: bool | None = False,
    ) -> None:
        self.cmp = cmp
        self.out = Path(out_dir)
        self.device_name = device
        self.device = resolve_device(device)
        self.cached_only = cached_only
        self.log = log
        self.workers = workers or Workers()
        self.progress = progress
        self._references: dict[tuple[str, str], dict[str, Any]] = {}
        self.errors: list[str] = []

    def dataset(self, cfg: ExperimentConfig) -> MultimodalDataset:
        return cached_dataset(cfg.data)

    def reference(
        self, cfg: ExperimentConfig, seed: int, partition: Partition | None = None
    ) -> dict[str, Any]:
        part = partition if partition is not None else Partition(seed)
        key = (json.dumps([to_dict(cfg.data), cfg.protocol.folds], sort_keys=True), part.name)
        if key not in self._references:
            self._references[key] = majority_reference(cfg, self.dataset(cfg), part.seed, part)
        return self._references[key]

    def with_protocol(self, cfg: ExperimentConfig, ds: CompareDataset) -> ExperimentConfig:
        """``cfg`` under the comparison's protocol (see ``CompareConfig.protocol``), with the
        ``protocol...`` overrides of the comparison and of the dataset merged into it."""
        protocol = self.cmp.protocol
        if protocol is None:
            small = len(self.dataset(cfg)) < CV_MAX_SAMPLES
            protocol = (
                replace(DEFAULT_CV, repeats=min(DEFAULT_CV.repeats, len(self.cmp.seeds)))
                if small
                else ProtocolConfig(kind="holdout")
            )
        try:
            merged = merged_protocol(protocol, [*self.cmp.overrides, *ds.overrides])
            return replace(cfg, protocol=merged).validate()
        except ConfigError as exc:
            raise ConfigError(f"{ds.source}: comparison protocol: {exc}") from exc

    def records(self, tasks: list[CellTask]) -> list[dict[str, Any] | None]:
        """The record of every cell (None: failed, or not stored with ``cached_only``): stored
        ones read back, the others run on :attr:`workers`; the failed ones' errors, in the
        study's order, go to :attr:`errors`."""
        records: list[dict[str, Any] | None] = []
        missing = []
        for i, task in enumerate(tasks):
            record, damaged = read_record(task.record, self.cached_only)
            if damaged and self.cached_only:  # else the worker that trains it again says so
                self.log(damaged)
            records.append(record)
            if record is None and not self.cached_only:
                missing.append(i)
        if missing:
            outcomes: dict[int, CellOutcome] = run_cells(
                [tasks[i] for i in missing], self.workers, self.log, self.progress
            )
            for n, i in enumerate(missing):
                records[i] = outcomes[n].record
                if outcomes[n].status == "failed":
                    self.errors.append(f"{tasks[i].label}: {outcomes[n].message}")
        return records

    def cells(self) -> dict[tuple[int, int, str], tuple[ExperimentConfig, SpaceSpec | None, str | None]]:
        """Every (study, dataset, entry) cell's config and, when tuned, its search space (or why
        it is not searched), resolved before anything trains: a bad override or space entry of
        the last study stops the comparison at once, naming the study and dataset."""
        cells = {}
        for i, study in enumerate(self.cmp.studies):
            tuning = study_tuning(self.cmp, study)
            for j, ds in enumerate(study.datasets):
                try:
                    for entry in study.methods:
                        cfg = self.with_protocol(entry_config(self.cmp, ds, entry), ds)
                        space, untuned = entry_space(tuning, entry, cfg) if tuning else (None, None)
                        cells[i, j, entry] = cfg, space, untuned
                except MoERetrieverError as exc:
                    label = ds.label or derived_label(ds)
                    raise type(exc)(f"study {study.title!r}, dataset {label!r}: {exc}") from exc
        return cells

    def plan(self) -> list[_PlannedRow]:
        """Every row of every table, in the study's order, with the cells it is made of."""
        rows = []
        cells = self.cells()
        for i, study in enumerate(self.cmp.studies):
            tuning = study_tuning(self.cmp, study)
            for j, ds in enumerate(study.datasets):
                label = ds.label or derived_label(ds)
                for entry in study.methods:
                    cfg, space, untuned = cells[i, j, entry]
                    searched = (tuning, space) if tuning is not None and space is not None else None
                    key = run_key(cfg) if searched is None else tuned_run_key(cfg, *searched)
                    tasks = {}
                    for p in protocol_partitions(cfg):
                        where = f"{label} | {entry}" + ("" if p.fold is None else f" | {p.label}")
                        tasks[unit_key(p)] = CellTask(
                            cfg,
                            p,
                            self.out / "runs" / key / f"{p.name}.json",
                            f"{where} seed {p.seed}",
                            self.device_name,
                            searched,
                        )
                    rows.append(_PlannedRow(i, j, label, entry, cfg, key, untuned, tasks))
        return rows

    def run(self) -> dict[str, Any]:
        planned = self.plan()
        # a cell shared by two rows (identical configs) runs once
        distinct = list({t.record: t for row in planned for t in row.tasks.values()}.values())
        stored = dict(zip([t.record for t in distinct], self.records(distinct), strict=True))
        studies = []
        first_entry: dict[str, str] = {}
        for i, study in enumerate(self.cmp.studies):
            tables = []
            tuning = study_tuning(self.cmp, study)
            for j in range(len(study.datasets)):
                table_rows = [r for r in planned if (r.study, r.dataset) == (i, j)]
                table_info = self.table_info(table_rows[0].cfg, table_rows[0].label, tuning)
                rows = []
                for r in table_rows:
                    same_as = first_entry.setdefault(r.key, f"{r.label}/{r.entry}")
                    done = {u: rec for u, t in r.tasks.items() if (rec := stored[t.record]) is not None}
                    row = self.row(
                        r.entry,
                        r.cfg,
                        r.key,
                        done,
                        table_info["references"],
                        same_as if same_as != f"{r.label}/{r.entry}" else None,
                    )
                    records = list(done.values())
                    if records:
                        row["by_combination"] = combination_results(
                            records, table_info["modality_names"], table_info["task"]
                        )
                    if tuning is not None:
                        row["tuning"] = tuning_summary(records, r.untuned)
                    rows.append(row)
                table = {**table_info, "rows": rows}
                add_paired_comparisons(table)
                tables.append(table)
            studies.append(
                {"title": study.title, "note": study.note, "tables": tables, "ranks": study_ranks(tables)}
            )
        return {
            "name": self.cmp.name,
            "seeds": self.cmp.seeds,
            "machine": machine_description(self.device),
            "date": datetime.date.today().isoformat(),
            "studies": studies,
            "tuning_effect": tuning_effect(studies),
            "errors": self.errors,
            "std": "population (ddof=0) over seeds",
            "tie_tolerance": TIE_TOLERANCE,
            "alpha": ALPHA,
        }

    def table_info(
        self, cfg: ExperimentConfig, label: str, tuning: TuningConfig | None = None
    ) -> dict[str, Any]:
        dataset = self.dataset(cfg)
        partitions = protocol_partitions(cfg)
        refs = {unit_key(p): self.reference(cfg, p.seed, p) for p in partitions}
        masked, _ = partition_split(cfg, dataset, partitions[0])
        shift = cfg.data.missing_test
        return {
            "label": label,
            "task": dataset.task,
            "dataset": dataset.describe(),
            "missingness": to_dict(cfg.data.missing),
            "missingness_test": to_dict(shift) if shift is not None else None,
            "combinations": masked.combination_counts(),
            "references": refs,
            "epochs": cfg.train.epochs,
            "eval_batch_size": cfg.train.eval_batch_size,
            "select_metric": select_metric_for(cfg.train.select_metric, dataset.task),
            "protocol": to_dict(cfg.protocol),
            "protocol_seeds": sorted({p.seed for p in protocol_partitions(cfg)}),
            "modality_names": dataset.modality_names,
            "tuning": to_dict(tuning) if tuning is not None else None,
        }

    @staticmethod
    def row(
        entry: str,
        cfg: ExperimentConfig,
        key: str,
        runs: dict[Any, dict[str, Any]],
        refs: dict[Any, dict[str, Any]],
        same_as: str | None,
    ) -> dict[str, Any]:
        cv = cfg.protocol.kind == "cv"
        # holdout runs are keyed by seed, cv runs by partition name (in protocol order)
        units = list(runs) if cv else sorted(runs)
        seeds = sorted({runs[u]["seed"] for u in units}) if cv else units
        row: dict[str, Any] = {
            "entry": entry,
            "method": cfg.method,
            "config_key": key,
            "seeds": seeds,
            "partitions": [u if cv else f"seed_{u}" for u in units],
            "kind": "ablation" if entry in ABLATIONS else "method",
            "description": ABLATIONS[entry].description if entry in ABLATIONS else entry,
            "same_run_as": same_as,
        }
        if not units:
            return row
        row["test"] = with_intervals([runs[u]["test"] for u in units], [runs[u] for u in units], cv)
        row["val"] = aggregate([runs[u]["val"] for u in units])
        row["n_train"] = float(np.mean([runs[u]["n_train"] + runs[u]["n_val"] for u in units]))
        row["n_test"] = float(np.mean([runs[u]["n_test"] for u in units]))
        cpu = [runs[u]["cpu_seconds"] for u in units]
        row["cpu_seconds"] = {"mean": float(np.mean(cpu)), "std": float(np.std(cpu)), "per_seed": cpu}
        row["best_epochs"] = [runs[u]["best_epoch"] for u in units]
        row["ties_majority"] = [ties_majority(runs[u]["test"], refs[u]) for u in units]
        return row


def run_comparison(
    config_path: str | Path,
    out_dir: str | Path,
    device: str = "auto",
    cached_only: bool = False,
    markdown: str | Path | None = None,
    command: str | None = None,
    log=print,
    studies: list[int] | None = None,
    workers: Workers | None = None,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Run a comparison config; write ``results.json`` and ``results.md`` (and ``markdown``).

    ``studies``: 1-based positions of the config's studies to run and tabulate (default: all).
    ``workers``: where the cells run (default: one after another in this process); the results
    do not depend on it. ``progress``: the study's progress bar (None: when stderr is a terminal).
    """
    cmp = load_compare_config(config_path)
    if studies:
        bad = [i for i in studies if not 1 <= i <= len(cmp.studies)]
        if bad:
            raise UsageError(
                f"--studies {bad}: {config_path} has {len(cmp.studies)} studies (numbered from 1)"
            )
        cmp.studies = [cmp.studies[i - 1] for i in studies]
    try:
        results = Comparison(cmp, out_dir, device, cached_only, log, workers, progress).run()
    except MoERetrieverError as exc:
        raise type(exc)(f"{config_path}: {exc}") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_rank_diagrams(results, out)
    command = command or f"moe-retriever compare --config {config_path} --out {out_dir}"
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    text = comparison_markdown(results, command)
    atomic_write_text(out / "results.md", text)
    if markdown is not None:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(markdown, text)
        for study in results["studies"]:  # the diagrams sit next to the Markdown that shows them
            figure = (study.get("ranks") or {}).get("figure")
            if figure and Path(markdown).parent.resolve() != out.resolve():
                shutil.copyfile(out / figure, Path(markdown).parent / figure)
    return results
