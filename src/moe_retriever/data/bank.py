"""The retrieval bank: the training samples that supply intra-modal context, on one device."""

from __future__ import annotations

import torch
from torch import Tensor

from .combinations import observed_to_codes
from .dataset import MultimodalDataset
from .supporting_group import SupportingGroupIndex


class RetrievalBank:
    """Bank features per modality (zeros where unobserved) and the supporting-group index.

    The bank is always the training split: validation, test and prediction retrieve from it and
    never from the samples being evaluated.
    """

    def __init__(self, dataset: MultimodalDataset, device: torch.device | str = "cpu") -> None:
        self.modality_names = dataset.modality_names
        self.features = {k: v.to(device) for k, v in dataset.features.items()}
        self.lengths = {k: v.to(device) for k, v in dataset.lengths.items()}
        self.observed = dataset.observed.to(device)
        self.labels = dataset.labels.to(device)
        self.ids = list(dataset.ids)
        self.index = SupportingGroupIndex(observed_to_codes(dataset.observed), dataset.n_modalities).to(
            device
        )

    def __len__(self) -> int:
        return int(self.observed.shape[0])

    def rows(self, modality: int, positions: Tensor) -> tuple[Tensor, Tensor | None]:
        name = self.modality_names[modality]
        lengths = self.lengths.get(name)
        return self.features[name][positions], (lengths[positions] if lengths is not None else None)
