"""Multi-seed experiments: split, simulate missingness, train, test, write the run directory.

A run directory holds ``config.yaml``, ``results.json``, ``results.md``, ``combinations.json`` and,
per seed, ``seed_<s>/model.safetensors``: the best model's weights together with everything needed
to use it again (config, modality specs, class names, standardisation statistics and the retrieval
bank, i.e. the training split). Under ``protocol: {kind: cv}`` the same contents are written per
fold instead, in ``fold_s<seed>_k<fold>/`` (fold ``fold`` of the repeat whose seed is ``seed``).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import ExperimentConfig, from_dict, save_config, to_dict
from ..data.bank import RetrievalBank
from ..data.dataset import ModalitySpec, MultimodalDataset
from ..data.missingness import apply_missingness
from ..data.sources import load_dataset
from ..data.combinations import observed_to_codes
from ..data.splits import stratified_folds, stratified_holdout, stratified_split
from ..methods import build_model
from .checkpoint import atomic_write_text, load_state_into, load_tensors, save_tensors
from .metrics import METRICS, aggregate, classification_metrics
from .statistics import corrected_resampled_t, t_interval
from .distributed import SINGLE_PROCESS, DistContext, decorrelate_dropout
from .distributed import setup as setup_distributed
from .distributed import teardown as teardown_distributed
from .trainer import Trainer, resolve_device

CHECKPOINT = "model.safetensors"
SEED_METRICS = "metrics.json"
# model, optimizer, RNG streams and best-so-far after the last finished epoch (torch.save of
# tensors and plain values only, read back with weights_only=True)
TRAINING_STATE = "training_state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- standardisation

def fit_standardizer(train: MultimodalDataset) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-feature mean/std of tabular modalities over the observed training rows."""
    stats = {}
    for m, spec in enumerate(train.modalities):
        if spec.kind != "tabular":
            continue
        rows = train.features[spec.name][train.observed[:, m]]
        mean = rows.mean(0)
        std = rows.std(0, unbiased=False) if rows.shape[0] > 1 else torch.ones_like(mean)
        stats[spec.name] = (mean, torch.where(std > 1e-8, std, torch.ones_like(std)))
    return stats


def standardize(ds: MultimodalDataset, stats: dict[str, tuple[Tensor, Tensor]]) -> MultimodalDataset:
    def fn(spec: ModalitySpec, x: Tensor) -> Tensor:
        if spec.name not in stats:
            return x
        mean, std = stats[spec.name]
        return (x - mean) / std
    return ds.map_features(fn)


@dataclass
class SeedData:
    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset
    stats: dict[str, tuple[Tensor, Tensor]]


def prepare_seed(cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int) -> SeedData:
    """Apply the seed's missingness and split (the dataset's own split when it ships one);
    standardise with training statistics."""
    ds = apply_missingness(dataset, cfg.data.missing, seed)
    if dataset.splits is not None:
        tr, va, te = (dataset.splits[k] for k in ("train", "val", "test"))
    else:
        tr, va, te = stratified_split(ds.labels, cfg.data.split, seed)
    return _standardized_split(cfg, ds, tr, va, te)


def _standardized_split(cfg: ExperimentConfig, ds: MultimodalDataset, tr: Tensor, va: Tensor,
                        te: Tensor) -> SeedData:
    train = ds.subset(tr)
    stats = fit_standardizer(train) if cfg.data.standardize else {}
    return SeedData(standardize(train, stats), standardize(ds.subset(va), stats),
                    standardize(ds.subset(te), stats), stats)


# --------------------------------------------------------------------------- protocols

@dataclass(frozen=True)
class Partition:
    """One train / validation / test split of the evaluation protocol: the holdout split of
    ``seed``, or (``fold`` set) fold ``fold`` of the cross-validation repeat ``repeat`` whose
    seed is ``seed``."""

    seed: int
    fold: int | None = None
    repeat: int | None = None

    @property
    def name(self) -> str:
        """The run directory entry: ``seed_<s>`` or ``fold_s<seed>_k<fold>``."""
        return f"seed_{self.seed}" if self.fold is None else f"fold_s{self.seed}_k{self.fold}"

    @property
    def label(self) -> str:
        return f"seed {self.seed}" if self.fold is None else \
            f"repeat {self.repeat} (seed {self.seed}) fold {self.fold}"

    @property
    def rng_seed(self) -> int:
        """Seed of the model's initialisation and training randomness (distinct per fold)."""
        return self.seed if self.fold is None else 1000 * self.seed + self.fold

    def as_dict(self) -> dict[str, int | None]:
        return {"seed": self.seed, "fold": self.fold, "repeat": self.repeat}


def protocol_partitions(cfg: ExperimentConfig) -> list[Partition]:
    """Every split the config's protocol trains and tests on, in order."""
    p = cfg.protocol
    if p.kind == "holdout":
        return [Partition(s) for s in cfg.train.seeds]
    return [Partition(s, k, r) for r, s in enumerate(cfg.train.seeds[:p.repeats])
            for k in range(p.folds)]


def partition_from_meta(meta: dict[str, Any]) -> Partition:
    """The partition a checkpoint or a run record was trained on (holdout when not recorded)."""
    d = meta.get("partition") or {}
    return Partition(int(meta["seed"]), d.get("fold"), d.get("repeat"))


def prepare_partition(cfg: ExperimentConfig, dataset: MultimodalDataset,
                      part: Partition) -> SeedData:
    """The standardised train / val / test data of one partition. Cross-validation: the repeat
    seed's missingness mask and stratified folds; the other folds are split again, stratified,
    into train and validation in the proportions of ``data.split``."""
    if part.fold is None:
        return prepare_seed(cfg, dataset, part.seed)
    ds = apply_missingness(dataset, cfg.data.missing, part.seed)
    folds = stratified_folds(ds.labels, cfg.protocol.folds, part.seed)
    if not 0 <= part.fold < len(folds):
        raise ValueError(f"fold {part.fold} does not exist: protocol.folds = {cfg.protocol.folds}")
    test = folds[part.fold]
    rest = torch.cat([f for k, f in enumerate(folds) if k != part.fold]).sort().values
    val_fraction = cfg.data.split[1] / (cfg.data.split[0] + cfg.data.split[1])
    tr, va = stratified_holdout(ds.labels, rest, val_fraction, part.rng_seed)
    return _standardized_split(cfg, ds, tr, va, test)


def prediction_record(test: MultimodalDataset, probs: np.ndarray) -> dict[str, list]:
    """Per-sample test record: ids, true and predicted labels, combination codes (for the
    per-combination results pooled over folds)."""
    return {"ids": list(test.ids), "label": test.labels.tolist(),
            "pred": np.asarray(probs).argmax(axis=1).tolist(),
            "code": observed_to_codes(test.observed).tolist()}


# --------------------------------------------------------------------------- checkpoints

def _spec_json(spec: ModalitySpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "kind": spec.kind,
            "columns": list(spec.columns) if spec.columns is not None else None}


def _spec_from_json(d: dict[str, Any]) -> ModalitySpec:
    return ModalitySpec(d["name"], tuple(d["shape"]), d["kind"],
                        tuple(d["columns"]) if d.get("columns") is not None else None)


def save_seed_checkpoint(path: Path, cfg: ExperimentConfig, seed: int, state: dict[str, Tensor],
                         data: SeedData, extra: dict[str, Any] | None = None) -> None:
    tensors = {f"model.{k}": v for k, v in state.items()}
    for name, (mean, std) in data.stats.items():
        tensors[f"stats.{name}.mean"], tensors[f"stats.{name}.std"] = mean, std
    bank = data.train
    for name, x in bank.features.items():
        tensors[f"bank.features.{name}"] = x
    for name, x in bank.lengths.items():
        tensors[f"bank.lengths.{name}"] = x
    tensors["bank.observed"] = bank.observed.to(torch.uint8)
    tensors["bank.labels"] = bank.labels
    meta = {"config": to_dict(cfg), "seed": seed, "dataset": bank.name,
            "modalities": [_spec_json(s) for s in bank.modalities],
            "class_names": bank.class_names, "bank_ids": bank.ids, **(extra or {})}
    save_tensors(path, tensors, meta)


@dataclass
class LoadedModel:
    """A trained model with its bank and preprocessing, ready to predict."""

    cfg: ExperimentConfig
    seed: int
    model: torch.nn.Module
    bank: MultimodalDataset
    stats: dict[str, tuple[Tensor, Tensor]]
    meta: dict[str, Any]

    @property
    def modalities(self) -> list[ModalitySpec]:
        return self.bank.modalities

    @property
    def class_names(self) -> list[str]:
        return self.bank.class_names


def load_seed_checkpoint(path: str | Path) -> LoadedModel:
    tensors, meta = load_tensors(path)
    for key in ("config", "seed", "modalities", "class_names", "bank_ids"):
        if key not in meta:
            raise ValueError(f"{path}: checkpoint metadata lacks {key!r}; not a moe-retriever checkpoint")
    cfg = from_dict(ExperimentConfig, meta["config"]).validate()
    specs = [_spec_from_json(d) for d in meta["modalities"]]
    bank = MultimodalDataset(
        specs, {s.name: tensors[f"bank.features.{s.name}"] for s in specs},
        tensors["bank.observed"].bool(), tensors["bank.labels"], meta["bank_ids"], meta["class_names"],
        meta.get("dataset", "bank"),
        {s.name: tensors[f"bank.lengths.{s.name}"] for s in specs if f"bank.lengths.{s.name}" in tensors})
    stats = {s.name: (tensors[f"stats.{s.name}.mean"], tensors[f"stats.{s.name}.std"])
             for s in specs if f"stats.{s.name}.mean" in tensors}
    model = build_model(cfg, specs, len(meta["class_names"]))
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_into(model, state, str(path))
    return LoadedModel(cfg, int(meta["seed"]), model, bank, stats, meta)


# --------------------------------------------------------------------------- runs

def train_seed(cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int, out_dir: Path | None,
               device: torch.device, dist_ctx: DistContext = SINGLE_PROCESS,
               state_dir: Path | None = None, partition: Partition | None = None) -> dict[str, Any]:
    """Train and test one seed (or one ``partition`` of a cross-validation protocol, whose
    ``seed`` is then ignored). ``state_dir`` (the seed's directory, known to every rank) holds
    the per-epoch training state that ``--resume`` continues from; it is removed once the seed's
    metrics are written."""
    part = partition if partition is not None else Partition(seed)
    seed, unit = part.rng_seed, part.name
    data = prepare_partition(cfg, dataset, part)
    seed_everything(seed)
    model = build_model(cfg, data.train.modalities, dataset.n_classes)
    decorrelate_dropout(seed, dist_ctx)
    if getattr(model, "fit_direct", False):
        # methods fitted without the Trainer (baselines.DirectMethod): no epochs, no checkpoint
        fit = model.fit(data.train, data.val, cfg.train.select_metric)
        probs = model.predict_proba(data.test)
        if out_dir is not None:
            (out_dir / unit).mkdir(parents=True, exist_ok=True)
    else:
        bank = RetrievalBank(data.train, device)
        weights = None
        if cfg.train.class_weights:
            counts = torch.bincount(data.train.labels, minlength=dataset.n_classes).float()
            weights = counts.sum() / (counts.clamp(min=1) * len(counts))
        trainer = Trainer(model, cfg.train, bank, device, seed, cfg.model.retriever.eval_draws, weights,
                          dist_ctx)
        ckpt = out_dir / unit / CHECKPOINT if out_dir is not None else None
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)

        def on_best(state, result):
            if ckpt is not None:
                save_seed_checkpoint(ckpt, cfg, part.seed, state, data,
                                     {"best_epoch": result.best_epoch, "partition": part.as_dict()})

        state_path = state_dir / TRAINING_STATE if state_dir is not None else None
        if state_path is not None and dist_ctx.is_main:
            state_path.parent.mkdir(parents=True, exist_ok=True)
        fit = trainer.fit(data.train, data.val, on_best=on_best, state_path=state_path)
        probs = trainer.predict_proba(data.test)
    test = classification_metrics(probs, data.test.labels.numpy(), dataset.n_classes)
    out = {"seed": part.seed, "partition": part.as_dict(), "test": test, "val": fit.best_val,
           "best_epoch": fit.best_epoch,
           "train_seconds": fit.train_seconds, "epoch_seconds": fit.epoch_seconds,
           "history": fit.history, "n_train": len(data.train), "n_val": len(data.val),
           "n_test": len(data.test), "test_predictions": prediction_record(data.test, probs)}
    if out_dir is not None:
        atomic_write_text(out_dir / unit / SEED_METRICS, json.dumps(out, indent=2))
        (out_dir / unit / TRAINING_STATE).unlink(missing_ok=True)
    return out


def with_intervals(per_run: list[dict[str, float]], runs: list[dict[str, Any]],
                   cv: bool) -> dict[str, dict]:
    """``aggregate`` of per-run metrics plus, for every metric, ``per_fold`` (one value per run:
    per fold, or per seed for holdout) and ``ci95`` {mean, lo, hi, method, ...}: the
    Nadeau-Bengio corrected t interval over the folds of cross-validation (``n_train``: samples a
    fold's model learns from, train + validation), a t interval over holdout seeds. ``per_seed``
    is kept for holdout runs only."""
    out = aggregate(per_run)
    for metric in out.values():
        metric["per_fold"] = list(metric["per_seed"])
        if cv:
            del metric["per_seed"]
            n_train = float(np.mean([r["n_train"] + r["n_val"] for r in runs]))
            n_test = float(np.mean([r["n_test"] for r in runs]))
            est = corrected_resampled_t(metric["per_fold"], n_train, n_test)
        else:
            est = t_interval(metric["per_fold"])
        metric["ci95"] = {"lo": est.lo, "hi": est.hi, "method": est.method, "n": est.n}
    return out


def summarize(cfg: ExperimentConfig, dataset_name: str, runs: list[dict[str, Any]],
              combinations: dict[str, int]) -> dict[str, Any]:
    cv = cfg.protocol.kind == "cv"
    return {
        "method": cfg.method,
        "dataset": dataset_name,
        "seeds": sorted({r["seed"] for r in runs}) if cv else [r["seed"] for r in runs],
        "protocol": to_dict(cfg.protocol),
        "partitions": [partition_from_meta(r).name for r in runs],
        "test": with_intervals([r["test"] for r in runs], runs, cv),
        "val": aggregate([r["val"] for r in runs]),
        "train_seconds": float(sum(r["train_seconds"] for r in runs)),
        "epoch_seconds_median": float(np.median([s for r in runs for s in r["epoch_seconds"]])),
        "best_epochs": [r["best_epoch"] for r in runs],
        "missingness": to_dict(cfg.data.missing),
        "combinations": combinations,
        "std": "population (ddof=0) over seeds",
    }


def fmt(metric: dict[str, Any]) -> str:
    if metric is None or math.isnan(metric["mean"]):
        return "n/a"
    return f"{100 * metric['mean']:.2f} ± {100 * metric['std']:.2f}"


def fmt_interval(metric: dict[str, Any] | None) -> str:
    """``mean [lo, hi]`` in % (the 95 % interval of ``with_intervals``); ``mean`` alone when the
    interval cannot be estimated."""
    if metric is None or math.isnan(metric["mean"]):
        return "n/a"
    ci = metric.get("ci95") or {}
    lo, hi = ci.get("lo", math.nan), ci.get("hi", math.nan)
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{100 * metric['mean']:.2f}"
    return f"{100 * metric['mean']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"


def protocol_text(protocol: dict[str, Any] | None, seeds: list[int]) -> str:
    if protocol and protocol.get("kind") == "cv":
        return (f"{protocol['folds']}-fold stratified cross-validation repeated "
                f"{protocol['repeats']} times (repeat seeds {seeds})")
    return f"holdout, seeds {seeds}"


def results_markdown(results: dict[str, Any]) -> str:
    test = results["test"]
    method = next((m["ci95"]["method"] for m in test.values() if "ci95" in m), "t over seeds")
    lines = [f"# {results['method']} on {results['dataset']}", "",
             f"{protocol_text(results.get('protocol'), results['seeds'])}. Test: mean [95 % "
             f"interval: {method}], in %; validation: mean ± population std. "
             f"Training time {results['train_seconds']:.1f} s in all.", "",
             "| split | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS),
             "| test | " + " | ".join(fmt_interval(test.get(k)) for k in METRICS) + " |",
             "| val | " + " | ".join(fmt(results["val"].get(k)) for k in METRICS) + " |"]
    return "\n".join(lines) + "\n"


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path | None = None,
                   dataset: MultimodalDataset | None = None, log=print,
                   resume: bool = False) -> dict[str, Any]:
    """Train and test ``cfg.method`` over ``cfg.train.seeds``; write the run directory.

    Training state is saved after every epoch; with ``resume`` the seeds whose metrics exist are
    read back and an interrupted seed continues from its last finished epoch.

    Under torchrun (``WORLD_SIZE`` > 1) every process trains data-parallel (see
    ``training/distributed.py``) and only rank 0 logs and writes.
    """
    dist_ctx, dist_device = setup_distributed(cfg.train.device)
    try:
        return _run_experiment(cfg, out_dir, dataset, log, dist_ctx, dist_device, resume)
    finally:
        teardown_distributed(dist_ctx)


def _silent(*args: Any, **kwargs: Any) -> None:
    pass


def _run_experiment(cfg: ExperimentConfig, out_dir: str | Path | None,
                    dataset: MultimodalDataset | None, log, dist_ctx: DistContext,
                    dist_device: torch.device | None, resume: bool = False) -> dict[str, Any]:
    device = dist_device if dist_device is not None else resolve_device(cfg.train.device)
    run_dir = Path(out_dir) if out_dir is not None else None
    if not dist_ctx.is_main:
        out_dir, log = None, _silent
    dataset = dataset if dataset is not None else load_dataset(cfg.data)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log(dataset.describe())
    first = apply_missingness(dataset, cfg.data.missing, cfg.train.seeds[0])
    combos = first.combination_counts()
    log(f"modality combinations (seed {cfg.train.seeds[0]}): "
        + ", ".join(f"{k}={v}" for k, v in combos.items()))
    if out is not None:
        atomic_write_text(out / "combinations.json", json.dumps(combos, indent=2))
    runs = []
    t0 = time.perf_counter()
    for part in protocol_partitions(cfg):
        finished = run_dir / part.name / SEED_METRICS if run_dir is not None else None
        if resume and finished is not None and finished.is_file():
            r = json.loads(finished.read_text())
            log(f"{part.label}: finished earlier, results read from {finished}")
            runs.append(r)
            continue
        state_dir = run_dir / part.name if run_dir is not None else None
        if not resume and state_dir is not None and dist_ctx.is_main:
            # a fresh run never continues from a state left by an earlier, interrupted one
            (state_dir / TRAINING_STATE).unlink(missing_ok=True)
        r = train_seed(cfg, dataset, part.seed, out, device, dist_ctx, state_dir, part)
        log(f"{part.label}: best epoch {r['best_epoch']}, test "
            + ", ".join(f"{k}={100 * v:.2f}" for k, v in r["test"].items())
            + f" ({r['train_seconds']:.1f} s)")
        runs.append(r)
    results = summarize(cfg, dataset.name, runs, combos)
    results["wall_seconds"] = time.perf_counter() - t0
    results["device"] = str(device)
    results["processes"] = dist_ctx.world_size
    if out is not None:
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))
        atomic_write_text(out / "results.md", results_markdown(results))
    return results


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """The saved models of a run directory: ``seed_*/`` (holdout) and ``fold_s*_k*/`` (cv)."""
    run = Path(run_dir)
    found = sorted(run.glob("seed_*/" + CHECKPOINT)) + sorted(run.glob("fold_s*_k*/" + CHECKPOINT))
    if not found:
        raise FileNotFoundError(f"{run}: no seed_*/{CHECKPOINT} or fold_s*_k*/{CHECKPOINT} found; "
                                "is this a run directory?")
    return found


def evaluate_run(run_dir: str | Path, device: str = "auto", log=print) -> dict[str, Any]:
    """Re-evaluate every seed's (or fold's) saved model on its test split; returns the
    aggregated metrics."""
    paths = run_checkpoints(run_dir)
    dev = resolve_device(device)
    per_seed, parts = [], []
    dataset = None
    for path in paths:
        loaded = load_seed_checkpoint(path)
        cfg = loaded.cfg
        part = partition_from_meta(loaded.meta)
        dataset = dataset if dataset is not None else load_dataset(cfg.data)
        data = prepare_partition(cfg, dataset, part)
        bank = RetrievalBank(data.train, dev)
        trainer = Trainer(loaded.model, cfg.train, bank, dev, part.rng_seed,
                          cfg.model.retriever.eval_draws)
        metrics = trainer.evaluate(data.test)
        log(f"{part.label}: " + ", ".join(f"{k}={100 * v:.2f}" for k, v in metrics.items()))
        per_seed.append(metrics)
        parts.append(part)
    out = {"test": aggregate(per_seed), "partitions": [p.name for p in parts]}
    out["seeds"] = sorted({p.seed for p in parts}) if parts[0].fold is not None else [p.seed for p in parts]
    return out
