"""Bank-only samples: samples without a label that only join the retrieval bank.

The supporting group of Eq. 2, ``G(T | mc) = {j in bank : mc ⊆ mc_j, T ∈ mc_j}``, needs the
modalities of a bank sample, not its label. A sample whose label is unknown can therefore supply
intra-modal context although it can never enter the classification loss. Such samples come from

* the data: ids of a folder dataset with modality rows but no label, or rows of the estimator's
  ``y`` that are None / NaN, kept when the user says so (``data.unlabelled: bank``; the default
  ``error`` refuses them, ``drop`` leaves them out). The loader attaches them to the labelled
  dataset as :attr:`MultimodalDataset.bank_only`;
* experiments: ``data.label_fraction < 1`` hides the labels of a stratified share of every
  partition's training part (:func:`hide_labels`); with ``data.unlabelled: bank`` those samples
  become bank-only, with ``drop`` they are left out (the same labelled training samples either way).

Bank-only samples never change the labelled samples' partitions or masks: partitions are drawn
from the labelled samples only, the labelled masks from the labelled dataset as without them, and
the bank-only samples of the data get a mask of their own stream (:func:`bank_only_masked`).
In the bank they follow the labelled training rows (:func:`with_bank_only`), so a training
batch's positions are its rows of the bank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError
from .dataset import MultimodalDataset, concatenate_datasets
from .missingness import apply_missingness
from .splits import stratified_holdout

# the label a bank-only row carries in a RetrievalBank: no class, so any use of it fails loudly
NO_LABEL = -1


def with_bank_only(train: MultimodalDataset, bank_only: MultimodalDataset | None) -> MultimodalDataset:
    """The retrieval bank's samples: the labelled training rows first, the bank-only rows after."""
    return train if bank_only is None or len(bank_only) == 0 else concatenate_datasets(train, bank_only)


def run_bank_samples(dataset: MultimodalDataset) -> MultimodalDataset:
    """Every sample a run's bank file holds: the loaded (labelled) samples, then the data's
    bank-only samples (their positions in the file follow the labelled ones)."""
    return with_bank_only(dataset, dataset.bank_only)


def placeholder_labels(like: MultimodalDataset) -> Tensor:
    """Labels of ``like``'s rows as bank-only samples inside a MultimodalDataset (which needs a
    label of its task per row: class 0, target 0, or time 0 censored); no loss, metric or split
    ever reads them, and a RetrievalBank replaces them by NO_LABEL."""
    return like.labels.new_zeros(like.labels.shape)


def hide_labels(
    labels: Tensor, train: Tensor, label_fraction: float, partition_seed: int
) -> tuple[Tensor, Tensor]:
    """Split the training positions ``train`` into (kept, hidden): the labels of a stratified
    ``1 - label_fraction`` of every stratum (``labels``: the dataset's strata, its classes for
    classification) are hidden. The draw depends on the partition only,
    so every method compared on a partition keeps the same labels."""
    if label_fraction >= 1.0:
        return train, train[:0]
    try:
        return stratified_holdout(labels, train, 1.0 - label_fraction, 7_919 * int(partition_seed) + 101)
    except ValueError:
        raise ConfigError(
            f"data.label_fraction: {label_fraction} of {len(train)} training samples keeps too few "
            f"labels (at least one per class)"
        ) from None


def bank_only_masked(cfg: DataConfig, bank_only: MultimodalDataset, seed: int) -> MultimodalDataset:
    """The data's bank-only samples under the run's simulated missingness, drawn from a stream of
    their own, so that the labelled samples' masks are those drawn without them."""
    if cfg.missing.kind == "label":
        raise ConfigError(
            "data.missing.kind: 'label' draws masks from the class, which bank-only samples "
            "(data.unlabelled: bank) do not have"
        )
    return apply_missingness(bank_only, cfg.missing, 104_723 * int(seed) + 59)


@dataclass(frozen=True)
class BankOnlyPart:
    """A partition's labelled training positions and its bank-only samples.

    ``bank_only`` (masked, not yet encoded or standardised) holds the training samples whose
    labels ``data.label_fraction`` hid (with ``data.unlabelled: bank``), then the data's own
    bank-only samples; ``bank_only_index`` are their positions in the run's bank file
    (:func:`run_bank_samples`)."""

    train: Tensor
    bank_only: MultimodalDataset | None
    bank_only_index: Tensor | None


def partition_bank_only(
    cfg: DataConfig,
    dataset: MultimodalDataset,
    masked: MultimodalDataset,
    train: Tensor,
    seed: int,
    partition_seed: int,
) -> BankOnlyPart:
    """The labelled training positions and bank-only samples of one partition: ``masked`` is the
    labelled ``dataset`` under the partition's mask (seed ``seed``), ``train`` its training
    positions."""
    kept, hidden = hide_labels(masked.strata, train, cfg.label_fraction, partition_seed)
    parts: list[MultimodalDataset] = []
    index: list[Tensor] = []
    if cfg.unlabelled == "bank" and hidden.numel():
        parts.append(masked.subset(hidden))
        index.append(hidden)
    extra = dataset.bank_only
    if extra is not None and len(extra):
        parts.append(bank_only_masked(cfg, extra, seed))
        index.append(len(dataset) + torch.arange(len(extra)))
    if not parts:
        return BankOnlyPart(kept, None, None)
    joined = parts[0] if len(parts) == 1 else concatenate_datasets(parts[0], parts[1])
    return BankOnlyPart(kept, _relabelled(joined, placeholder_labels(joined)), torch.cat(index))


def usage_line(n_labelled: int, n_bank_only: int, hidden: int, mode: str) -> str:
    """The line a run prints when labels are hidden or bank-only samples exist."""
    dropped = f", {hidden} hidden labels dropped (data.unlabelled: drop)" if mode == "drop" and hidden else ""
    return (
        f"training samples: {n_labelled} labelled, {n_bank_only} bank-only "
        f"(in the retrieval bank, never in the loss){dropped}"
    )


def split_bank_only(
    dataset: MultimodalDataset, labelled: Sequence[bool] | Tensor
) -> tuple[MultimodalDataset, MultimodalDataset | None]:
    """(labelled samples, bank-only samples or None) of ``dataset`` by the boolean ``labelled``."""
    mask = torch.as_tensor(labelled, dtype=torch.bool)
    keep = mask.nonzero().flatten()
    rest = (~mask).nonzero().flatten()
    if rest.numel() == 0:
        return dataset, None
    labelled_part = dataset.subset(keep)
    bank_only = dataset.subset(rest)
    return (
        _relabelled(labelled_part, labelled_part.labels, require_every_modality=True),
        _relabelled(bank_only, placeholder_labels(bank_only)),
    )


def _relabelled(
    ds: MultimodalDataset, labels: Tensor, require_every_modality: bool = False
) -> MultimodalDataset:
    """``ds`` with ``labels``; loaded data (``require_every_modality``) must observe every modality."""
    return MultimodalDataset(
        ds.modalities,
        ds.features,
        ds.observed,
        labels,
        ds.ids,
        ds.class_names,
        ds.name,
        ds.lengths,
        ds.natural_missingness,
        require_every_modality=require_every_modality,
        task=ds.task,
    )
