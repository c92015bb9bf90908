"""Multi-seed experiments: split, simulate missingness, train, test, write the run directory.

A run directory holds ``config.yaml``, ``results.json``, ``results.md``, ``combinations.json``,
``bank.safetensors`` (the raw features of every sample, written once per run) and, per seed,
``seed_<s>/model.safetensors``: the best model's weights together with everything needed to use it
again (config, modality specs, class names, standardisation statistics, and the positions and
observed masks that select the seed's retrieval bank, i.e. its training split, from
``bank.safetensors``, whose hash it records). Under ``protocol: {kind: cv}`` the same contents are
written per fold instead, in ``fold_s<seed>_k<fold>/`` (fold ``fold`` of the repeat whose seed is
``seed``), every fold's checkpoint referring to the same ``bank.safetensors``. A checkpoint written
without ``bank_file`` (e.g. by the scikit-learn estimator) carries the bank itself (also the
layout of earlier versions, which still loads).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor

from ..config import ExperimentConfig, from_dict, save_config, to_dict
from ..data.bank import RetrievalBank
from ..data.combinations import observed_to_codes
from ..data.dataset import ModalitySpec, MultimodalDataset
from ..data.missingness import apply_missingness, missingness_summary, simulated_mask
from ..data.sources import load_dataset
from ..data.splits import stratified_folds, stratified_holdout, stratified_split
from ..errors import CheckpointError, InputNotFoundError
from ..methods import build_model
from .checkpoint import atomic_write_text, load_state_into, load_tensors, save_tensors
from .distributed import SINGLE_PROCESS, DistContext, decorrelate_dropout
from .distributed import setup as setup_distributed
from .distributed import teardown as teardown_distributed
from .metrics import METRICS, aggregate, classification_metrics
from .run_log import HISTORY_PNG, ExperimentLogger, plot_history, write_history
from .statistics import METRIC_RANGE, corrected_resampled_t, t_interval
from .trainer import FitResult, Trainer, resolve_device

if TYPE_CHECKING:
    from ..baselines.common import DirectMethod

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


def masked_split(
    cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int
) -> tuple[MultimodalDataset, dict[str, Tensor]]:
    """The dataset under the seed's missingness, and the positions of its train / val / test
    samples (the dataset's own split when it ships one).

    With ``data.missing_test`` the validation and test samples take their mask from that config;
    both masks are drawn on the whole dataset, so neither the split nor the training masks change.
    """
    if dataset.splits is not None:
        parts = {k: dataset.splits[k] for k in ("train", "val", "test")}
    else:
        parts = dict(
            zip(("train", "val", "test"), stratified_split(dataset.labels, cfg.data.split, seed), strict=True)
        )
    return _masked(cfg, dataset, seed, parts), parts


def _masked(
    cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int, parts: dict[str, Tensor]
) -> MultimodalDataset:
    """``dataset`` under the seed's missingness; ``data.missing_test`` masks the val and test
    positions of ``parts``."""
    shift = cfg.data.missing_test
    if shift is None:
        return apply_missingness(dataset, cfg.data.missing, seed)
    observed = simulated_mask(dataset, cfg.data.missing, seed)
    held_out = torch.cat([parts["val"], parts["test"]])
    observed[held_out] = simulated_mask(dataset, shift, seed, "data.missing_test")[held_out]
    return dataset.with_observed(observed)


def prepare_seed(cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int) -> SeedData:
    """Apply the seed's missingness and split (the dataset's own split when it ships one);
    standardise with training statistics."""
    ds, parts = masked_split(cfg, dataset, seed)
    return split_data(cfg, ds, parts["train"], parts["val"], parts["test"])


def split_data(
    cfg: ExperimentConfig,
    ds: MultimodalDataset,
    train_index: Sequence[int] | Tensor,
    val_index: Sequence[int] | Tensor,
    test_index: Sequence[int] | Tensor,
) -> SeedData:
    """The (train, val, test) subsets of ``ds`` (already masked), standardised with statistics
    of the training subset when ``cfg.data.standardize``."""
    train = ds.subset(train_index)
    stats = fit_standardizer(train) if cfg.data.standardize else {}
    return SeedData(
        standardize(train, stats),
        standardize(ds.subset(val_index), stats),
        standardize(ds.subset(test_index), stats),
        stats,
        torch.as_tensor(train_index, dtype=torch.long),
    )


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
        return (
            f"seed {self.seed}"
            if self.fold is None
            else f"repeat {self.repeat} (seed {self.seed}) fold {self.fold}"
        )

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
    return [Partition(s, k, r) for r, s in enumerate(cfg.train.seeds[: p.repeats]) for k in range(p.folds)]


def partition_from_meta(meta: dict[str, Any]) -> Partition:
    """The partition a checkpoint or a run record was trained on (holdout when not recorded)."""
    d = meta.get("partition") or {}
    return Partition(int(meta["seed"]), d.get("fold"), d.get("repeat"))


def partition_split(
    cfg: ExperimentConfig, dataset: MultimodalDataset, part: Partition
) -> tuple[MultimodalDataset, dict[str, Tensor]]:
    """:func:`masked_split` for one partition of the protocol. Cross-validation: the repeat
    seed's missingness mask (shared by its folds) and stratified folds; the other folds are
    split again, stratified, into train and validation in the proportions of ``data.split``."""
    if part.fold is None:
        return masked_split(cfg, dataset, part.seed)
    folds = stratified_folds(dataset.labels, cfg.protocol.folds, part.seed)
    if not 0 <= part.fold < len(folds):
        raise ValueError(f"fold {part.fold} does not exist: protocol.folds = {cfg.protocol.folds}")
    rest = torch.cat([f for k, f in enumerate(folds) if k != part.fold]).sort().values
    val_fraction = cfg.data.split[1] / (cfg.data.split[0] + cfg.data.split[1])
    tr, va = stratified_holdout(dataset.labels, rest, val_fraction, part.rng_seed)
    parts = {"train": tr, "val": va, "test": folds[part.fold]}
    return _masked(cfg, dataset, part.seed, parts), parts


def prepare_partition(cfg: ExperimentConfig, dataset: MultimodalDataset, part: Partition) -> SeedData:
    """The standardised train / val / test data of one partition (:func:`partition_split`)."""
    ds, parts = partition_split(cfg, dataset, part)
    return split_data(cfg, ds, parts["train"], parts["val"], parts["test"])


def prediction_record(test: MultimodalDataset, probs: np.ndarray) -> dict[str, list]:
    """Per-sample test record: ids, true and predicted labels, combination codes (for the
    per-combination results pooled over folds)."""
    return {
        "ids": list(test.ids),
        "label": test.labels.tolist(),
        "pred": np.asarray(probs).argmax(axis=1).tolist(),
        "code": observed_to_codes(test.observed).tolist(),
    }


# --------------------------------------------------------------------------- checkpoints


def _spec_json(spec: ModalitySpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "shape": list(spec.shape),
        "kind": spec.kind,
        "columns": list(spec.columns) if spec.columns is not None else None,
    }


def _spec_from_json(d: dict[str, Any]) -> ModalitySpec:
    return ModalitySpec(
        d["name"], tuple(d["shape"]), d["kind"], tuple(d["columns"]) if d.get("columns") is not None else None
    )


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
    save_tensors(
        path,
        tensors,
        {"ids": dataset.ids, "dataset": dataset.name, "natural_missingness": dataset.natural_missingness},
    )
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


@dataclass(frozen=True)
class RunBank:
    """A run's shared bank file (:data:`BANK_FILE`) and the dataset whose samples it holds;
    written when a checkpoint first refers to it (methods without checkpoints never write it)."""

    path: Path
    dataset: MultimodalDataset

    def digest(self) -> str:
        return run_bank_digest(self.path, self.dataset)


def save_seed_checkpoint(
    path: Path,
    cfg: ExperimentConfig,
    seed: int,
    state: dict[str, Tensor],
    bank: MultimodalDataset,
    stats: dict[str, tuple[Tensor, Tensor]],
    extra: dict[str, Any] | None = None,
    *,
    bank_file: Path | None = None,
    bank_index: Tensor | None = None,
    bank_digest: str | None = None,
) -> None:
    """Write a model's weights with its retrieval ``bank`` (the standardised training split),
    the standardisation ``stats`` and the metadata :func:`load_seed_checkpoint` needs.

    With ``bank_file`` (the run's :data:`BANK_FILE`, whose digest is ``bank_digest``) the
    checkpoint holds the bank's positions in that file (``bank_index``, e.g.
    :attr:`SeedData.train_index`) and its observed masks instead of its features: its size is the
    model's. Without, it embeds the bank (a self-contained file)."""
    tensors = {f"model.{k}": v for k, v in state.items()}
    for name, (mean, std) in stats.items():
        tensors[f"stats.{name}.mean"], tensors[f"stats.{name}.std"] = mean, std
    meta = {
        "config": to_dict(cfg),
        "seed": seed,
        "dataset": bank.name,
        "modalities": [_spec_json(s) for s in bank.modalities],
        "class_names": bank.class_names,
        **(extra or {}),
    }
    if bank_file is not None:
        if bank_index is None or bank_digest is None:
            raise ValueError(
                "a checkpoint that refers to a bank file needs the bank's positions "
                "in it (bank_index) and the file's digest (bank_digest)"
            )
        if len(bank_index) != len(bank):
            raise ValueError(
                f"bank_index holds {len(bank_index)} positions for a bank of {len(bank)} samples"
            )
        tensors["bank.index"] = torch.as_tensor(bank_index, dtype=torch.long)
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
    """The bank file a checkpoint refers to, checked against the digest it was written with: the
    file at the recorded relative path or, for a checkpoint moved into a deeper layout (e.g.
    ``fold_0/seed_0/``), the nearest :data:`BANK_FILE` above it with that digest."""
    from safetensors.torch import load as load_bytes

    recorded = (checkpoint.parent / meta["bank_file"]).resolve()
    candidates = [recorded] + [d / BANK_FILE for d in checkpoint.resolve().parents]
    existing = list(dict.fromkeys(c for c in candidates if c.is_file()))
    if not existing:
        raise CheckpointError(
            f"{checkpoint}: its retrieval bank {recorded} is missing (the run "
            f"directory's {BANK_FILE} must stay next to the seed directories)"
        )
    for bank_path in existing:
        data = bank_path.read_bytes()
        if _sha256(data) == meta["bank_sha256"]:
            break
    else:
        bank_path = existing[0]
        raise CheckpointError(
            f"{bank_path}: its SHA-256 differs from {meta['bank_sha256'][:16]}... "
            f"recorded in {checkpoint}: the bank file was replaced or modified "
            f"since the checkpoint was written"
        )
    try:
        tensors = load_bytes(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        bank_meta = json.loads(header.get("__metadata__", {}).get("meta", "{}"))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{bank_path}: not a readable bank file ({exc})") from exc
    return tensors, bank_meta


def _bank_from_file(
    checkpoint: Path,
    meta: dict[str, Any],
    tensors: dict[str, Tensor],
    specs: list[ModalitySpec],
    stats: dict[str, tuple[Tensor, Tensor]],
) -> MultimodalDataset:
    """The seed's bank: its rows of the run's bank file, its masks, standardised as in training."""
    raw, bank_meta = _read_run_bank(checkpoint, meta)
    idx = tensors["bank.index"].long()
    n = int(raw["labels"].shape[0])
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise CheckpointError(
            f"{checkpoint}: bank positions outside the {n} samples of {checkpoint.parent / meta['bank_file']}"
        )
    ids = bank_meta.get("ids", [str(i) for i in range(n)])
    train = MultimodalDataset(
        specs,
        {s.name: raw[f"features.{s.name}"][idx] for s in specs},
        tensors["bank.observed"].bool(),
        raw["labels"][idx],
        [ids[i] for i in idx.tolist()],
        meta["class_names"],
        meta.get("dataset", "bank"),
        {s.name: raw[f"lengths.{s.name}"][idx] for s in specs if f"lengths.{s.name}" in raw},
        bank_meta.get("natural_missingness"),
        require_every_modality=False,
    )
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
        ("bank_sha256",) if shared else ("bank_ids",)
    ):
        if key not in meta:
            raise CheckpointError(
                f"{path}: checkpoint metadata lacks {key!r}; not a moe-retriever checkpoint"
            )
    cfg = from_dict(ExperimentConfig, meta["config"]).validate()
    specs = [_spec_from_json(d) for d in meta["modalities"]]
    stats = {
        s.name: (tensors[f"stats.{s.name}.mean"], tensors[f"stats.{s.name}.std"])
        for s in specs
        if f"stats.{s.name}.mean" in tensors
    }
    # the weights first: a checkpoint of another config fails before the bank file is read
    model = build_model(cfg, specs, len(meta["class_names"]))
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_into(model, state, str(path))
    if shared:
        bank = _bank_from_file(path, meta, tensors, specs, stats)
    else:
        bank = MultimodalDataset(
            specs,
            {s.name: tensors[f"bank.features.{s.name}"] for s in specs},
            tensors["bank.observed"].bool(),
            tensors["bank.labels"],
            meta["bank_ids"],
            meta["class_names"],
            meta.get("dataset", "bank"),
            {s.name: tensors[f"bank.lengths.{s.name}"] for s in specs if f"bank.lengths.{s.name}" in tensors},
        )
    return LoadedModel(cfg, int(meta["seed"]), model, bank, stats, meta)


# --------------------------------------------------------------------------- runs


def train_seed(
    cfg: ExperimentConfig,
    dataset: MultimodalDataset,
    seed: int,
    out_dir: Path | None,
    device: torch.device,
    dist_ctx: DistContext = SINGLE_PROCESS,
    state_dir: Path | None = None,
    on_epoch=None,
    partition: Partition | None = None,
) -> dict[str, Any]:
    """Train and test one seed on its split and missingness (``prepare_seed``), or one
    ``partition`` of the protocol (``seed`` is then ignored; :func:`prepare_partition`).

    With ``out_dir`` (the run directory; given on the writing rank only) the best model goes to
    ``<unit>/model.safetensors`` and the returned record to ``<unit>/metrics.json``, where the
    unit is the partition's name (``seed_<s>`` or ``fold_s<s>_k<k>``). ``state_dir`` (the unit's
    directory, known to every rank) holds the per-epoch training state that ``--resume``
    continues from; it is removed once the metrics are written. ``on_epoch`` is passed to
    :func:`fit_and_test`."""
    part = partition if partition is not None else Partition(seed)
    data = prepare_partition(cfg, dataset, part)
    unit_dir = out_dir / part.name if out_dir is not None else None
    if unit_dir is not None:
        unit_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / TRAINING_STATE if state_dir is not None else None
    run_bank = RunBank(out_dir / BANK_FILE, dataset) if out_dir is not None else None
    record = fit_and_test(
        cfg,
        data,
        part.rng_seed,
        device,
        dist_ctx,
        unit_dir / CHECKPOINT if unit_dir is not None else None,
        state_path,
        on_epoch,
        part,
        run_bank,
    )
    if unit_dir is not None:
        atomic_write_text(unit_dir / SEED_METRICS, json.dumps(record, indent=2))
        (unit_dir / TRAINING_STATE).unlink(missing_ok=True)
    return record


def fit_model(
    cfg: ExperimentConfig,
    train: MultimodalDataset,
    val: MultimodalDataset,
    n_classes: int,
    seed: int,
    device: torch.device,
    dist_ctx: DistContext = SINGLE_PROCESS,
    on_best=None,
    state_path: Path | None = None,
    on_epoch=None,
) -> tuple[Any, FitResult, Trainer | None]:
    """Build ``cfg.method`` and fit it on the (standardised) ``train`` split, selecting on ``val``.

    Returns the fitted model, its FitResult and the Trainer that fitted it, whose bank is
    ``train``; the Trainer is None for methods fitted without it (``fit_direct``). ``on_best``,
    ``state_path`` and ``on_epoch`` are passed to :meth:`Trainer.fit`.
    """
    seed_everything(seed)
    model = build_model(cfg, train.modalities, n_classes)
    decorrelate_dropout(seed, dist_ctx)
    if getattr(model, "fit_direct", False):
        # methods fitted without the Trainer (baselines.DirectMethod): no epochs, no checkpoint
        direct = cast("DirectMethod", model)
        return direct, direct.fit(train, val, cfg.train.select_metric), None
    bank = RetrievalBank(train, device)
    weights = None
    if cfg.train.class_weights:
        counts = torch.bincount(train.labels, minlength=n_classes).float()
        weights = counts.sum() / (counts.clamp(min=1) * len(counts))
    trainer = Trainer(model, cfg.train, bank, device, seed, cfg.model.retriever.eval_draws, weights, dist_ctx)
    if state_path is not None and dist_ctx.is_main:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    fit = trainer.fit(train, val, on_best=on_best, state_path=state_path, on_epoch=on_epoch)
    return model, fit, trainer


def fit_and_test(
    cfg: ExperimentConfig,
    data: SeedData,
    seed: int,
    device: torch.device,
    dist_ctx: DistContext = SINGLE_PROCESS,
    checkpoint: Path | None = None,
    state_path: Path | None = None,
    on_epoch=None,
    partition: Partition | None = None,
    run_bank: RunBank | None = None,
) -> dict[str, Any]:
    """Fit ``cfg.method`` on ``data.train`` (model selection on ``data.val``), test it on
    ``data.test`` and return the record of ``metrics.json``; ``seed`` seeds the initialisation,
    dropout and retrieval draws. ``partition`` is the protocol's split that ``data`` is (default:
    the holdout split of ``seed``); the checkpoint and the record carry its seed and fold. The
    best model is saved to ``checkpoint`` and the per-epoch training state to ``state_path`` when
    given (methods fitted without the Trainer keep
    neither); with ``checkpoint`` the training log ``history.csv`` (rewritten every epoch) and
    ``history.png`` go next to it. ``on_epoch(epoch, entry)`` follows every epoch with its
    history entry. With ``run_bank`` the checkpoint refers to the run's bank file (at the
    positions ``data.train_index``) instead of embedding the bank."""
    part = partition if partition is not None else Partition(seed)
    n_classes = data.train.n_classes
    log_dir = checkpoint.parent if checkpoint is not None else None
    history: list[dict[str, Any]] = []

    def on_best(state, result):
        if checkpoint is not None:
            shared = (
                {}
                if run_bank is None
                else {
                    "bank_file": run_bank.path,
                    "bank_index": data.train_index,
                    "bank_digest": run_bank.digest(),
                }
            )
            save_seed_checkpoint(
                checkpoint,
                cfg,
                part.seed,
                state,
                data.train,
                data.stats,
                {"best_epoch": result.best_epoch, "partition": part.as_dict()},
                **shared,
            )

    def epoch_done(epoch: int, entry: dict[str, Any]) -> None:
        history.append(entry)
        if log_dir is not None:
            write_history(log_dir, history)
        if on_epoch is not None:
            on_epoch(epoch, entry)

    model, fit, trainer = fit_model(
        cfg, data.train, data.val, n_classes, seed, device, dist_ctx, on_best, state_path, epoch_done
    )
    if trainer is not None and log_dir is not None:
        # a resumed fit's history also holds the epochs before the interruption
        write_history(log_dir, fit.history)
        plot_history(fit.history, log_dir / HISTORY_PNG, f"{cfg.name}: {cfg.method}, {part.label}")
    return partition_record(data, part, model, fit, trainer)


def partition_record(
    data: SeedData, part: Partition, model: Any, fit: FitResult, trainer: Trainer | None
) -> dict[str, Any]:
    """The record of ``metrics.json`` for a model fitted on ``data.train`` (``fit_model``'s
    results): its test metrics and predictions on ``data.test`` and its training summary."""
    n_classes = data.train.n_classes
    probs = model.predict_proba(data.test) if trainer is None else trainer.predict_proba(data.test)
    test = classification_metrics(probs, data.test.labels.numpy(), n_classes)
    return {
        "seed": part.seed,
        "partition": part.as_dict(),
        "test": test,
        "val": fit.best_val,
        "best_epoch": fit.best_epoch,
        "train_seconds": fit.train_seconds,
        "epoch_seconds": fit.epoch_seconds,
        "history": fit.history,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
        "test_predictions": prediction_record(data.test, probs),
    }


def with_intervals(per_run: list[dict[str, float]], runs: list[dict[str, Any]], cv: bool) -> dict[str, dict]:
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
            est = corrected_resampled_t(metric["per_fold"], n_train, n_test, bounds=METRIC_RANGE)
        else:
            est = t_interval(metric["per_fold"], bounds=METRIC_RANGE)
        metric["ci95"] = est.interval_dict()
    return out


def summarize(
    cfg: ExperimentConfig, dataset_name: str, runs: list[dict[str, Any]], combinations: dict[str, int]
) -> dict[str, Any]:
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
        return (
            f"{protocol['folds']}-fold stratified cross-validation repeated "
            f"{protocol['repeats']} times (repeat seeds {seeds})"
        )
    return f"holdout, seeds {seeds}"


def markdown_table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table; a row shorter than the header leaves its last cells blank."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        lines.append("| " + " | ".join(cells) + " |" + " |" * (len(header) - len(cells)))
    return lines


def results_markdown(results: dict[str, Any]) -> str:
    test = results["test"]
    method = next((m["ci95"]["method"] for m in test.values() if "ci95" in m), "t over seeds")
    rows = [
        ["test", *(fmt_interval(test.get(k)) for k in METRICS)],
        ["val", *(fmt(results["val"].get(k)) for k in METRICS)],
    ]
    lines = [
        f"# {results['method']} on {results['dataset']}",
        "",
        f"{protocol_text(results.get('protocol'), results['seeds'])}. Test: mean [95 % "
        f"interval: {method}], in %; validation: mean ± population std. "
        f"Training time {results['train_seconds']:.1f} s in all.",
        "",
        *markdown_table(("split", *METRICS), rows),
    ]
    return "\n".join(lines) + "\n"


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
            (run_dir / BANK_FILE).unlink(missing_ok=True)
            _BANK_DIGESTS.pop((run_dir / BANK_FILE).resolve(), None)

    def unit_on_epoch(epoch: int, entry: dict[str, Any]) -> None:
        logger.epoch(part.name, entry)
        if on_epoch is not None:
            on_epoch(i, epoch, entry)

    r = train_seed(cfg, dataset, part.seed, out, device, dist_ctx, unit_dir, unit_on_epoch, part)
    log(
        f"{part.label}: best epoch {r['best_epoch']}, test "
        + ", ".join(f"{k}={100 * v:.2f}" for k, v in r["test"].items())
        + f" ({r['train_seconds']:.1f} s)"
    )
    return r


def run_checkpoints(run_dir: str | Path) -> dict[str, Path]:
    """Every model checkpoint in a run directory, keyed by its directory relative to the run
    (``seed_0``, ``fold_s0_k1``, ..., or deeper layouts), sorted."""
    run = Path(run_dir)
    found = _checkpoint_dirs(run)
    if not found:
        raise InputNotFoundError(
            f"{run}: no {CHECKPOINT} found; is this a run directory written by `moe-retriever train`?"
        )
    return found


def _checkpoint_dirs(run: Path) -> dict[str, Path]:
    return {path.parent.relative_to(run).as_posix(): path for path in sorted(run.rglob(CHECKPOINT))}


_UNIT_NAME = re.compile(r"seed_(-?\d+)|fold_s(-?\d+)_k(\d+)")


def partition_checkpoints(run_dir: str | Path) -> dict[tuple[int, int | None], Path]:
    """``{(seed, fold): path}`` of the protocol's checkpoints in a run directory (those of
    :func:`run_checkpoints` directly in ``seed_<s>/``, fold None, or ``fold_s<s>_k<k>/``);
    empty when there is none."""
    found: dict[tuple[int, int | None], Path] = {}
    for name, path in _checkpoint_dirs(Path(run_dir)).items():
        match = _UNIT_NAME.fullmatch(name)
        if match and match[1] is not None:
            found[(int(match[1]), None)] = path
        elif match:
            found[(int(match[2]), int(match[3]))] = path
    return found


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
        data = prepare_partition(cfg, dataset, part)
        bank = RetrievalBank(data.train, dev)
        trainer = Trainer(loaded.model, cfg.train, bank, dev, part.rng_seed, cfg.model.retriever.eval_draws)
        metrics = trainer.evaluate(data.test)
        log(f"{part.label}: " + ", ".join(f"{k}={100 * v:.2f}" for k, v in metrics.items()))
        per_seed.append(metrics)
        parts.append(part)
    out: dict[str, Any] = {"test": aggregate(per_seed), "partitions": [p.name for p in parts]}
    out["seeds"] = sorted({p.seed for p in parts}) if parts[0].fold is not None else [p.seed for p in parts]
    return out
