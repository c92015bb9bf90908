"""The retrieval bank: the training samples that supply intra-modal context, on one device."""

from __future__ import annotations

import torch
from torch import Tensor

from .combinations import observed_to_codes
from .dataset import MultimodalDataset
from .supporting_group import SupportingGroupIndex
from .unlabelled import NO_LABEL, with_bank_only


class RetrievalBank:
    """Bank features per modality (zeros where unobserved) and the supporting-group index.

    The bank is always the training split: validation, test and prediction retrieve from it and
    never from the samples being evaluated. Its first ``n_labelled`` rows (default: all) are the
    labelled training samples; the rows after them are bank-only samples (no label: their
    ``labels`` are NO_LABEL), which supply context and never enter a loss.
    """

    def __init__(
        self, dataset: MultimodalDataset, device: torch.device | str = "cpu", n_labelled: int | None = None
    ) -> None:
        self.modality_names = dataset.modality_names
        self.features = {k: v.to(device) for k, v in dataset.features.items()}
        self.lengths = {k: v.to(device) for k, v in dataset.lengths.items()}
        self.observed = dataset.observed.to(device)
        self.n_labelled = len(dataset) if n_labelled is None else int(n_labelled)
        if not 0 <= self.n_labelled <= len(dataset):
            raise ValueError(f"n_labelled = {n_labelled} for a bank of {len(dataset)} samples")
        labels = dataset.labels.clone()
        labels[self.n_labelled :] = NO_LABEL
        self.labels = labels.to(device)
        self.ids = list(dataset.ids)
        self.index = SupportingGroupIndex(observed_to_codes(dataset.observed), dataset.n_modalities).to(
            device
        )

    def __len__(self) -> int:
        return int(self.observed.shape[0])

    @property
    def n_bank_only(self) -> int:
        return len(self) - self.n_labelled

    def starts_with(self, train: MultimodalDataset) -> bool:
        """Whether the labelled rows of this bank are ``train``, in order (so that a training
        batch's positions in ``train`` are its rows of the bank)."""
        return self.n_labelled == len(train) and self.ids[: self.n_labelled] == list(train.ids)

    def rows(self, modality: int, positions: Tensor) -> tuple[Tensor, Tensor | None]:
        name = self.modality_names[modality]
        lengths = self.lengths.get(name)
        return self.features[name][positions], (lengths[positions] if lengths is not None else None)


def training_bank(
    train: MultimodalDataset, bank_only: MultimodalDataset | None, device: torch.device | str = "cpu"
) -> RetrievalBank:
    """The bank of a fit: the labelled training split, then its bank-only samples (if any)."""
    return RetrievalBank(with_bank_only(train, bank_only), device, len(train))
