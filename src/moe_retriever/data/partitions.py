"""The evaluation protocol's partitions: which samples train, validate and test, under which mask.

A :class:`Partition` is the holdout split of a seed or one fold of a cross-validation repeat;
:func:`partition_split` draws its missingness mask and sample positions, and
:func:`prepare_partition` gives its standardised train / val / test subsets (:class:`SeedData`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import ExperimentConfig
from .dataset import MultimodalDataset
from .missingness import apply_missingness, simulated_mask
from .preprocessing import encode_categories, fit_categories, fit_standardizer, standardize
from .splits import stratified_folds, stratified_holdout, stratified_split
from .unlabelled import partition_bank_only, usage_line, with_bank_only


@dataclass
class SeedData:
    """The standardised train / validation / test subsets of one partition and the training
    statistics they were standardised with."""

    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset
    stats: dict[str, tuple[Tensor, Tensor]]
    # positions of the training split in the loaded data set (what a shared bank file holds)
    train_index: Tensor | None = None
    # per split ("val", "test"), "<modality>.<column>" -> samples with a categorical level the
    # training split never saw (encoded as <unknown>); splits without any are left out
    unknown_levels: dict[str, dict[str, int]] = field(default_factory=dict)
    # samples without a label that join the retrieval bank after ``train`` (data/unlabelled.py),
    # encoded and standardised as ``train``; their positions in the run's bank file
    bank_only: MultimodalDataset | None = None
    bank_only_index: Tensor | None = None

    @property
    def bank(self) -> MultimodalDataset:
        """The retrieval bank's samples: ``train``, then the bank-only samples."""
        return with_bank_only(self.train, self.bank_only)

    @property
    def bank_index(self) -> Tensor | None:
        """The bank's positions in the run's bank file (``train_index``, then the bank-only ones)."""
        if self.bank_only_index is None or self.train_index is None:
            return self.train_index
        return torch.cat([self.train_index, self.bank_only_index])


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
            zip(("train", "val", "test"), stratified_split(dataset.strata, cfg.data.split, seed), strict=True)
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
    return prepare_partition(cfg, dataset, Partition(seed))


def split_data(
    cfg: ExperimentConfig,
    ds: MultimodalDataset,
    train_index: Sequence[int] | Tensor,
    val_index: Sequence[int] | Tensor,
    test_index: Sequence[int] | Tensor,
    bank_only: MultimodalDataset | None = None,
    bank_only_index: Tensor | None = None,
) -> SeedData:
    """The (train, val, test) subsets of ``ds`` (already masked), their categorical columns
    one-hot encoded with the levels of the training subset, standardised with statistics of the
    training subset when ``cfg.data.standardize``. ``bank_only`` (masked samples without a label)
    is encoded and standardised as the training subset, whose statistics it never changes."""
    categories = fit_categories(ds.subset(train_index))
    unknown = {}
    if categories:
        for split, index in (("val", val_index), ("test", test_index)):
            counts = encode_categories(ds.subset(index), categories)[1]
            if counts:
                unknown[split] = counts
        ds, _ = encode_categories(ds, categories)
        if bank_only is not None:
            bank_only, _ = encode_categories(bank_only, categories)
    train = ds.subset(train_index)
    stats = fit_standardizer(train) if cfg.data.standardize else {}
    return SeedData(
        standardize(train, stats),
        standardize(ds.subset(val_index), stats),
        standardize(ds.subset(test_index), stats),
        stats,
        torch.as_tensor(train_index, dtype=torch.long),
        unknown,
        standardize(bank_only, stats) if bank_only is not None else None,
        bank_only_index,
    )


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
    folds = stratified_folds(dataset.strata, cfg.protocol.folds, part.seed)
    if not 0 <= part.fold < len(folds):
        raise ValueError(f"fold {part.fold} does not exist: protocol.folds = {cfg.protocol.folds}")
    rest = torch.cat([f for k, f in enumerate(folds) if k != part.fold]).sort().values
    val_fraction = cfg.data.split[1] / (cfg.data.split[0] + cfg.data.split[1])
    tr, va = stratified_holdout(dataset.strata, rest, val_fraction, part.rng_seed)
    parts = {"train": tr, "val": va, "test": folds[part.fold]}
    return _masked(cfg, dataset, part.seed, parts), parts


def bank_only_usage(cfg: ExperimentConfig, dataset: MultimodalDataset, part: Partition) -> str | None:
    """The line saying how many labelled training samples and bank-only samples ``part`` uses;
    None when every training label is kept and the data has no bank-only samples."""
    extra = dataset.bank_only is not None and len(dataset.bank_only) > 0
    if cfg.data.label_fraction >= 1 and not extra:
        return None
    ds, parts = partition_split(cfg, dataset, part)
    b = partition_bank_only(cfg.data, dataset, ds, parts["train"], part.seed, part.rng_seed)
    n_bank_only = len(b.bank_only) if b.bank_only is not None else 0
    hidden = len(parts["train"]) - len(b.train)
    return f"{part.label}: " + usage_line(len(b.train), n_bank_only, hidden, cfg.data.unlabelled)


def prepare_partition(cfg: ExperimentConfig, dataset: MultimodalDataset, part: Partition) -> SeedData:
    """The standardised train / val / test data of one partition (:func:`partition_split`), with
    its bank-only samples (:func:`~.unlabelled.partition_bank_only`)."""
    ds, parts = partition_split(cfg, dataset, part)
    b = partition_bank_only(cfg.data, dataset, ds, parts["train"], part.seed, part.rng_seed)
    return split_data(cfg, ds, b.train, parts["val"], parts["test"], b.bank_only, b.bank_only_index)
