"""The routers of a sparse mixture of experts: the top-k router (paper Eq. 1) and FuseMoE's
Laplace router. Both are called ``router(x, allowed)`` and return a :class:`RouterOutput`.

Each token may only pick from the experts its row of ``allowed`` permits: for the retriever that is
the target modality's pool plus the shared experts. Softmax is applied over the allowed experts
before top-k as in the paper (weights are not renormalised), or after top-k over the k picked
logits as in the authors' released code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RouterSoftmax


@dataclass
class RouterOutput:
    logits: Tensor  # (T, E) clean logits, -inf outside the allowed experts
    probs: Tensor  # (T, E) softmax of the logits over allowed experts (for the aux losses)
    weights: Tensor  # (T, k) mixing weight of each selected expert
    indices: Tensor  # (T, k) selected expert ids


class TopKRouter(nn.Module):
    def __init__(
        self,
        dim: int,
        n_experts: int,
        top_k: int,
        noisy: bool = False,
        softmax: RouterSoftmax = "before_topk",
    ) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, n_experts, bias=False)
        self.noise = nn.Linear(dim, n_experts, bias=False) if noisy else None
        self.top_k = top_k
        self.softmax = softmax
        self.n_experts = n_experts

    def forward(self, x: Tensor, allowed: Tensor | None = None) -> RouterOutput:
        logits = self.gate(x)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        probs = F.softmax(logits, dim=-1)
        select_logits = logits
        if self.noise is not None and self.training:
            # noisy top-k gating (Shazeer et al., 2017): exploration noise on the selection
            std = F.softplus(self.noise(x))
            select_logits = logits + torch.randn_like(logits) * std
        top_logits, indices = select_logits.topk(self.top_k, dim=-1)
        if self.softmax == "before_topk":
            # without noise the selection logits are the logits: their softmax is ``probs``
            select_probs = probs if select_logits is logits else F.softmax(select_logits, dim=-1)
            weights = select_probs.gather(-1, indices)
        else:
            weights = F.softmax(top_logits, dim=-1)
        return RouterOutput(logits, probs, weights, indices)


class LaplaceRouter(nn.Module):
    """FuseMoE's gate: top-k on negative Euclidean distances to learned expert keys,
    logit_e = -||x - w_e||_2, with optional noisy selection and softmax over the picked experts."""

    def __init__(self, dim: int, n_experts: int, top_k: int, noisy: bool = False) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(n_experts, dim) * dim**-0.5)
        self.noise = nn.Linear(dim, n_experts, bias=False) if noisy else None
        self.top_k = top_k
        self.n_experts = n_experts

    def forward(self, x: Tensor, allowed: Tensor | None = None) -> RouterOutput:
        logits = -torch.cdist(x, self.keys)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        select = logits
        if self.noise is not None and self.training:
            select = logits + torch.randn_like(logits) * F.softplus(self.noise(x))
        top, indices = select.topk(self.top_k, dim=-1)
        return RouterOutput(logits, F.softmax(logits, dim=-1), F.softmax(top, dim=-1), indices)
