"""Comparisons: methods (and ablation presets) x datasets x seeds on identical splits and masks.

A comparison config (``configs/compare/*.yaml``) lists studies; a study names experiment configs
(one per dataset, with optional overrides) and the methods or ablation presets to run on each.
The run seed fixes the split and the simulated missingness (``prepare_seed``), so every method
of a dataset sees the same training, validation and test samples with the same masks; the test
split's fingerprint is recorded to show it.

Every (resolved config, seed) run is stored under ``<out>/runs/<key>/seed_<s>.json`` and reused
when the comparison is run again, so an interrupted comparison resumes and identical configs
(e.g. the preset ``experts_8`` when E_T is already 8) run once. The key is the resolved config,
not the code: after a change to the code, start from a new output directory.

Protocol: a comparison config's ``protocol`` applies to every dataset; without one, a dataset of
fewer than ``CV_MAX_SAMPLES`` samples gets 5-fold stratified cross-validation repeated on the
first three seeds (``fold_s<seed>_k<fold>.json`` records), a larger one a holdout split per seed.
Every method is paired with ``moe_retriever`` and ``zero`` on the same folds (corrected resampled
t and Wilcoxon, Holm-adjusted within a table), studies with two or more datasets get average
ranks, the Friedman test and a critical-difference diagram, and the pooled test predictions give
per-combination results.

Tuning: with ``tuning`` (of the comparison or of a study), every (dataset, method, partition)
cell runs its own Optuna study of ``tuning.trials`` trials on the partition's train / validation
splits (``tuning.tune_partition``) and its best trial's model is tested; tuned records are keyed
by ``tuned_run_key`` and hold the chosen values.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ablations import ABLATIONS
from ..config import (
    ConfigError,
    ExperimentConfig,
    ProtocolConfig,
    from_dict,
    load_config,
    to_dict,
)
from ..data.combinations import combination_name
from ..data.dataset import MultimodalDataset
from ..data.partitions import Partition, partition_split, prepare_partition, protocol_partitions
from ..data.sources import load_dataset
from ..errors import UsageError
from ..files import atomic_write_text
from ..methods import METHODS
from ..tuning import SpaceSpec, fitted_directly, load_space, search_space, tune_partition
from .fitting import train_seed
from .markdown import fmt_interval, markdown_table, protocol_text
from .metrics import METRICS, aggregate, classification_metrics
from .statistics import (
    average_ranks,
    corrected_resampled_t,
    friedman,
    holm,
    nemenyi_cd,
    rank_cliques,
    t_interval,
    wilcoxon_p,
)
from .summary import with_intervals
from .trainer import resolve_device

# a method ties the majority-class predictor when both numbers agree to this precision
TIE_TOLERANCE = 1e-9
# datasets smaller than this get repeated cross-validation by default (holdout otherwise)
CV_MAX_SAMPLES = 5000
DEFAULT_CV = ProtocolConfig(kind="cv", folds=5, repeats=3)
# every method is paired with these (when they are in the table), at this significance level
PAIRED_REFERENCES = ("moe_retriever", "zero")
PAIRED_METRICS = ("macro_f1", "accuracy")
ALPHA = 0.05


# --------------------------------------------------------------------------- config


@dataclass
class CompareDataset:
    """One dataset of a study: an experiment YAML plus overrides (e.g. the missing rate)."""

    config: str
    label: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class TuningConfig:
    """Nested hyperparameter search: in every outer partition, each method (or preset) gets its
    own Optuna study of ``trials`` trials on that partition's train / validation splits; the
    best trial's model is tested. ``trials: 0`` switches tuning off (e.g. for one study when the
    comparison's ``tuning`` is set). ``space``: a YAML file mapping method or preset names to
    search-space overrides in the format of ``moe-retriever tune --space`` (relative paths are
    read from the working directory). ``sampler_seed`` is combined with each partition's seed."""

    trials: int = 0
    space: str | None = None
    sampler_seed: int = 0


@dataclass
class CompareStudy:
    title: str
    datasets: list[CompareDataset] = field(default_factory=list)
    # registered method names (methods.METHODS) or ablation preset names (ablations.ABLATIONS)
    methods: list[str] = field(default_factory=list)
    note: str = ""
    # overrides the comparison's ``tuning`` for this study (``{trials: 0}``: shared settings)
    tuning: TuningConfig | None = None


@dataclass
class CompareConfig:
    name: str = "comparison"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # overrides applied to every run (after the dataset's config file, before its own overrides)
    overrides: list[str] = field(default_factory=list)
    studies: list[CompareStudy] = field(default_factory=list)
    # evaluation protocol of every dataset; None: 5-fold cv repeated on the first three seeds
    # for datasets under CV_MAX_SAMPLES samples, holdout otherwise. A ``protocol...`` override
    # of a dataset (or of ``overrides``) wins over both.
    protocol: ProtocolConfig | None = None
    # nested tuning of every study that does not set its own (None: shared settings)
    tuning: TuningConfig | None = None


def load_compare_config(path: str | Path) -> CompareConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"comparison config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    cfg = from_dict(CompareConfig, data)
    if not cfg.studies:
        raise ConfigError(f"{path}: studies: at least one study is needed")
    if not cfg.seeds:
        raise ConfigError(f"{path}: seeds: at least one seed is needed")
    _check_tuning(cfg.tuning, f"{path}: tuning")
    for i, study in enumerate(cfg.studies):
        where = f"{path}: studies[{i}] ({study.title!r})"
        if not study.datasets or not study.methods:
            raise ConfigError(f"{where}: needs datasets and methods")
        _check_tuning(study.tuning, f"{where}: tuning")
        for name in study.methods:
            if name not in METHODS and name not in ABLATIONS:
                raise ConfigError(
                    f"{where}: methods: {name!r} is neither a method "
                    f"{sorted(METHODS)} nor an ablation preset {sorted(ABLATIONS)}"
                )
    return cfg


def _check_tuning(tuning: TuningConfig | None, where: str) -> None:
    if tuning is None:
        return
    if tuning.trials < 0:
        raise ConfigError(f"{where}.trials: must be >= 0 (0: no tuning), got {tuning.trials}")
    if tuning.space is not None:
        spaces = load_space(tuning.space)
        bad = sorted(k for k in spaces if k not in METHODS and k not in ABLATIONS)
        if bad:
            raise ConfigError(
                f"{where}.space: {tuning.space}: {bad} name neither a method nor an ablation preset "
                "(the file maps method or preset names to search-space overrides)"
            )


def study_tuning(cmp: CompareConfig, study: CompareStudy) -> TuningConfig | None:
    """The tuning of a study's cells: its own, else the comparison's; None when off."""
    tuning = study.tuning if study.tuning is not None else cmp.tuning
    return tuning if tuning is not None and tuning.trials > 0 else None


def entry_space(
    tuning: TuningConfig, entry: str, cfg: ExperimentConfig
) -> tuple[SpaceSpec | None, str | None]:
    """The search space of one (method or preset) cell, or None and why the cell is not tuned.

    A preset's own overrides stay fixed: the keys it sets are left out of the space."""
    if fitted_directly(cfg.method):
        return None, "fitted directly, one run"
    spaces = load_space(tuning.space) if tuning.space is not None else {}
    overrides = dict(spaces.get(cfg.method) or {})
    if entry != cfg.method:
        overrides.update(spaces.get(entry) or {})
    fixed = {o.split("=", 1)[0].strip() for o in ABLATIONS[entry].overrides} if entry in ABLATIONS else set()
    overrides.update({key: None for key in fixed})
    space = search_space(cfg.method, cfg, overrides, allow_empty=True)
    return (space, None) if space else (None, "empty search space, one run")


def tuned_run_key(cfg: ExperimentConfig, tuning: TuningConfig, space: SpaceSpec) -> str:
    """The key of a tuned cell: the untuned run's key plus everything the search depends on."""
    d = {"run": run_key(cfg), "trials": tuning.trials, "sampler_seed": tuning.sampler_seed, "space": space}
    return "tuned-" + hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def entry_config(cmp: CompareConfig, ds: CompareDataset, entry: str) -> ExperimentConfig:
    """The experiment config of one (dataset, method or preset) cell of a study."""
    overrides = [
        *cmp.overrides,
        *ds.overrides,
        f"train.seeds=[{','.join(map(str, cmp.seeds))}]",
        "train.progress=false",
    ]
    if entry in ABLATIONS:
        overrides = ABLATIONS[entry].apply(overrides)
    else:
        overrides.append(f"method={entry}")
    try:
        return load_config(ds.config, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{ds.config} with {entry!r}: {exc}") from exc


# methods that read ``model.retriever``; every other method runs with retrieval switched off, so
# its run key leaves that section out and a new retriever option does not invalidate its runs
RETRIEVING_METHODS = frozenset({"moe_retriever", "official_retriever"})


def run_key(cfg: ExperimentConfig) -> str:
    """A digest of everything that changes a run's result (not its name, seeds or progress bar)."""
    d = to_dict(cfg)
    d.pop("name")
    for key in ("seeds", "progress", "device"):
        d["train"].pop(key)
    if cfg.method not in RETRIEVING_METHODS:
        d["model"].pop("retriever")
    elif cfg.model.retriever.sampling == "uniform":
        # the knn options change nothing under uniform sampling: without them, the keys of runs
        # stored before they existed stay valid
        for key in ("sampling", "knn_k", "knn_temperature", "knn_index"):
            d["model"]["retriever"].pop(key)
    if cfg.protocol.kind == "holdout":
        d.pop("protocol")  # keys of holdout runs stored before protocols existed stay valid
    else:
        d["protocol"].pop("repeats")  # a fold's record names its repeat seed
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- references


def majority_reference(
    cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int, partition: Partition | None = None
) -> dict[str, Any]:
    """What predicting the training split's majority class scores on this seed's (or this
    ``partition``'s) test split, and a fingerprint of that test split (its sample ids and
    observed masks)."""
    data = prepare_partition(cfg, dataset, partition if partition is not None else Partition(seed))
    counts = np.bincount(data.train.labels.numpy(), minlength=dataset.n_classes)
    probs = np.zeros((len(data.test), dataset.n_classes))
    probs[:, int(np.argmax(counts))] = 1.0
    m = classification_metrics(probs, data.test.labels.numpy(), dataset.n_classes)
    digest = hashlib.sha1("\n".join(data.test.ids).encode())
    digest.update(data.test.observed.numpy().tobytes())
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "test_fingerprint": digest.hexdigest()[:12],
        "n_test": len(data.test),
    }


def ties_majority(test: dict[str, float], ref: dict[str, Any]) -> bool:
    return (
        abs(test["accuracy"] - ref["accuracy"]) < TIE_TOLERANCE
        and abs(test["macro_f1"] - ref["macro_f1"]) < TIE_TOLERANCE
    )


def machine_description(device: torch.device) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- running


class Comparison:
    """Runs (or reuses) every cell of a comparison config and aggregates the results."""

    def __init__(
        self,
        cmp: CompareConfig,
        out_dir: str | Path,
        device: str = "auto",
        cached_only: bool = False,
        log=print,
    ) -> None:
        self.cmp = cmp
        self.out = Path(out_dir)
        self.device = resolve_device(device)
        self.cached_only = cached_only
        self.log = log
        self._datasets: dict[str, MultimodalDataset] = {}
        self._references: dict[tuple[str, str], dict[str, Any]] = {}
        self.errors: list[str] = []

    def dataset(self, cfg: ExperimentConfig) -> MultimodalDataset:
        d = cfg.data
        key = json.dumps([d.name, d.path, d.format, d.options, d.trust_pickle], sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(d)
        return self._datasets[key]

    def reference(
        self, cfg: ExperimentConfig, seed: int, partition: Partition | None = None
    ) -> dict[str, Any]:
        part = partition if partition is not None else Partition(seed)
        key = (json.dumps([to_dict(cfg.data), cfg.protocol.folds], sort_keys=True), part.name)
        if key not in self._references:
            self._references[key] = majority_reference(cfg, self.dataset(cfg), part.seed, part)
        return self._references[key]

    def with_protocol(self, cfg: ExperimentConfig, ds: CompareDataset) -> ExperimentConfig:
        """``cfg`` under the comparison's protocol (see ``CompareConfig.protocol``)."""
        if any(
            o.split("=", 1)[0].strip().startswith("protocol") for o in [*self.cmp.overrides, *ds.overrides]
        ):
            return cfg
        protocol = self.cmp.protocol
        if protocol is None:
            small = len(self.dataset(cfg)) < CV_MAX_SAMPLES
            protocol = (
                replace(DEFAULT_CV, repeats=min(DEFAULT_CV.repeats, len(self.cmp.seeds)))
                if small
                else ProtocolConfig(kind="holdout")
            )
        try:
            return replace(cfg, protocol=replace(protocol)).validate()
        except ConfigError as exc:
            raise ConfigError(f"{ds.config}: comparison protocol: {exc}") from exc

    def run_seed(
        self,
        cfg: ExperimentConfig,
        seed: int,
        label: str,
        partition: Partition | None = None,
        tuning: tuple[TuningConfig, SpaceSpec] | None = None,
    ) -> dict[str, Any] | None:
        """The record of one partition: stored, or trained now (with ``tuning``: the nested
        search's best trial, see :func:`~moe_retriever.tuning.tune_partition`)."""
        part = partition if partition is not None else Partition(seed)
        label = label if part.fold is None else f"{label} | {part.label}"
        key = run_key(cfg) if tuning is None else tuned_run_key(cfg, *tuning)
        path = self.out / "runs" / key / f"{part.name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        if self.cached_only:
            return None
        dataset = self.dataset(cfg)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            if tuning is None:
                result = train_seed(cfg, dataset, part.seed, None, self.device, partition=part)
                result["config"] = to_dict(cfg)
            else:
                settings, space = tuning
                result = tune_partition(
                    cfg, dataset, part, space, settings.trials, self.device, settings.sampler_seed
                )
        except (RuntimeError, ValueError) as exc:
            # one failed run (e.g. a diverged loss) must not stop the rest of the comparison
            self.errors.append(f"{label} seed {seed}: {type(exc).__name__}: {exc}")
            self.log(f"{label} seed {seed}: FAILED ({type(exc).__name__}: {exc})")
            return None
        result["cpu_seconds"] = time.process_time() - cpu0
        result["wall_seconds"] = time.perf_counter() - wall0
        result.pop("history", None)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result, indent=2))
        t = result["test"]
        self.log(
            f"{label} seed {seed}: acc {100 * t['accuracy']:.2f}, "
            f"F1 {100 * t['macro_f1']:.2f} ({result['cpu_seconds']:.1f} CPU s)"
            + (f", tuned in {result['n_trials']} trials" if tuning is not None else "")
        )
        return result

    def run(self) -> dict[str, Any]:
        studies = []
        first_entry: dict[str, str] = {}
        for study in self.cmp.studies:
            tables = []
            tuning = study_tuning(self.cmp, study)
            for ds in study.datasets:
                label = ds.label or Path(ds.config).stem
                rows = []
                table_info: dict[str, Any] | None = None
                for entry in study.methods:
                    cfg = self.with_protocol(entry_config(self.cmp, ds, entry), ds)
                    if table_info is None:
                        table_info = self.table_info(cfg, label, tuning)
                    space, untuned = entry_space(tuning, entry, cfg) if tuning else (None, None)
                    searched = (tuning, space) if tuning is not None and space is not None else None
                    key = run_key(cfg) if searched is None else tuned_run_key(cfg, *searched)
                    same_as = first_entry.setdefault(key, f"{label}/{entry}")
                    runs = {
                        unit_key(p): self.run_seed(cfg, p.seed, f"{label} | {entry}", p, searched)
                        for p in protocol_partitions(cfg)
                    }
                    done = {s: r for s, r in runs.items() if r is not None}
                    row = self.row(
                        entry,
                        cfg,
                        key,
                        done,
                        table_info["references"],
                        same_as if same_as != f"{label}/{entry}" else None,
                    )
                    if done:
                        row["by_combination"] = combination_results(
                            list(done.values()), table_info["modality_names"]
                        )
                    if tuning is not None:
                        row["tuning"] = tuning_summary(list(done.values()), untuned)
                    rows.append(row)
                assert table_info is not None  # a study has methods (checked when loaded)
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
            "dataset": dataset.describe(),
            "missingness": to_dict(cfg.data.missing),
            "missingness_test": to_dict(shift) if shift is not None else None,
            "combinations": masked.combination_counts(),
            "references": refs,
            "epochs": cfg.train.epochs,
            "eval_batch_size": cfg.train.eval_batch_size,
            "select_metric": cfg.train.select_metric,
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


def tuning_summary(records: list[dict[str, Any]], untuned: str | None) -> dict[str, Any]:
    """A tuned row's searches: per hyperparameter (``chosen``) the most frequent chosen value over
    the partitions (``value``, ``count``, ``of`` how many), or for a continuous one the median
    (``median``), and all chosen values; the mean best validation score; or, for a cell that was
    not searched, why (``untuned``)."""
    if untuned is not None:
        return {"untuned": untuned}
    searched = [r for r in records if "tuned_params" in r]
    params: dict[str, list[Any]] = {}
    for r in searched:
        for k, v in r["tuned_params"].items():
            params.setdefault(k, []).append(v)
    chosen = {}
    for k, values in params.items():
        if all(isinstance(v, float) for v in values):
            chosen[k] = {"median": float(np.median(values)), "of": len(values), "values": values}
            continue
        texts = [json.dumps(v) for v in values]
        top = max(texts, key=lambda t: (texts.count(t), -texts.index(t)))
        chosen[k] = {"value": json.loads(top), "count": texts.count(top), "of": len(values), "values": values}
    return {
        "n_trials": sorted({r["n_trials"] for r in searched}),
        "best_val_mean": float(np.mean([r["tuning"]["best_val"] for r in searched]))
        if searched
        else math.nan,
        "objective": searched[0]["tuning"]["objective"] if searched else None,
        "chosen": chosen,
    }


def unit_key(part: Partition) -> int | str:
    """How a comparison keys one run: the seed for holdout (as before protocols), else the name."""
    return part.seed if part.fold is None else part.name


# --------------------------------------------------------------------------- paired tests


def paired_difference(a: dict[str, Any], b: dict[str, Any], metric: str, cv: bool) -> dict[str, Any] | None:
    """Row ``a`` minus row ``b`` on ``metric`` over the runs both have (same seeds / folds):
    mean difference, its 95 % interval and p-value (corrected resampled t for cv, t over seeds
    for holdout) and the Wilcoxon signed-rank p-value."""
    if "test" not in a or "test" not in b:
        return None
    va = dict(zip(a["partitions"], a["test"][metric]["per_fold"], strict=True))
    vb = dict(zip(b["partitions"], b["test"][metric]["per_fold"], strict=True))
    common = [u for u in a["partitions"] if u in vb]
    diffs = np.array([va[u] - vb[u] for u in common], dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return None
    est = corrected_resampled_t(diffs, a["n_train"], a["n_test"]) if cv else t_interval(diffs)
    return {
        "mean_diff": est.mean,
        "lo": est.lo,
        "hi": est.hi,
        "p_value": est.p_value,
        "p_wilcoxon": wilcoxon_p(diffs),
        "n": est.n,
        "method": est.method,
    }


def add_holm_verdicts(cells: list[dict[str, Any]]) -> None:
    """Give every paired difference of one family its Holm-adjusted ``p_holm`` and a verdict:
    "better" / "worse" when ``p_holm`` < ``ALPHA``, else "n.s."."""
    for cell, adjusted in zip(cells, holm([c["p_value"] for c in cells]), strict=True):
        cell["p_holm"] = adjusted
        significant = not math.isnan(adjusted) and adjusted < ALPHA
        cell["verdict"] = "n.s." if not significant else "better" if cell["mean_diff"] > 0 else "worse"


def add_paired_comparisons(table: dict[str, Any]) -> None:
    """Give every row ``paired[reference][metric]``: its difference to each of
    ``PAIRED_REFERENCES`` in the table, with ``p_holm`` (Holm over the table's rows, per
    reference and metric) and a verdict: "better" / "worse" when ``p_holm`` < ``ALPHA``, else
    "n.s."."""
    cv = table.get("protocol", {}).get("kind") == "cv"
    by_entry = {r["entry"]: r for r in table["rows"]}
    for ref_name in PAIRED_REFERENCES:
        ref = by_entry.get(ref_name)
        if ref is None or "test" not in ref:
            continue
        for metric in PAIRED_METRICS:
            cells = []
            for row in table["rows"]:
                if row is ref:
                    continue
                cell = paired_difference(row, ref, metric, cv)
                if cell is not None:
                    row.setdefault("paired", {}).setdefault(ref_name, {})[metric] = cell
                    cells.append(cell)
            add_holm_verdicts(cells)


def tuning_effect(studies: list[dict[str, Any]], metric: str = "macro_f1") -> list[dict[str, Any]]:
    """Tuned minus shared settings, paired on the same partitions: for every row of a tuned
    study's table whose method the same dataset (table label) also has in a study with shared
    settings, Holm-adjusted over all the cells (:func:`add_holm_verdicts`)."""
    shared = {
        t["label"]: {r["entry"]: r for r in t["rows"]}
        for study in studies
        for t in study["tables"]
        if not t.get("tuning")
    }
    cells = []
    for study in studies:
        for table in study["tables"]:
            if not table.get("tuning") or table["label"] not in shared:
                continue
            cv = table.get("protocol", {}).get("kind") == "cv"
            for row in table["rows"]:
                other = shared[table["label"]].get(row["entry"])
                if other is None or (row.get("tuning") or {}).get("untuned"):
                    continue
                diff = paired_difference(row, other, metric, cv)
                if diff is None:
                    continue
                cells.append(
                    {
                        "dataset": table["label"],
                        "entry": row["entry"],
                        "metric": metric,
                        "shared": other["test"][metric],
                        "tuned": row["test"][metric],
                        **diff,
                    }
                )
    add_holm_verdicts(cells)
    return cells


# --------------------------------------------------------------------------- per combination


def _subset_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    return {
        "n": len(y),
        "accuracy": float(np.mean(y == pred)),
        "macro_f1": float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)),
    }


def combination_results(records: list[dict[str, Any]], modality_names: list[str]) -> dict[str, Any] | None:
    """Accuracy and macro-F1 per input combination, for complete and incomplete samples, from the
    test predictions pooled over a row's runs (each sample once per repeat or seed). Macro-F1
    of a subset averages over the classes present in it. ``worst``: the combination with the
    lowest macro-F1 among those with at least 10 pooled predictions (all when none has)."""
    preds = [r["test_predictions"] for r in records if "test_predictions" in r]
    if not preds:
        return None  # records written before per-sample predictions were stored
    y = np.concatenate([p["label"] for p in preds])
    pred = np.concatenate([p["pred"] for p in preds])
    code = np.concatenate([p["code"] for p in preds])
    full = (1 << len(modality_names)) - 1
    combos = {
        combination_name(int(c), modality_names): _subset_scores(y[code == c], pred[code == c])
        for c in sorted(np.unique(code), key=lambda c: (-int(np.sum(code == c)), int(c)))
    }
    candidates = {k: v for k, v in combos.items() if v["n"] >= 10} or combos
    complete = code == full
    return {
        "combinations": combos,
        "worst": min(candidates, key=lambda k: (candidates[k]["macro_f1"], k)),
        "complete": _subset_scores(y[complete], pred[complete]) if complete.any() else None,
        "incomplete": _subset_scores(y[~complete], pred[~complete]) if (~complete).any() else None,
    }


# --------------------------------------------------------------------------- across datasets


def study_ranks(tables: list[dict[str, Any]], metric: str = "macro_f1") -> dict[str, Any] | None:
    """Average ranks (1 = best mean ``metric``) of the entries that have results on every table
    of a study with two or more tables; the Friedman test (three or more entries) and the
    Nemenyi critical difference at ``ALPHA``. Each run counts once: an entry that is the same
    run as an earlier one in the same table is left out."""
    if len(tables) < 2:
        return None
    entries = None
    for t in tables:
        have = [
            r["entry"]
            for r in t["rows"]
            if "test" in r
            and not (r["same_run_as"] or "").startswith(f"{t['label']}/")
            and not math.isnan(r["test"][metric]["mean"])
        ]
        entries = have if entries is None else [e for e in entries if e in have]
    if not entries or len(entries) < 2:
        return None
    scores = np.array(
        [
            [next(r for r in t["rows"] if r["entry"] == e)["test"][metric]["mean"] for e in entries]
            for t in tables
        ]
    )
    ranks = average_ranks(scores)
    cd = nemenyi_cd(len(entries), len(tables), ALPHA)
    out: dict[str, Any] = {
        "metric": metric,
        "entries": entries,
        "datasets": [t["label"] for t in tables],
        "average_ranks": dict(zip(entries, map(float, ranks), strict=True)),
        "cd": cd,
        "alpha": ALPHA,
        "cliques": [[entries[i] for i in c] for c in rank_cliques(ranks, cd)],
        "friedman": None,
    }
    if len(entries) >= 3:
        f = friedman(scores)
        out["friedman"] = {"statistic": f.statistic, "p_value": f.p_value}
    return out


def study_slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "study"


def write_rank_diagrams(results: dict[str, Any], out: Path) -> None:
    """``critical_difference_<study-slug>.png`` in ``out`` for every study with ranks; the file
    name is stored in the study's ``ranks.figure``."""
    from ..analysis.plotting import critical_difference_png

    ranked = [s for s in results["studies"] if s.get("ranks")]
    for study in ranked:
        ranks = study["ranks"]
        # named after the study, so comparisons that share an --out or a docs folder keep theirs
        name = f"critical_difference_{study_slug(study['title'])}.png"
        critical_difference_png(
            ranks["average_ranks"],
            ranks["cd"],
            out / name,
            f"{study['title'][:70]}: average rank of {ranks['metric']} "
            f"over {len(ranks['datasets'])} datasets",
            ranks["cliques"],
        )
        ranks["figure"] = name


# --------------------------------------------------------------------------- report

METHOD_TABLE_HEADER = ("method", "accuracy", "macro-F1", "AUROC", "AUPRC", "CPU s", "= majority")
SUMMARY_TABLE_HEADER = (
    "table",
    "MoE-Retriever F1",
    "MoE-Retriever acc",
    "best other (F1)",
    "ΔF1 vs it",
    "ΔF1 vs zero",
    "ΔF1 vs official_retriever",
    "F1 rank",
)

_CELL_NOTE = (
    "Every cell: test metric in %, mean [95 % interval] over the table's runs: the folds of "
    "repeated stratified cross-validation (interval: Nadeau-Bengio corrected resampled t, "
    "which accounts for the overlap of the folds' training data) or, for holdout, the seeds "
    "{seeds} (t interval over seeds); each table states its protocol. All methods "
    "of a table share every run's split and missingness mask (drawn once per seed or repeat), "
    "the encoders, the trainer and the model-selection rule (best "
    "validation epoch by the table's selection metric; no class weights). **Bold**: best mean "
    "in the column. *CPU s*: process CPU seconds of one run (all threads), mean over runs. "
    "*= majority*: runs (seeds or folds) on which the method's test accuracy and macro-F1 "
    "both equal those of predicting the training split's majority class."
)
_METHODS_NOTE = (
    "Methods: `moe_retriever` is the paper's method, `zero` the same model with zero-filled "
    "missing embeddings, `official_retriever` its 0.5·mean(intra) + 0.5·mean(inter) variant "
    "(the authors' released code); every other method is one module of "
    "`src/moe_retriever/baselines/` whose docstring says what it does and which defaults it "
    "uses. `hist_gbt` selects its settings by inner cross-validation on the training part; "
    "`majority` predicts the training class frequencies."
)
_SUMMARY_NOTE = (
    "Per table: MoE-Retriever's macro-F1 and accuracy (mean [95 % interval]), the "
    "best other method by mean macro-F1, and paired differences of macro-F1 in "
    "points (MoE-Retriever minus the other, on the same runs) against it, against "
    "the same model with zero-filled missing embeddings (`zero`) and against "
    "retrieval without routing (`official_retriever`): mean [95 % interval] and "
    "the verdict at {alpha} after Holm's adjustment within the table (better / "
    "worse: MoE-Retriever is significantly better / worse; n.s.: no conclusion)."
)


def missingness_text(mis: dict[str, Any]) -> str:
    """``drop, p = 0.3``; the kinds without a rate by name alone."""
    return mis["kind"] + (f", p = {mis['p']}" if mis["kind"] not in ("natural", "none", "patterns") else "")


def comparison_markdown(results: dict[str, Any], command: str) -> str:
    """The comparison as a markdown document: one table per (study, dataset), then a summary of
    MoE-Retriever against the best other method of each table."""
    m = results["machine"]
    lines = [
        f"# Results: {results['name']}",
        "",
        "Generated, not edited by hand, by",
        "",
        "```",
        command,
        "```",
        "",
        f"on {results['date']}: {m['cpu']} ({m['logical_cpus']} logical CPUs, torch "
        f"{m['torch']}, {m['torch_threads']} thread(s), device {m['device']}), {m['platform']}, "
        f"Python {m['python']}.",
        "",
        _CELL_NOTE.format(seeds=results["seeds"]),
        "",
        _METHODS_NOTE,
        "",
    ]
    summary = []
    for study in results["studies"]:
        lines += [f"## {study['title']}", ""]
        if study["note"]:
            lines += [study["note"], ""]
        for table in study["tables"]:
            lines += [
                f"### {table['label']}",
                "",
                _table_caption(table, results["seeds"]),
                "",
                *markdown_table(METHOD_TABLE_HEADER, _method_rows(table["rows"], len(table["references"]))),
                "",
            ]
            lines += paired_markdown(table) + combination_markdown(table) + tuned_values_markdown(table)
            summary.append(_summary_row(table))
        lines += ranks_markdown(study)
    lines += tuning_effect_markdown(results.get("tuning_effect") or [])
    if results.get("errors"):
        lines += ["## Failed runs", "", *[f"- {e}" for e in results["errors"]], ""]
    summary_rows = [s for s in summary if s]
    if summary_rows:
        lines += [
            "## MoE-Retriever against the best other method",
            "",
            _SUMMARY_NOTE.format(alpha=results.get("alpha", ALPHA)),
            "",
            *markdown_table(SUMMARY_TABLE_HEADER, summary_rows),
            "",
        ]
    return "\n".join(lines)


def _table_caption(table: dict[str, Any], seeds: list[int]) -> str:
    """The dataset, protocol, missingness, training settings and majority-class reference of one
    table."""
    combos = ", ".join(f"{k} {v}" for k, v in list(table["combinations"].items())[:8])
    if len(table["combinations"]) > 8:
        combos += f" and {len(table['combinations']) - 8} smaller ones"
    refs = table["references"]
    ref_acc = np.mean([r["accuracy"] for r in refs.values()])
    ref_f1 = np.mean([r["macro_f1"] for r in refs.values()])
    mis_text = missingness_text(table["missingness"])
    if table.get("missingness_test"):
        mis_text += f" in training, {missingness_text(table['missingness_test'])} in validation and test"
    protocol = protocol_text(table.get("protocol"), table.get("protocol_seeds", seeds))
    return (
        f"{table['dataset']}. Protocol: {protocol}. Missingness used here: {mis_text}; "
        f"combinations (seed {seeds[0]}): {combos}. {table['epochs']} epochs, selection by "
        f"validation {table['select_metric']}, evaluation batch {table['eval_batch_size']}. "
        f"Majority class on the test splits: accuracy {100 * ref_acc:.2f}, macro-F1 "
        f"{100 * ref_f1:.2f}. " + _fingerprints(refs) + "." + _tuning_text(table)
    )


def _tuning_text(table: dict[str, Any]) -> str:
    """The caption's sentence on nested tuning (empty for shared settings)."""
    tuning = table.get("tuning")
    if not tuning:
        return ""
    untuned = [r["entry"] for r in table["rows"] if (r.get("tuning") or {}).get("untuned")]
    return (
        f" **Tuned**: in every outer partition each method's settings were chosen by its own "
        f"Optuna study of {tuning['trials']} trials (seeded TPE, median pruning; same budget for "
        "every method), each trial trained on the partition's training split and scored by "
        f"validation {table['select_metric']}; the best trial's model is the one tested, so the "
        "test fold never informs the choice. *CPU s* is the whole search of a partition."
        + (
            f" Not tuned (no search space or fitted directly; one run): {', '.join(untuned)}."
            if untuned
            else ""
        )
    )


def tuned_values_markdown(table: dict[str, Any]) -> list[str]:
    """One line per tuned row: the most frequent chosen value of each hyperparameter (the median
    of a continuous one)."""
    lines = []
    for r in table["rows"]:
        chosen = (r.get("tuning") or {}).get("chosen")
        if chosen:
            values = "; ".join(
                f"`{k}` median {c['median']:.3g}"
                if "median" in c
                else f"`{k}` = {json.dumps(c['value'])} ({c['count']}/{c['of']})"
                for k, c in chosen.items()
            )
            lines.append(f"- {r['entry']}: {values}")
    if not lines:
        return []
    return [
        "Tuned values over the partitions: the most frequent choice (times chosen) or, for a "
        "continuous setting, the median:",
        "",
        *lines,
        "",
    ]


def _method_rows(rows: list[dict[str, Any]], n_runs: int) -> list[list[str]]:
    """The cells of a table's method rows; the best mean of each metric column in bold; a row
    with fewer than the table's ``n_runs`` runs says how many it has."""
    ran = [r for r in rows if "test" in r]
    best = {
        k: max((r["test"][k]["mean"] for r in ran if not math.isnan(r["test"][k]["mean"])), default=math.nan)
        for k in METRICS
    }
    out = []
    for r in rows:
        name = r["entry"] if r["kind"] == "method" else f"{r['entry']} ({r['description']})"
        if r["same_run_as"]:
            name += f" [same run as {r['same_run_as']}]"
        name = name.replace("|", "\\|")  # a bare pipe would split the table cell
        if "test" not in r:
            out.append([name, "not run"])
            continue
        n = len(r.get("partitions", r["seeds"]))  # results stored before protocols: seeds
        partial = f" ({n} of {n_runs} runs)" if n < n_runs else ""
        ties = sum(r["ties_majority"])
        out.append(
            [
                f"{name}{partial}",
                *[_cell(r["test"][k], r["test"][k]["mean"] == best[k]) for k in METRICS],
                f"{r['cpu_seconds']['mean']:.1f}",
                f"{ties}/{n}" if ties else "",
            ]
        )
    return out


def _cell(metric: dict[str, Any] | None, best: bool) -> str:
    text = fmt_interval(metric) if metric is not None else "n/a"
    return f"**{text}**" if best and text != "n/a" else text


def _versus(ours: dict[str, Any], other: dict[str, Any] | None) -> str:
    """MoE-Retriever minus ``other`` in macro-F1 points: mean [95 % interval], verdict, from the
    table's paired comparison (Holm-adjusted)."""
    cell = (other or {}).get("paired", {}).get("moe_retriever", {}).get("macro_f1")
    if cell is None:
        return "n/a"
    verdict = {"better": "worse", "worse": "better"}.get(cell["verdict"], cell["verdict"])
    interval = "" if math.isnan(cell["lo"]) else f" [{_pct(-cell['hi'], True)}, {_pct(-cell['lo'], True)}]"
    return f"{_pct(-cell['mean_diff'], True)}{interval} {verdict}"


def _summary_row(table: dict[str, Any]) -> list[str] | None:
    """A table's cells in the summary table; None without a MoE-Retriever row or another method."""
    rows = [r for r in table["rows"] if "test" in r and not math.isnan(r["test"]["macro_f1"]["mean"])]
    ours = [r for r in rows if r["entry"] == "moe_retriever"]
    if not ours:
        return None
    # other methods only (ablation tables compare variants, not methods); each run counted once
    others = [
        r
        for r in rows
        if r["kind"] == "method"
        and r["entry"] != "moe_retriever"
        and r["config_key"] != ours[0]["config_key"]
    ]
    if not others:
        return None
    o = ours[0]["test"]
    best = max(others, key=lambda r: r["test"]["macro_f1"]["mean"])
    rank = 1 + sum(r["test"]["macro_f1"]["mean"] > o["macro_f1"]["mean"] for r in others)
    by_name = {r["entry"]: r for r in others}
    return [
        table["label"],
        fmt_interval(o["macro_f1"]),
        fmt_interval(o["accuracy"]),
        f"{best['entry']} ({fmt_interval(best['test']['macro_f1'])})",
        _versus(ours[0], best),
        _versus(ours[0], by_name.get("zero")),
        _versus(ours[0], by_name.get("official_retriever")),
        f"{rank} of {len(others) + 1}",
    ]


def _fingerprints(refs: dict[Any, dict[str, Any]]) -> str:
    # holdout references are keyed by seed (a string once read back from results.json)
    if not any(str(k).startswith("fold_") for k in refs):
        return "Test fingerprints: " + ", ".join(
            f"seed {s}: `{r['test_fingerprint']}`" for s, r in refs.items()
        )
    digest = hashlib.sha1(" ".join(r["test_fingerprint"] for r in refs.values()).encode())
    return f"Fingerprint of the {len(refs)} test folds: `{digest.hexdigest()[:12]}`"


def _pct(x: float, signed: bool = False) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:{'+' if signed else ''}.2f}"


def _p(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def paired_markdown(table: dict[str, Any], metric: str = "macro_f1") -> list[str]:
    """Per method: its ``metric`` minus that of each paired reference, in points, with the 95 %
    interval, the Holm-adjusted t p-value, the Wilcoxon p-value and the verdict."""
    refs = [ref for ref in PAIRED_REFERENCES if any(ref in r.get("paired", {}) for r in table["rows"])]
    if not refs:
        return []
    header = ["method"]
    for ref in refs:
        header += [f"Δ vs {ref} [95 %]", "p (Holm)", "p Wilcoxon", "verdict"]
    lines = [
        f"Paired differences of macro-F1 on the same {_units(table)} (method minus "
        "reference, points): mean [95 % interval], p-value of the "
        f"{_test_name(table)} Holm-adjusted over this table's methods, the Wilcoxon "
        f"signed-rank p-value (unadjusted), and the verdict at {ALPHA} on the adjusted "
        "p-value (better / worse / n.s.).",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for r in table["rows"]:
        cells = [r["entry"].replace("|", "\\|")]
        paired = r.get("paired", {})
        if not any(ref in paired for ref in refs):
            continue
        for ref in refs:
            c = paired.get(ref, {}).get(metric)
            if c is None:
                cells += ["", "", "", ""]
                continue
            interval = "" if math.isnan(c["lo"]) else f" [{_pct(c['lo'], True)}, {_pct(c['hi'], True)}]"
            cells += [
                _pct(c["mean_diff"], True) + interval,
                _p(c["p_holm"]),
                _p(c["p_wilcoxon"]),
                c["verdict"],
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


TUNING_EFFECT_HEADER = [
    "dataset",
    "method",
    "shared",
    "tuned",
    "Δ tuned − shared [95 %]",
    "p (Holm)",
    "p Wilcoxon",
    "verdict",
]


def tuning_effect_markdown(cells: list[dict[str, Any]]) -> list[str]:
    """The section on tuned minus shared settings (see :func:`tuning_effect`)."""
    if not cells:
        return []
    rows = [
        [
            c["dataset"],
            c["entry"].replace("|", "\\|"),
            _cell(c["shared"], False),
            _cell(c["tuned"], False),
            _pct(c["mean_diff"], True)
            + ("" if math.isnan(c["lo"]) else f" [{_pct(c['lo'], True)}, {_pct(c['hi'], True)}]"),
            _p(c["p_holm"]),
            _p(c["p_wilcoxon"]),
            c["verdict"],
        ]
        for c in cells
    ]
    return [
        "## Tuned minus shared settings",
        "",
        f"Each method's test {cells[0]['metric']} with its tuned settings minus the same method "
        "with the shared settings, paired on the same partitions (points): mean "
        "[95 % interval], the p-value Holm-adjusted over the rows of this section, the Wilcoxon "
        f"signed-rank p-value (unadjusted) and the verdict at {ALPHA}.",
        "",
        *markdown_table(TUNING_EFFECT_HEADER, rows),
        "",
    ]


def _units(table: dict[str, Any]) -> str:
    p = table.get("protocol") or {}
    return f"{p['folds'] * p['repeats']} folds" if p.get("kind") == "cv" else "seeds"


def _test_name(table: dict[str, Any]) -> str:
    return (
        "corrected resampled t-test"
        if (table.get("protocol") or {}).get("kind") == "cv"
        else "paired t-test over seeds"
    )


def combination_markdown(table: dict[str, Any]) -> list[str]:
    """A compact per-combination table: complete vs incomplete samples and the worst
    combination, from the test predictions pooled over the runs."""
    rows = [r for r in table["rows"] if r.get("by_combination")]
    if not rows:
        return []
    lines = [
        "Per input combination (test predictions pooled over the runs; F1 = macro-F1 over "
        "the classes present): accuracy / F1 in % on complete and incomplete samples, and "
        "the combination with the lowest F1 (n = pooled predictions).",
        "",
        "| method | complete acc / F1 | incomplete acc / F1 | worst combination: F1 (n) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        c = r["by_combination"]

        def pair(x: dict[str, Any] | None) -> str:
            return "n/a" if x is None else f"{_pct(x['accuracy'])} / {_pct(x['macro_f1'])} (n {x['n']})"

        worst = c["combinations"][c["worst"]]
        lines.append(
            f"| {r['entry']} | {pair(c['complete'])} | {pair(c['incomplete'])} | "
            f"{c['worst']}: {_pct(worst['macro_f1'])} ({worst['n']}) |"
        )
    return lines + [""]


def ranks_markdown(study: dict[str, Any]) -> list[str]:
    ranks = study.get("ranks")
    if not ranks:
        return []
    f = ranks["friedman"]
    friedman_text = (
        f"Friedman test: χ² = {f['statistic']:.2f}, p = {_p(f['p_value'])}"
        if f
        else "Friedman test: not run (it needs three or more methods)"
    )
    order = sorted(ranks["average_ranks"], key=ranks["average_ranks"].get)
    lines = [
        f"#### Ranks across the {len(ranks['datasets'])} datasets of this study",
        "",
        f"Average rank of mean {ranks['metric']} per dataset (1 = best). {friedman_text}. "
        f"Nemenyi critical difference at {ranks['alpha']}: {ranks['cd']:.2f}; methods joined "
        "by a bar in the diagram differ by less than that and cannot be told apart.",
        "",
        "| method | " + " | ".join(order) + " |",
        "|---" * (len(order) + 1) + "|",
        "| average rank | " + " | ".join(f"{ranks['average_ranks'][e]:.2f}" for e in order) + " |",
        "",
    ]
    if ranks.get("figure"):
        lines += [f"![critical-difference diagram]({ranks['figure']})", ""]
    return lines


def run_comparison(
    config_path: str | Path,
    out_dir: str | Path,
    device: str = "auto",
    cached_only: bool = False,
    markdown: str | Path | None = None,
    command: str | None = None,
    log=print,
    studies: list[int] | None = None,
) -> dict[str, Any]:
    """Run a comparison config; write ``results.json`` and ``results.md`` (and ``markdown``).

    ``studies``: 1-based positions of the config's studies to run and tabulate (default: all).
    """
    cmp = load_compare_config(config_path)
    if studies:
        bad = [i for i in studies if not 1 <= i <= len(cmp.studies)]
        if bad:
            raise UsageError(
                f"--studies {bad}: {config_path} has {len(cmp.studies)} studies (numbered from 1)"
            )
        cmp.studies = [cmp.studies[i - 1] for i in studies]
    results = Comparison(cmp, out_dir, device, cached_only, log).run()
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
