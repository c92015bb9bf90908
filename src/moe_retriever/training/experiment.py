"""Multi-seed experiments: split, simulate missingness, train, test, write the run directory.

A run directory holds ``config.yaml``, ``results.json``, ``results.md``, ``combinations.json``,
``bank.safetensors`` (the raw features of every sample, written once per run) and, per seed,
``seed_<s>/model.safetensors``: the best model's weights together with everything needed to use it
again (config, modality specs, class names, standardisation statistics, and the positions and
observed masks that select the seed's retrieval bank, i.e. its training split, from
``bank.safetensors``, whose hash it records). A checkpoint written with ``bank_file=None``
carries the bank itself (the layout of earlier versions, which still loads).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
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
from ..data.splits import stratified_split
from ..methods import build_model
from .checkpoint import CheckpointError, atomic_write_text, load_state_into, load_tensors, save_tensors
from .metrics import METRICS, aggregate, classification_metrics
from .distributed import SINGLE_PROCESS, DistContext, decorrelate_dropout
from .distributed import setup as setup_distributed
from .distributed import teardown as teardown_distributed
from .trainer import Trainer, resolve_device

CHECKPOINT = "model.safetensors"
# the raw features of every sample of a run, shared by its seeds' checkpoints
BANK_FILE = "bank.safetensors"
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
    # positions of the training split in the loaded data set (what a shared bank file holds)
    train_index: Tensor | None = None


def prepare_seed(cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int) -> SeedData:
    """Apply the seed's missingness and split (the dataset's own split when it ships one);
    standardise with training statistics."""
    ds = apply_missingness(dataset, cfg.data.missing, seed)
    if dataset.splits is not None:
        tr, va, te = (dataset.splits[k] for k in ("train", "val", "test"))
    else:
        tr, va, te = stratified_split(ds.labels, cfg.data.split, seed)
    train = ds.subset(tr)
    stats = fit_standardizer(train) if cfg.data.standardize else {}
    return SeedData(standardize(train, stats), standardize(ds.subset(va), stats),
                    standardize(ds.subset(te), stats), stats, torch.as_tensor(tr, dtype=torch.long))


# --------------------------------------------------------------------------- checkpoints

def _spec_json(spec: ModalitySpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "kind": spec.kind,
            "columns": list(spec.columns) if spec.columns is not None else None}


def _spec_from_json(d: dict[str, Any]) -> ModalitySpec:
    return ModalitySpec(d["name"], tuple(d["shape"]), d["kind"],
                        tuple(d["columns"]) if d.get("columns") is not None else None)


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# digests of the bank files this process wrote, so later checkpoints need not re-read them
_BANK_DIGESTS: dict[Path, str] = {}


def write_run_bank(path: Path, dataset: MultimodalDataset) -> str:
    """Write the raw (unstandardised) features, masks and labels of every sample of ``dataset``
    to ``path`` once; returns the file's SHA-256, which every checkpoint using it records."""
    path = Path(path)
    tensors = {f"features.{k}": v for k, v in dataset.features.items()}
    tensors.update({f"lengths.{k}": v for k, v in dataset.lengths.items()})
    tensors["observed"] = dataset.observed.to(torch.uint8)
    tensors["labels"] = dataset.labels
    save_tensors(path, tensors, {"ids": dataset.ids, "dataset": dataset.name,
                                 "natural_missingness": dataset.natural_missingness})
    digest = _sha256(path.read_bytes())
    _BANK_DIGESTS[path.resolve()] = digest
    return digest


def run_bank_digest(path: Path, dataset: MultimodalDataset) -> str:
    """The digest of the run's bank file, writing the file first when it does not exist."""
    path = Path(path)
    known = _BANK_DIGESTS.get(path.resolve())
    if known is not None and path.is_file():
        return known
    if not path.is_file():
        return write_run_bank(path, dataset)
    digest = _BANK_DIGESTS[path.resolve()] = _sha256(path.read_bytes())
    return digest


def save_seed_checkpoint(path: Path, cfg: ExperimentConfig, seed: int, state: dict[str, Tensor],
                         data: SeedData, extra: dict[str, Any] | None = None,
                         bank_file: Path | None = None, bank_digest: str | None = None) -> None:
    """Write one seed's checkpoint. With ``bank_file`` (the run's :data:`BANK_FILE`, whose
    digest is ``bank_digest``) the checkpoint holds the weights and what selects and scales the
    seed's bank from that file: its size is the model's. Without, it embeds the bank (a
    self-contained file, the layout of earlier versions)."""
    tensors = {f"model.{k}": v for k, v in state.items()}
    for name, (mean, std) in data.stats.items():
        tensors[f"stats.{name}.mean"], tensors[f"stats.{name}.std"] = mean, std
    bank = data.train
    meta = {"config": to_dict(cfg), "seed": seed, "dataset": bank.name,
            "modalities": [_spec_json(s) for s in bank.modalities],
            "class_names": bank.class_names, **(extra or {})}
    if bank_file is not None:
        if data.train_index is None or bank_digest is None:
            raise ValueError("a checkpoint that refers to a bank file needs the training split's "
                             "positions (SeedData.train_index) and the file's digest")
        tensors["bank.index"] = data.train_index
        tensors["bank.observed"] = bank.observed.to(torch.uint8)
        rel = os.path.relpath(Path(bank_file).resolve(), Path(path).resolve().parent)
        meta.update({"bank_file": rel, "bank_sha256": bank_digest})
    else:
        for name, x in bank.features.items():
            tensors[f"bank.features.{name}"] = x
        for name, x in bank.lengths.items():
            tensors[f"bank.lengths.{name}"] = x
        tensors["bank.observed"] = bank.observed.to(torch.uint8)
        tensors["bank.labels"] = bank.labels
        meta["bank_ids"] = bank.ids
    save_tensors(path, tensors, meta)


def _read_run_bank(checkpoint: Path, meta: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The bank file a checkpoint refers to, checked against the digest it was written with."""
    from safetensors.torch import load as load_bytes

    bank_path = (checkpoint.parent / meta["bank_file"]).resolve()
    if not bank_path.is_file():
        raise CheckpointError(f"{checkpoint}: its retrieval bank {bank_path} is missing (the run "
                              f"directory's {BANK_FILE} must stay next to the seed directories)")
    data = bank_path.read_bytes()
    digest = _sha256(data)
    if digest != meta["bank_sha256"]:
        raise CheckpointError(f"{bank_path}: SHA-256 {digest[:16]}... differs from "
                              f"{meta['bank_sha256'][:16]}... recorded in {checkpoint}: the bank "
                              f"file was replaced or modified since the checkpoint was written")
    try:
        tensors = load_bytes(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        bank_meta = json.loads(header.get("__metadata__", {}).get("meta", "{}"))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{bank_path}: not a readable bank file ({exc})") from exc
    return tensors, bank_meta


def _bank_from_file(checkpoint: Path, meta: dict[str, Any], tensors: dict[str, Tensor],
                    specs: list[ModalitySpec], stats: dict[str, tuple[Tensor, Tensor]]
                    ) -> MultimodalDataset:
    """The seed's bank: its rows of the run's bank file, its masks, standardised as in training."""
    raw, bank_meta = _read_run_bank(checkpoint, meta)
    idx = tensors["bank.index"].long()
    n = int(raw["labels"].shape[0])
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise CheckpointError(f"{checkpoint}: bank positions outside the {n} samples of "
                              f"{checkpoint.parent / meta['bank_file']}")
    ids = bank_meta.get("ids", [str(i) for i in range(n)])
    train = MultimodalDataset(
        specs, {s.name: raw[f"features.{s.name}"][idx] for s in specs},
        tensors["bank.observed"].bool(), raw["labels"][idx], [ids[i] for i in idx.tolist()],
        meta["class_names"], meta.get("dataset", "bank"),
        {s.name: raw[f"lengths.{s.name}"][idx] for s in specs if f"lengths.{s.name}" in raw},
        bank_meta.get("natural_missingness"), require_every_modality=False)
    return standardize(train, stats)


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
    path = Path(path)
    tensors, meta = load_tensors(path)
    shared = "bank_file" in meta
    for key in ("config", "seed", "modalities", "class_names") + (
            ("bank_sha256",) if shared else ("bank_ids",)):
        if key not in meta:
            raise ValueError(f"{path}: checkpoint metadata lacks {key!r}; not a moe-retriever checkpoint")
    cfg = from_dict(ExperimentConfig, meta["config"]).validate()
    specs = [_spec_from_json(d) for d in meta["modalities"]]
    stats = {s.name: (tensors[f"stats.{s.name}.mean"], tensors[f"stats.{s.name}.std"])
             for s in specs if f"stats.{s.name}.mean" in tensors}
    # the weights first: a checkpoint of another config fails before the bank file is read
    model = build_model(cfg, specs, len(meta["class_names"]))
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_into(model, state, str(path))
    if shared:
        bank = _bank_from_file(path, meta, tensors, specs, stats)
    else:
        bank = MultimodalDataset(
            specs, {s.name: tensors[f"bank.features.{s.name}"] for s in specs},
            tensors["bank.observed"].bool(), tensors["bank.labels"], meta["bank_ids"],
            meta["class_names"], meta.get("dataset", "bank"),
            {s.name: tensors[f"bank.lengths.{s.name}"] for s in specs
             if f"bank.lengths.{s.name}" in tensors})
    return LoadedModel(cfg, int(meta["seed"]), model, bank, stats, meta)


# --------------------------------------------------------------------------- runs

def train_seed(cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int, out_dir: Path | None,
               device: torch.device, dist_ctx: DistContext = SINGLE_PROCESS,
               state_dir: Path | None = None) -> dict[str, Any]:
    """Train and test one seed. ``state_dir`` (the seed's directory, known to every rank) holds
    the per-epoch training state that ``--resume`` continues from; it is removed once the seed's
    metrics are written."""
    data = prepare_seed(cfg, dataset, seed)
    seed_everything(seed)
    model = build_model(cfg, data.train.modalities, dataset.n_classes)
    decorrelate_dropout(seed, dist_ctx)
    if getattr(model, "fit_direct", False):
        # methods fitted without the Trainer (baselines.DirectMethod): no epochs, no checkpoint
        fit = model.fit(data.train, data.val, cfg.train.select_metric)
        test = classification_metrics(model.predict_proba(data.test), data.test.labels.numpy(),
                                      dataset.n_classes)
        if out_dir is not None:
            (out_dir / f"seed_{seed}").mkdir(parents=True, exist_ok=True)
    else:
        bank = RetrievalBank(data.train, device)
        weights = None
        if cfg.train.class_weights:
            counts = torch.bincount(data.train.labels, minlength=dataset.n_classes).float()
            weights = counts.sum() / (counts.clamp(min=1) * len(counts))
        trainer = Trainer(model, cfg.train, bank, device, seed, cfg.model.retriever.eval_draws, weights,
                          dist_ctx)
        ckpt = out_dir / f"seed_{seed}" / CHECKPOINT if out_dir is not None else None
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)

        bank_file = out_dir / BANK_FILE if out_dir is not None else None
        bank_digest = run_bank_digest(bank_file, dataset) if bank_file is not None else None

        def on_best(state, result):
            if ckpt is not None:
                save_seed_checkpoint(ckpt, cfg, seed, state, data, {"best_epoch": result.best_epoch},
                                     bank_file, bank_digest)

        state_path = state_dir / TRAINING_STATE if state_dir is not None else None
        if state_path is not None and dist_ctx.is_main:
            state_path.parent.mkdir(parents=True, exist_ok=True)
        fit = trainer.fit(data.train, data.val, on_best=on_best, state_path=state_path)
        test = trainer.evaluate(data.test)
    out = {"seed": seed, "test": test, "val": fit.best_val, "best_epoch": fit.best_epoch,
           "train_seconds": fit.train_seconds, "epoch_seconds": fit.epoch_seconds,
           "history": fit.history, "n_train": len(data.train), "n_val": len(data.val),
           "n_test": len(data.test)}
    if out_dir is not None:
        atomic_write_text(out_dir / f"seed_{seed}" / SEED_METRICS, json.dumps(out, indent=2))
        (out_dir / f"seed_{seed}" / TRAINING_STATE).unlink(missing_ok=True)
    return out


def summarize(cfg: ExperimentConfig, dataset_name: str, runs: list[dict[str, Any]],
              combinations: dict[str, int]) -> dict[str, Any]:
    return {
        "method": cfg.method,
        "dataset": dataset_name,
        "seeds": [r["seed"] for r in runs],
        "test": aggregate([r["test"] for r in runs]),
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


def results_markdown(results: dict[str, Any]) -> str:
    lines = [f"# {results['method']} on {results['dataset']}", "",
             f"Seeds {results['seeds']}; mean ± population std over seeds, in %. "
             f"Training time {results['train_seconds']:.1f} s in all.", "",
             "| split | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for split in ("test", "val"):
        lines.append(f"| {split} | " + " | ".join(fmt(results[split].get(k)) for k in METRICS) + " |")
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
    for seed in cfg.train.seeds:
        finished = run_dir / f"seed_{seed}" / SEED_METRICS if run_dir is not None else None
        if resume and finished is not None and finished.is_file():
            r = json.loads(finished.read_text())
            log(f"seed {seed}: finished earlier, results read from {finished}")
            runs.append(r)
            continue
        state_dir = run_dir / f"seed_{seed}" if run_dir is not None else None
        if not resume and state_dir is not None and dist_ctx.is_main:
            # a fresh run never continues from a state left by an earlier, interrupted one
            (state_dir / TRAINING_STATE).unlink(missing_ok=True)
            if seed == cfg.train.seeds[0]:
                # nor refers to the bank file of an earlier run in the same directory
                (run_dir / BANK_FILE).unlink(missing_ok=True)
                _BANK_DIGESTS.pop((run_dir / BANK_FILE).resolve(), None)
        r = train_seed(cfg, dataset, seed, out, device, dist_ctx, state_dir)
        log(f"seed {seed}: best epoch {r['best_epoch']}, test "
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


def evaluate_run(run_dir: str | Path, device: str = "auto", log=print) -> dict[str, Any]:
    """Re-evaluate every seed's saved model on its test split; returns the aggregated metrics."""
    run = Path(run_dir)
    seed_dirs = sorted(run.glob("seed_*/" + CHECKPOINT))
    if not seed_dirs:
        raise FileNotFoundError(f"{run}: no seed_*/{CHECKPOINT} found; is this a run directory?")
    dev = resolve_device(device)
    per_seed = []
    dataset = None
    for path in seed_dirs:
        loaded = load_seed_checkpoint(path)
        cfg = loaded.cfg
        dataset = dataset if dataset is not None else load_dataset(cfg.data)
        data = prepare_seed(cfg, dataset, loaded.seed)
        bank = RetrievalBank(data.train, dev)
        trainer = Trainer(loaded.model, cfg.train, bank, dev, loaded.seed, cfg.model.retriever.eval_draws)
        metrics = trainer.evaluate(data.test)
        log(f"seed {loaded.seed}: " + ", ".join(f"{k}={100 * v:.2f}" for k, v in metrics.items()))
        per_seed.append(metrics)
    return {"test": aggregate(per_seed), "seeds": [int(p.parent.name.split("_")[1]) for p in seed_dirs]}
