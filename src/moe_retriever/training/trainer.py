"""Training loop: warm-up with zero-filled missing embeddings, then retrieval; model selection on
a validation metric; deterministic evaluation that retrieves from the training bank only."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..contract import FitResult as FitResult  # re-exported
from ..contract import MethodModel
from ..data.bank import RetrievalBank
from ..data.dataset import Batch, MultimodalDataset
from ..errors import ConfigError
from ..errors import TrainingDivergedError as TrainingDivergedError  # re-exported
from ..files import atomic_write
from ..models.classifier import MultimodalClassifier
from ..models.context import RetrievalInputs
from ..task_config import select_metric_for
from .checkpoint import CheckpointError
from .distributed import SINGLE_PROCESS, DistContext, all_reduce_sum, rank_seed, shard, wrap
from .endpoints import TaskHead
from .losses import weighted_sum
from .metrics import classification_metrics, higher_is_better, is_better


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} was requested but CUDA is not available")
    return torch.device(name)


def retrieval_seed(seed: int, rank: int = 0) -> int:
    """Seed of the supporting-group draws during training: one stream per rank."""
    return rank_seed(int(seed) * 104_729 + 3, rank)


class Trainer:
    """Fits one model on one split. ``uses_retrieval`` is False for models without a retriever.

    With a distributed ``dist_ctx`` (see :mod:`.distributed`) each rank trains on its shard of
    every global batch through DistributedDataParallel; ``self.model`` stays the plain module.

    ``head`` says what the model's output is (:class:`~.endpoints.TaskHead`; default
    classification): the loss, the predictions and the metrics of regression and survival go
    through it.
    """

    def __init__(
        self,
        model: MethodModel,
        cfg: TrainConfig,
        bank: RetrievalBank | None,
        device: torch.device,
        seed: int,
        eval_draws: int = 1,
        class_weights: Tensor | None = None,
        dist_ctx: DistContext = SINGLE_PROCESS,
        head: TaskHead | None = None,
    ) -> None:
        self.head = head if head is not None else TaskHead()
        self.model = model.to(device)
        if self.head.task != "classification" and isinstance(model, MultimodalClassifier):
            model.task_loss = self.head.loss
        self.dist = dist_ctx
        self.train_model = wrap(self.model, dist_ctx, device)
        self.cfg = cfg
        self.bank = bank
        self.device = device
        self.seed = int(seed)
        self.eval_draws = eval_draws
        self.class_weights = class_weights.to(device) if class_weights is not None else None
        self.uses_retrieval = model.uses_retrieval
        self.loss_weights = dict(model.loss_weights)
        # the fused kernel updates every parameter in one call instead of ~12 ops per tensor
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda")
        )
        # the same permutation on every rank (global batches); supporting-group draws per rank
        self.train_generator = torch.Generator().manual_seed(self.seed * 7919 + 1)
        self.retrieval_generator = torch.Generator(device=device).manual_seed(
            retrieval_seed(self.seed, dist_ctx.rank)
        )

    # ------------------------------------------------------------------ helpers
    def retrieving(self, epoch: int) -> bool:
        return self.uses_retrieval and epoch >= self.cfg.warmup_epochs

    def loss(
        self, batch: Batch, retrieve: bool, global_labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The loss of ``batch``: (total, cross-entropy, the model's unweighted auxiliary terms);
        total = cross-entropy + sum of weight x term (:func:`.losses.weighted_sum`).

        ``global_labels``: the labels of the whole global batch when ``batch`` is this rank's
        shard; the cross-entropy is then normalised by the global batch, times the world size
        that DistributedDataParallel's gradient average divides by.
        """
        out = self.train_model(batch, RetrievalInputs(self.bank, self.retrieval_generator, retrieve=retrieve))
        if self.head.task != "classification":
            count = None if global_labels is None else float(len(global_labels)) / self.dist.world_size
            ce = self.head.loss(out.logits, batch.labels, count)
        elif global_labels is None:
            ce = F.cross_entropy(out.logits, batch.labels, weight=self.class_weights)
        else:
            norm = (
                float(global_labels.numel())
                if self.class_weights is None
                else self.class_weights[global_labels].sum()
            )
            ce = F.cross_entropy(out.logits, batch.labels, weight=self.class_weights, reduction="sum") / (
                norm / self.dist.world_size
            )
        aux = weighted_sum(out.losses, self.loss_weights)
        return (ce if aux is None else ce + aux), ce, out.losses

    def train_step(
        self, batch: Batch, retrieve: bool, global_labels: Tensor | None = None
    ) -> tuple[Tensor, list[bool]]:
        """One optimiser step on ``batch``. Returns its losses as one detached device tensor
        (total, cross-entropy, then each term of ``loss_weights`` in order, 0 where the step did
        not compute it) and which terms it computed; nothing is read back to the host."""
        loss, ce, terms = self.loss(batch, retrieve, global_labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        names = list(self.loss_weights)
        zero = loss.new_zeros(())
        row = torch.stack([loss, ce, *(terms.get(name, zero) for name in names)]).detach()
        return row, [name in terms for name in names]

    def train_epoch(self, data: Batch, epoch: int, bar=None) -> dict[str, float]:
        self.model.train()
        retrieve = self.retrieving(epoch)
        n = data.labels.shape[0]
        order = torch.randperm(n, generator=self.train_generator).to(self.device)
        starts = range(0, n, self.cfg.batch_size)
        names = list(self.loss_weights)
        # per step (total, cross-entropy, each auxiliary term or 0 where the step did not compute
        # it) kept on the device and read once per epoch: no sync inside a step; the last row
        # counts the steps that computed each term (known on the host)
        step_losses = torch.zeros(len(starts) + 1, 2 + len(names), device=self.device)
        computed = [0] * len(names)
        before_step = self.model.before_train_step if retrieve else None
        for step, start in enumerate(starts):
            if before_step is not None:
                before_step(self.bank, step)
            global_index = order[start : start + self.cfg.batch_size]
            batch = data.select(shard(global_index, self.dist))
            global_labels = data.labels[global_index] if self.dist.distributed else None
            step_losses[step], has = self.train_step(batch, retrieve, global_labels)
            computed = [c + h for c, h in zip(computed, has, strict=True)]
        step_losses[-1, 2:] = torch.tensor(computed, dtype=step_losses.dtype).to(self.device)
        # summed over ranks: a non-finite loss on any rank stops every rank at the same point
        summed = all_reduce_sum(step_losses, self.dist).cpu()
        term_sums, counts = summed[:-1, 2:].double().sum(dim=0), summed[-1, 2:].double()
        step_losses = summed[:-1] / self.dist.world_size
        finite = torch.isfinite(step_losses).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            raise TrainingDivergedError(
                f"epoch {epoch + 1}, step {bad + 1}: the loss became {float(step_losses[bad, 0])}; "
                f"training stopped (lower train.lr or check the input features)"
            )
        mean = step_losses[:, :2].double().mean(dim=0) if len(starts) else torch.zeros(2)
        # each term's mean over the steps (and ranks) that computed it, unweighted
        terms_mean = {
            f"loss.{name}": float(term_sums[i] / counts[i]) for i, name in enumerate(names) if counts[i] > 0
        }
        return {
            "loss": float(mean[0]),
            f"loss.{self.head.loss_name}": float(mean[1]),
            **terms_mean,
            "retrieval": retrieve,
        }

    def eval_outputs(self, data: Batch, retrieve: bool = True) -> Iterator[tuple[Tensor, Any]]:
        """Evaluation forward passes over ``data`` in eval batches, yielding (rows, model output).

        Deterministic: the retrieval draws restart from the seed, so metrics, prediction and the
        analyses all see the same supporting samples for the same input. Gradients are tracked
        unless the caller disables them (the gradient-conflict analysis needs them).
        """
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 15_485_863 + 5)
        data = data.to(self.device)
        retrieve = retrieve and self.uses_retrieval
        n = len(data)
        for start in range(0, n, self.cfg.eval_batch_size):
            idx = torch.arange(start, min(start + self.cfg.eval_batch_size, n), device=self.device)
            yield (
                idx,
                self.model(
                    data.select(idx), RetrievalInputs(self.bank, generator, self.eval_draws, retrieve)
                ),
            )

    @torch.no_grad()
    def predict_proba(self, dataset: MultimodalDataset, retrieve: bool = True) -> np.ndarray:
        """Class probabilities; deterministic: the retrieval draws restart from the seed."""
        return self.predict_proba_batch(dataset.full_batch(), retrieve)

    @torch.no_grad()
    def predict_proba_batch(self, data: Batch, retrieve: bool = True) -> np.ndarray:
        """:meth:`predict_proba` for a prepared batch (new data need not form a full dataset)."""
        probs = [
            torch.softmax(out.logits.float(), dim=-1).cpu() for _, out in self.eval_outputs(data, retrieve)
        ]
        return torch.cat(probs).numpy()

    def predict_values(self, dataset: MultimodalDataset, retrieve: bool = True) -> np.ndarray:
        """The task's predictions (:meth:`TaskHead.values`): class probabilities (N, C),
        regression values in the target's units (N,) or survival risk scores (N,)."""
        return self.predict_values_batch(dataset.full_batch(), retrieve)

    @torch.no_grad()
    def predict_values_batch(self, data: Batch, retrieve: bool = True) -> np.ndarray:
        """:meth:`predict_values` for a prepared batch."""
        outputs = [out.logits.cpu() for _, out in self.eval_outputs(data, retrieve)]
        return self.head.values(torch.cat(outputs))

    def evaluate(self, dataset: MultimodalDataset, retrieve: bool = True) -> dict[str, float]:
        if self.head.task != "classification":
            return self.head.metrics(self.predict_values(dataset, retrieve), dataset)
        probs = self.predict_proba(dataset, retrieve)
        return classification_metrics(probs, dataset.labels.numpy(), probs.shape[1])

    # ------------------------------------------------------------------ resumable state
    def training_state(self, epoch: int, best_state, best_score: float, result: FitResult) -> dict:
        """Everything needed to continue after ``epoch`` completed epochs as if never stopped."""
        state = {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "best_state": best_state,
            "best_score": best_score,
            "best_epoch": result.best_epoch,
            "best_val": result.best_val,
            "history": result.history,
            "epoch_seconds": result.epoch_seconds,
            "rng_train": self.train_generator.get_state(),
            "rng_retrieval": self.retrieval_generator.get_state(),
            "rng_torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, state: dict) -> tuple[int, dict | None, float, FitResult]:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_generator.set_state(state["rng_train"])
        self.retrieval_generator.set_state(state["rng_retrieval"])
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        result = FitResult(
            state["best_epoch"], state["best_val"], state["history"], epoch_seconds=state["epoch_seconds"]
        )
        return state["epoch"], state["best_state"], state["best_score"], result

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train: MultimodalDataset,
        val: MultimodalDataset,
        on_best=None,
        state_path: Path | None = None,
        on_epoch=None,
    ) -> FitResult:
        """Train for ``cfg.epochs``; keep the best validation state (among retrieval epochs when
        the model retrieves, so the selected model is the method being evaluated).

        ``on_epoch(epoch, entry)`` is called with every epoch's history entry (losses, ``val_*``
        metrics, seconds, learning rate) once it is validated: training logs are written and
        hyperparameter search prunes through it (an exception it raises stops training).

        With ``state_path`` the complete training state is written there atomically after every
        epoch, and a state found there at the start is resumed from: a run killed mid-epoch
        repeats that epoch with the same random streams and ends exactly as an uninterrupted one.
        """
        if self.bank is not None and not self.bank.starts_with(train):
            raise ValueError("the retrieval bank must be the training split (then any bank-only rows)")
        data = train.full_batch().to(self.device)
        key = select_metric_for(self.cfg.select_metric, train.task)
        worst = -math.inf if higher_is_better(key) else math.inf
        best_score, best_state, result = worst, None, FitResult(-1, {})
        first_epoch = 0
        if state_path is not None and state_path.is_file():
            first_epoch, best_state, best_score, result = self.restore(load_training_state(state_path))
        start_time = time.perf_counter()
        epochs = range(first_epoch, self.cfg.epochs)
        bar = tqdm(
            epochs,
            desc=f"seed {self.seed}",
            leave=False,
            disable=not self.cfg.progress or not self.dist.is_main,
        )
        for epoch in bar:
            t0 = time.perf_counter()
            stats = self.train_epoch(data, epoch)
            result.epoch_seconds.append(time.perf_counter() - t0)
            retrieve = self.retrieving(epoch)
            if self.head.task == "survival" and key == "ibs":
                # the Brier score needs survival curves: this epoch's baseline hazard
                self.head.fit_baseline(self.predict_values(train, retrieve))
            val_metrics = self.evaluate(val, retrieve=retrieve)
            score = val_metrics[key]
            score = worst if math.isnan(score) else score
            eligible = (
                retrieve or not self.uses_retrieval or epoch == self.cfg.epochs - 1 and best_state is None
            )
            entry = {
                "epoch": epoch + 1,
                **stats,
                **{f"val_{k}": v for k, v in val_metrics.items()},
                "seconds": result.epoch_seconds[-1],
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            result.history.append(entry)
            if on_epoch is not None:
                on_epoch(epoch, entry)
            if eligible and (best_state is None or is_better(score, best_score, key)):
                best_score = score
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
                result.best_epoch, result.best_val = epoch + 1, val_metrics
                if on_best is not None:
                    on_best(best_state, result)
            if state_path is not None and self.dist.is_main:
                save_training_state(
                    state_path, self.training_state(epoch + 1, best_state, best_score, result)
                )
            bar.set_postfix(loss=f"{stats['loss']:.3f}", **{f"val_{key}": f"{val_metrics[key]:.3f}"})
        result.train_seconds = (
            time.perf_counter()
            - start_time
            + (sum(result.epoch_seconds[:first_epoch]) if first_epoch else 0.0)
        )
        # every fit ends with at least one eligible epoch (the last one at the latest)
        assert best_state is not None
        self.model.load_state_dict(best_state)
        if self.head.task == "survival":
            # the selected model's baseline hazard, on the training split, as evaluation retrieves
            self.head.fit_baseline(self.predict_values(train))
        return result


def save_training_state(path: Path, state: dict) -> None:
    """Write the resumable training state atomically (a kill never leaves half a file)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict:
    """Load a training state without unpickling arbitrary objects (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path}: unreadable training state ({type(exc).__name__}: {exc}); "
            f"delete it to restart this seed from scratch"
        ) from exc
