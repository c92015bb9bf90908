"""Modality combinations as bitmasks: bit m of a code is set when modality m is observed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def observed_to_codes(observed: Tensor) -> Tensor:
    """(N, M) bool -> (N,) int64 combination codes."""
    m = observed.shape[-1]
    weights = 1 << torch.arange(m, device=observed.device, dtype=torch.long)
    return (observed.long() * weights).sum(dim=-1)


def codes_to_observed(codes: Tensor, n_modalities: int) -> Tensor:
    """(N,) int codes -> (N, M) bool."""
    bits = 1 << torch.arange(n_modalities, device=codes.device, dtype=torch.long)
    return (codes.long().unsqueeze(-1) & bits) != 0


def modality_letters(names: Sequence[str]) -> list[str]:
    """Short labels for modalities: the upper-cased first letter when those are unique."""
    letters = [n[:1].upper() for n in names]
    if len(set(letters)) == len(letters):
        return letters
    return list(names)


def combination_name(code: int, names: Sequence[str]) -> str:
    """A readable name for a combination code, e.g. ``BCG`` (letters sorted) or ``a+b``."""
    letters = modality_letters(names)
    present = [letters[m] for m in range(len(names)) if code >> m & 1]
    if all(len(x) == 1 for x in letters):
        return "".join(sorted(present))
    return "+".join(present)
