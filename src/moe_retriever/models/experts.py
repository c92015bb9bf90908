"""FFN experts with stacked weights and sort-based sparse dispatch.

Weights are stored stacked, ``w1: (E, d, h)`` and ``w2: (E, h, d)``. Token-expert assignments are
sorted by expert once; then either

* ``bmm``: the sorted tokens are scattered into a padded ``(E, C_max, d)`` buffer and every
  expert runs in one batched matmul (fastest for small token counts), or
* ``split``: the sorted tokens are split into per-expert chunks and each chunk meets its own
  weight slice from ``unbind(0)`` (fastest for large token counts, no padding).

``loop`` (a per-expert mask over all assignments) is kept as the oracle the tests compare with.
No backend ever evaluates an expert on a token that was not routed to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# above this many assignments the padded buffer costs more than the per-expert split
BMM_MAX_ASSIGNMENTS = 8192


class FFNExperts(nn.Module):
    def __init__(self, n_experts: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.n_experts, self.dim, self.hidden = n_experts, dim, hidden
        self.w1 = nn.Parameter(torch.empty(n_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(n_experts, dim))
        nn.init.uniform_(self.w1, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
        nn.init.uniform_(self.w2, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` applied densely to ``x`` (used by the loop oracle and by analyses)."""
        return F.gelu(x @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]

    def forward(self, x: Tensor, indices: Tensor, weights: Tensor, backend: str = "auto") -> Tensor:
        """y_t = sum_j weights[t, j] * expert_{indices[t, j]}(x_t); x (T, d), indices/weights (T, k)."""
        if backend == "auto":
            backend = "bmm" if indices.numel() <= BMM_MAX_ASSIGNMENTS else "split"
        if backend == "loop":
            return self._loop(x, indices, weights)
        n_tokens, k = indices.shape
        flat_expert = indices.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        expert_sorted = flat_expert[order]
        token_sorted = order // k
        weight_sorted = weights.reshape(-1)[order].unsqueeze(1)
        counts = torch.bincount(flat_expert, minlength=self.n_experts)
        x_sorted = x[token_sorted]
        if backend == "bmm":
            y_sorted = self._bmm(x_sorted, expert_sorted, counts)
        elif backend == "split":
            y_sorted = self._split(x_sorted, counts)
        else:
            raise ValueError(f"unknown dispatch backend {backend!r}")
        out = x.new_zeros(n_tokens, self.dim)
        return out.index_add(0, token_sorted, y_sorted * weight_sorted)

    def _bmm(self, x_sorted: Tensor, expert_sorted: Tensor, counts: Tensor) -> Tensor:
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(x_sorted.shape[0], device=x_sorted.device) - starts[expert_sorted]
        capacity = int(counts.max()) if counts.numel() else 0
        buf = x_sorted.new_zeros(self.n_experts, max(capacity, 1), self.dim)
        buf = buf.index_put((expert_sorted, slot), x_sorted)
        h = F.gelu(torch.baddbmm(self.b1.unsqueeze(1), buf, self.w1))
        y = torch.baddbmm(self.b2.unsqueeze(1), h, self.w2)
        return y[expert_sorted, slot]

    def _split(self, x_sorted: Tensor, counts: Tensor) -> Tensor:
        chunks = x_sorted.split(counts.tolist())
        outs = []
        for chunk, w1, b1, w2, b2 in zip(chunks, self.w1.unbind(0), self.b1.unbind(0),
                                         self.w2.unbind(0), self.b2.unbind(0)):
            if chunk.shape[0]:
                outs.append(F.gelu(chunk @ w1 + b1) @ w2 + b2)
        return torch.cat(outs) if outs else x_sorted.new_zeros(0, self.dim)

    def _loop(self, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        out = x.new_zeros(x.shape[0], self.dim)
        for e in range(self.n_experts):
            token, slot = (indices == e).nonzero(as_tuple=True)
            if token.numel():
                y = self.expert(e, x[token]) * weights[token, slot].unsqueeze(1)
                out = out.index_add(0, token, y)
        return out
