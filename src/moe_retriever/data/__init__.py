"""Incomplete multimodal data: the container, combinations, supporting groups, missingness."""

from .combinations import codes_to_observed, combination_name, observed_to_codes
from .dataset import Batch, DataValidationError, ModalitySpec, MultimodalDataset
from .missingness import apply_missingness
from .splits import stratified_split
from .supporting_group import SupportingGroupIndex
from .synthetic import make_synthetic

__all__ = [
    "Batch",
    "DataValidationError",
    "ModalitySpec",
    "MultimodalDataset",
    "SupportingGroupIndex",
    "apply_missingness",
    "codes_to_observed",
    "combination_name",
    "make_synthetic",
    "observed_to_codes",
    "stratified_split",
]
