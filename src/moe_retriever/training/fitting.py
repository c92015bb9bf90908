"""Fitting one method on one partition: build, train with model selection, test, checkpoint.

:func:`train_seed` runs one partition of the protocol end to end and writes its unit directory;
:func:`fit_model` only builds and fits (the tuner's trials use it directly); :func:`fit_and_test`
fits on given splits and returns the record that ``metrics.json`` holds.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ExperimentConfig
from ..contract import Method, is_direct
from ..data.bank import training_bank
from ..data.combinations import observed_to_codes
from ..data.dataset import MultimodalDataset
from ..data.partitions import Partition, SeedData, prepare_partition
from ..data.unlabelled import run_bank_samples
from ..files import atomic_write_text
from ..methods import build_model
from ..task_config import select_metric_for
from .distributed import SINGLE_PROCESS, DistContext, decorrelate_dropout
from .endpoints import TaskHead, task_metrics
from .endpoints import prediction_record as task_prediction_record
from .run_files import BANK_FILE, CHECKPOINT, SEED_METRICS, TRAINING_STATE, RunBank, save_seed_checkpoint
from .run_log import HISTORY_PNG, plot_history, write_history
from .trainer import FitResult, Trainer


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prediction_record(test: MultimodalDataset, probs: np.ndarray) -> dict[str, list]:
    """Per-sample test record: ids, true and predicted labels, combination codes (for the
    per-combination results pooled over folds). ``probs``: the predictions of the task
    (:meth:`FittedMethod.predict_values`); regression records ``target`` and ``pred``, survival
    ``time``, ``event`` and ``risk`` (:func:`.endpoints.prediction_record`)."""
    return task_prediction_record(test, probs, observed_to_codes(test.observed).tolist())


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
    run_bank = RunBank(out_dir / BANK_FILE, run_bank_samples(dataset)) if out_dir is not None else None
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


@dataclass
class FittedMethod:
    """What :func:`fit_model` returns: the fitted model, its FitResult and the Trainer that
    fitted it (whose bank is the training split); None for methods fitted without it."""

    model: Method
    fit: FitResult
    trainer: Trainer | None

    def predict_proba(self, dataset: MultimodalDataset) -> np.ndarray:
        """(N, C) class probabilities, retrieving from the training bank where the method does."""
        if self.trainer is not None:
            return self.trainer.predict_proba(dataset)
        assert is_direct(self.model), "a model fitted by the Trainer keeps it"
        return self.model.predict_proba(dataset)

    def predict_values(self, dataset: MultimodalDataset) -> np.ndarray:
        """The task's predictions: (N, C) class probabilities, (N,) regression values in the
        target's units or (N,) survival risk scores (higher: earlier event)."""
        if dataset.task == "classification":
            return self.predict_proba(dataset)
        if self.trainer is not None:
            return self.trainer.predict_values(dataset)
        assert is_direct(self.model)
        return self.model.predict(dataset)  # type: ignore[attr-defined]  # regression / survival methods

    def survival(self, dataset: MultimodalDataset, times: np.ndarray) -> np.ndarray:
        """(N, T) predicted survival probabilities S(t | x) at ``times`` (survival only)."""
        if self.trainer is not None:
            return self.trainer.head.survival(self.trainer.predict_values(dataset), times)
        return self.model.predict_survival(dataset, times)  # type: ignore[union-attr]

    def test_metrics(
        self, test: MultimodalDataset, train: MultimodalDataset, values: np.ndarray
    ) -> dict[str, float]:
        """``TASK_METRICS[task]`` of predictions ``values`` on ``test``; survival uses the
        training split's times and events and this model's survival curves."""
        if test.task != "survival":
            return task_metrics(test.task, values, test)
        return task_metrics(
            "survival",
            values,
            test,
            train.time.numpy(),
            train.event.numpy(),
            lambda times: self.survival(test, times),
        )


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
    head: TaskHead | None = None,
    bank_only: MultimodalDataset | None = None,
) -> FittedMethod:
    """Build ``cfg.method`` and fit it on the (standardised) ``train`` split, selecting on ``val``;
    ``on_best``, ``state_path`` and ``on_epoch`` are passed to :meth:`Trainer.fit`. For
    regression and survival the model's head has width 1 and ``head`` (default
    :meth:`TaskHead.for_training`) gives its loss and predictions. The ``bank_only`` samples (no
    label) join the retrieval bank after ``train``; methods fitted without the Trainer never see
    them."""
    seed_everything(seed)
    task = train.task
    model = build_model(cfg, train.modalities, n_classes if task == "classification" else 1, task)
    decorrelate_dropout(seed, dist_ctx)
    if is_direct(model):
        # methods fitted without the Trainer: no epochs, no checkpoint
        metric = select_metric_for(cfg.train.select_metric, train.task)
        return FittedMethod(model, model.fit(train, val, metric), None)
    bank = training_bank(train, bank_only, device)
    weights = None
    if cfg.train.class_weights:
        counts = torch.bincount(train.labels, minlength=n_classes).float()
        weights = counts.sum() / (counts.clamp(min=1) * len(counts))
    head = head if head is not None else TaskHead.for_training(train, cfg.train)
    trainer = Trainer(
        model, cfg.train, bank, device, seed, cfg.model.retriever.eval_draws, weights, dist_ctx, head
    )
    if state_path is not None and dist_ctx.is_main:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    fit = trainer.fit(train, val, on_best=on_best, state_path=state_path, on_epoch=on_epoch)
    return FittedMethod(model, fit, trainer)


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
    head = TaskHead.for_training(data.train, cfg.train)

    def on_best(state, result):
        if checkpoint is not None:
            shared = (
                {}
                if run_bank is None
                else {
                    "bank_file": run_bank.path,
                    "bank_index": data.bank_index,
                    "bank_digest": run_bank.digest(),
                }
            )
            save_seed_checkpoint(
                checkpoint,
                cfg,
                part.seed,
                state,
                data.bank,
                data.stats,
                {
                    "best_epoch": result.best_epoch,
                    "partition": part.as_dict(),
                    # classification checkpoints stay as they were
                    **({} if head.task == "classification" else {"task_head": head.as_dict()}),
                    **bank_meta(data),
                },
                **shared,
            )

    def epoch_done(epoch: int, entry: dict[str, Any]) -> None:
        history.append(entry)
        if log_dir is not None:
            write_history(log_dir, history)
        if on_epoch is not None:
            on_epoch(epoch, entry)

    fitted = fit_model(
        cfg,
        data.train,
        data.val,
        n_classes,
        seed,
        device,
        dist_ctx,
        on_best,
        state_path,
        epoch_done,
        head,
        bank_only=data.bank_only,
    )
    if head.task == "survival" and fitted.trainer is not None:
        # the baseline hazard is fitted after training: the checkpoint gets it now
        state = fitted.trainer.model.state_dict()
        on_best({k: v.detach().cpu() for k, v in state.items()}, fitted.fit)
    if fitted.trainer is not None and log_dir is not None:
        # a resumed fit's history also holds the epochs before the interruption
        write_history(log_dir, fitted.fit.history)
        plot_history(fitted.fit.history, log_dir / HISTORY_PNG, f"{cfg.name}: {cfg.method}, {part.label}")
    return partition_record(data, part, fitted)


def bank_meta(data: SeedData) -> dict[str, int]:
    """What a checkpoint records of its bank: how many of its first rows are labelled (the rest
    are bank-only samples); nothing when every row is."""
    return {"bank_labelled": len(data.train)} if data.bank_only is not None else {}


def partition_record(data: SeedData, part: Partition, fitted: FittedMethod) -> dict[str, Any]:
    """The record of ``metrics.json`` for a model fitted on ``data.train`` (``fit_model``'s
    results): its test metrics and predictions on ``data.test`` and its training summary."""
    fit = fitted.fit
    probs = fitted.predict_values(data.test)
    test = fitted.test_metrics(data.test, data.train, probs)
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
        "n_bank_only": len(data.bank_only) if data.bank_only is not None else 0,
        "test_predictions": prediction_record(data.test, probs),
        # per split, "<modality>.<column>": samples whose level the training split never saw
        "unknown_levels": data.unknown_levels,
    }
