"""A trained run loaded from its directory: one model (:class:`TrainedRun`) or all of them
(:class:`RunEnsemble`), predicting for new samples."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import torch

from ..contract import MethodModel
from ..data.bank import RetrievalBank
from ..data.combinations import modality_letters
from ..data.dataset import Batch, ModalitySpec, MultimodalDataset
from ..data.partitions import Partition, SeedData, partition_from_meta, prepare_partition
from ..data.preprocessing import encode_categories
from ..data.sources import load_dataset
from ..errors import InputNotFoundError
from ..models.retriever import MoERetriever
from ..training.endpoints import TaskHead
from ..training.run_files import LoadedModel, load_seed_checkpoint, run_checkpoints
from ..training.trainer import Trainer, resolve_device
from .endpoint_tables import event_time_quartiles, survival_table, value_table
from .retrieval import Retrieval, retrieve
from .run_dir import best_fold, best_seed, fold_checkpoints, seed_checkpoints
from .schema import SchemaMismatchError, check_schema, schema_differences


class TrainedRun:
    """One seed's trained model with its bank and preprocessing (see :func:`load_run`)."""

    def __init__(self, loaded: LoadedModel, run_dir: Path | None = None, device: str = "auto") -> None:
        self.loaded = loaded
        self.run_dir = run_dir
        self.device = resolve_device(device)
        self.bank = RetrievalBank(loaded.bank, self.device, loaded.n_labelled)
        cfg = loaded.cfg
        self.trainer = Trainer(
            loaded.model,
            cfg.train,
            self.bank,
            self.device,
            self.partition.rng_seed,
            cfg.model.retriever.eval_draws,
            head=TaskHead.from_dict(loaded.meta.get("task_head"), cfg.train),
        )
        self._seed_data: SeedData | None = None
        # "<modality>.<column>" -> cells of the last data given whose level training never saw
        self.unknown_levels: dict[str, int] = {}

    # ------------------------------------------------------------------ metadata
    @property
    def seed(self) -> int:
        return self.loaded.seed

    @property
    def partition(self) -> Partition:
        """The split the model was trained on: its holdout seed, or its cross-validation fold."""
        return partition_from_meta({**self.loaded.meta, "seed": self.loaded.seed})

    @property
    def cfg(self):
        return self.loaded.cfg

    @property
    def model(self) -> MethodModel:
        return self.loaded.model

    @property
    def method(self) -> str:
        return self.loaded.cfg.method

    @property
    def modalities(self) -> list[ModalitySpec]:
        return self.loaded.modalities

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modalities]

    @property
    def class_names(self) -> list[str]:
        return self.loaded.class_names

    @property
    def task(self) -> str:
        """classification, regression or survival: what :meth:`predict` returns."""
        return self.trainer.head.task

    @property
    def retrieves(self) -> bool:
        """True when the model routes context tokens through the MoE retriever."""
        return self.model.uses_retrieval and self.cfg.model.retriever.mode == "moe"

    def expert_names(self) -> list[str]:
        """Retriever experts as ``<modality letter>_<i>`` and ``Shared_<i>`` (e.g. ``I_3``)."""
        retriever = self.model.retriever
        assert isinstance(retriever, MoERetriever), "only for models that retrieve (see retrieves)"
        return retriever.moe.expert_names(modality_letters(self.modality_names))

    # ------------------------------------------------------------------ data
    def seed_data(self, dataset: MultimodalDataset | None = None) -> SeedData:
        """The seed's own standardised train / val / test splits, rebuilt from the run config
        (from ``dataset`` when given: the run's dataset already loaded)."""
        if self._seed_data is None or dataset is not None:
            source = dataset if dataset is not None else load_dataset(self.cfg.data)
            self._seed_data = prepare_partition(self.cfg, source, self.partition)
        return self._seed_data

    def to_batch(self, dataset: MultimodalDataset, standardized: bool = False) -> Batch:
        """New data as a batch in the training layout.

        Modalities and columns are checked against training and put in training order; a
        training modality the data lacks is unobserved for every sample; tabular features are
        standardised with the training statistics unless ``standardized``. Labels are mapped to
        the training classes by name (-1 for a name training never saw; prediction ignores them).
        """
        # categorical levels are matched by their text; levels training never saw are counted
        dataset, self.unknown_levels = encode_categories(dataset, self.modalities)
        check_schema(dataset.modalities, self.modalities, f"data {dataset.name!r}")
        n = len(dataset)
        new_pos = {s.name: m for m, s in enumerate(dataset.modalities)}
        features, lengths = {}, {}
        observed = torch.zeros(n, len(self.modalities), dtype=torch.bool)
        for m, spec in enumerate(self.modalities):
            if spec.name not in new_pos:
                features[spec.name] = torch.zeros(n, *spec.shape)
                continue
            new_spec = dataset.modalities[new_pos[spec.name]]
            x = dataset.features[spec.name].float()
            if (
                new_spec.columns is not None
                and spec.columns is not None
                and tuple(new_spec.columns) != tuple(spec.columns)
            ):
                order = [list(new_spec.columns).index(c) for c in spec.columns]
                x = x[..., order]
            obs = dataset.observed[:, new_pos[spec.name]]
            if not standardized and spec.name in self.loaded.stats:
                # the training transform (data.preprocessing.standardize), on the aligned columns
                mean, std = self.loaded.stats[spec.name]
                x = (x - mean) / std
            features[spec.name] = torch.where(obs.view(-1, *[1] * (x.ndim - 1)), x, torch.zeros(()))
            observed[:, m] = obs
            if spec.name in dataset.lengths:
                lengths[spec.name] = dataset.lengths[spec.name]
        if self.task != "classification" or dataset.task != "classification":
            # prediction reads no label: placeholders of the layout the model was trained with
            shape = (n, 2) if self.task == "survival" else (n,)
            return Batch(
                features, observed, torch.zeros(shape, dtype=torch.float64), torch.arange(n), lengths
            )
        known = {c: i for i, c in enumerate(self.class_names)}
        mapping = torch.tensor([known.get(c, -1) for c in dataset.class_names], dtype=torch.long)
        return Batch(features, observed, mapping[dataset.labels], torch.arange(n), lengths)

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, dataset: MultimodalDataset, standardized: bool = False) -> np.ndarray:
        """(N, C) class probabilities, columns in :attr:`class_names` order. ``standardized``:
        the features are already standardised with this run's statistics (e.g. :meth:`seed_data`)."""
        return self.trainer.predict_proba_batch(self.to_batch(dataset, standardized))

    def predict(self, dataset: MultimodalDataset, standardized: bool = False) -> np.ndarray:
        """(N,) predicted class names; regression: the predicted values in the target's units;
        survival: the risk scores (higher: earlier event)."""
        if self.task != "classification":
            return self.trainer.predict_values_batch(self.to_batch(dataset, standardized))
        return predicted_names(self.class_names, self.predict_proba(dataset, standardized))

    def predict_survival(
        self, dataset: MultimodalDataset, times: np.ndarray, standardized: bool = False
    ) -> np.ndarray:
        """(N, T) survival probabilities S(t | x) at ``times`` (survival runs): the training
        split's Breslow baseline hazard and each sample's risk."""
        return self.trainer.head.survival(
            self.predict(dataset, standardized), np.asarray(times, dtype=np.float64)
        )

    def default_times(self) -> np.ndarray:
        """The quartiles of the training split's event times (survival runs)."""
        return event_time_quartiles(self.trainer.head)

    def prediction_table(
        self, dataset: MultimodalDataset, standardized: bool = False, times: np.ndarray | None = None
    ) -> pd.DataFrame:
        """One row per sample: ``id``, ``predicted`` (class name) and ``prob_<class>`` columns;
        regression: ``id``, ``predicted`` (the value); survival: ``id``, ``risk`` and
        ``survival_<t>`` at ``times`` (default :meth:`default_times`)."""
        if self.task == "regression":
            return value_table(dataset.ids, self.predict(dataset, standardized))
        if self.task == "survival":
            times = self.default_times() if times is None else np.asarray(times, dtype=np.float64)
            return survival_table(
                dataset.ids,
                self.predict(dataset, standardized),
                times,
                self.predict_survival(dataset, times, standardized),
            )
        return probability_table(dataset.ids, self.class_names, self.predict_proba(dataset, standardized))

    def retrieve(self, dataset: MultimodalDataset, standardized: bool = False) -> Retrieval:
        """Retrieved embeddings of every missing (sample, modality) pair, with the experts used.

        These are the embeddings :meth:`predict_proba` feeds to fusion (the same draws). With
        ``eval_draws`` > 1 the embedding is the average over the draws and the routing shown is
        that of the last draw.
        """
        return retrieve(self, dataset, standardized)


def predicted_names(class_names: list[str], probs: np.ndarray) -> np.ndarray:
    """(N,) the class name of each row's largest probability."""
    return np.asarray(class_names, dtype=object)[probs.argmax(axis=1)]


def probability_table(ids: list[str], class_names: list[str], probs: np.ndarray) -> pd.DataFrame:
    """One row per sample: ``id``, ``predicted`` (class name) and ``prob_<class>`` columns."""
    table = pd.DataFrame({"id": ids, "predicted": predicted_names(class_names, probs)})
    for c, name in enumerate(class_names):
        table[f"prob_{name}"] = probs[:, c]
    return table


class RunEnsemble:
    """Every model of a run (all seeds, or folds), predicting the mean of their class
    probabilities (see :func:`load_run` with ``ensemble=True``).

    Each member standardises the data with its own training statistics and retrieves from its
    own bank, exactly as it does alone; ``members`` maps each checkpoint's directory in the run
    (``seed_0``, ...) to its :class:`TrainedRun`.
    """

    def __init__(self, members: dict[str, TrainedRun], run_dir: Path | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = members
        self.run_dir = run_dir
        first_name, first = next(iter(members.items()))
        for name, member in members.items():
            if member.class_names != first.class_names:
                raise SchemaMismatchError(
                    f"{name}: classes {member.class_names} differ from {first_name}'s "
                    f"{first.class_names}; these models do not form one ensemble"
                )
            diffs = schema_differences(member.modalities, first.modalities)
            if diffs or len(member.modalities) != len(first.modalities):
                raise SchemaMismatchError(
                    f"{name}: modalities differ from {first_name}'s: "
                    + "; ".join(diffs or ["another modality count"])
                )

    @property
    def class_names(self) -> list[str]:
        return next(iter(self.members.values())).class_names

    @property
    def modalities(self) -> list[ModalitySpec]:
        return next(iter(self.members.values())).modalities

    @property
    def method(self) -> str:
        return next(iter(self.members.values())).method

    def predict_proba(self, dataset: MultimodalDataset) -> np.ndarray:
        """(N, C) mean of the members' class probabilities, columns in :attr:`class_names` order."""
        return np.mean([m.predict_proba(dataset) for m in self.members.values()], axis=0)

    @property
    def task(self) -> str:
        return next(iter(self.members.values())).task

    def predict(self, dataset: MultimodalDataset) -> np.ndarray:
        """(N,) class names of the largest mean probability; regression / survival: the mean
        of the members' values / risk scores."""
        if self.task != "classification":
            return np.mean([m.predict(dataset) for m in self.members.values()], axis=0)
        return predicted_names(self.class_names, self.predict_proba(dataset))

    def predict_survival(self, dataset: MultimodalDataset, times: np.ndarray) -> np.ndarray:
        """(N, T) mean of the members' survival curves at ``times``."""
        return np.mean([m.predict_survival(dataset, times) for m in self.members.values()], axis=0)

    def default_times(self) -> np.ndarray:
        """The quartiles of the first member's training event times."""
        return next(iter(self.members.values())).default_times()

    def prediction_table(self, dataset: MultimodalDataset, times: np.ndarray | None = None) -> pd.DataFrame:
        """:meth:`TrainedRun.prediction_table` with the members' mean predictions."""
        if self.task == "regression":
            return value_table(dataset.ids, self.predict(dataset))
        if self.task == "survival":
            times = self.default_times() if times is None else np.asarray(times, dtype=np.float64)
            return survival_table(
                dataset.ids, self.predict(dataset), times, self.predict_survival(dataset, times)
            )
        return probability_table(dataset.ids, self.class_names, self.predict_proba(dataset))


@overload
def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", ensemble: Literal[False] = False
) -> TrainedRun: ...


@overload
def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", *, ensemble: Literal[True]
) -> RunEnsemble: ...


@overload
def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", ensemble: bool = False
) -> TrainedRun | RunEnsemble: ...


def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", ensemble: bool = False
) -> TrainedRun | RunEnsemble:
    """Load one seed of a run directory written by ``moe-retriever train``, or with
    ``ensemble`` every model of it (:func:`run_checkpoints`) as a :class:`RunEnsemble`.

    ``seed`` defaults to :func:`best_seed` (best validation score). The checkpoint carries the
    config, the modality specs, the standardisation statistics and the retrieval bank.
    A cross-validation run loads the fold model with the best validation score
    (:func:`best_fold`; among the folds of repeat seed ``seed`` when given).
    """
    run = Path(run_dir)
    if ensemble:
        if seed is not None:
            raise ValueError("load_run: give a seed or ensemble=True, not both")
        return RunEnsemble(
            {
                name: TrainedRun(load_seed_checkpoint(path), run, device)
                for name, path in run_checkpoints(run).items()
            },
            run,
        )
    if fold_checkpoints(run):
        s, k = best_fold(run, seed)
        return TrainedRun(load_seed_checkpoint(fold_checkpoints(run)[(s, k)]), run, device)
    checkpoints = seed_checkpoints(run)
    chosen = best_seed(run) if seed is None else int(seed)
    if chosen not in checkpoints:
        raise InputNotFoundError(f"{run}: no checkpoint for seed {chosen}; seeds: {sorted(checkpoints)}")
    return TrainedRun(load_seed_checkpoint(checkpoints[chosen]), run, device)
