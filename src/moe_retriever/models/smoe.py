"""The sparse MoE block: routers + experts + auxiliary losses.

Experts are laid out as ``n_pools`` modality pools of ``experts_per_modality`` experts followed by
``shared_experts`` shared ones; a token of pool ``p`` may choose among pool ``p`` and the shared
experts. With ``num_routers`` R > 1 (the paper's |R|), R independent routers each pick top-k and
their mixtures are averaged; all R·k assignments go through one dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import MoEConfig
from .experts import FFNExperts
from .router import RouterOutput, TopKRouter


@dataclass
class MoEOutput:
    hidden: Tensor  # (T, d)
    aux_loss: Tensor  # scalar, already weighted
    indices: Tensor  # (T, R*k) selected experts
    weights: Tensor  # (T, R*k) their mixing weights


def load_balancing_loss(probs: Tensor, indices: Tensor, pools: Tensor, allowed: Tensor) -> Tensor:
    """Switch-Transformer load balancing, computed within each expert pool.

    For pool p with allowed experts A_p: L_p = |A_p| * sum_e f_pe * P_pe, where f_pe is the fraction
    of the pool's assignments that go to expert e and P_pe the mean router probability of e over
    the pool's tokens. The loss is the mean of L_p over the pools that have tokens; it equals 1
    when routing is uniform within every pool.
    """
    n_pools, n_experts = allowed.shape
    k = indices.shape[1]
    one_hot = torch.zeros_like(probs).scatter_add(
        1, indices, torch.ones_like(indices, dtype=probs.dtype))  # (T, E) assignment counts
    tokens = torch.bincount(pools, minlength=n_pools).to(probs.dtype)  # (n_pools,)
    assign = probs.new_zeros(n_pools, n_experts).index_add(0, pools, one_hot)
    prob_sum = probs.new_zeros(n_pools, n_experts).index_add(0, pools, probs)
    present = tokens > 0
    denom = tokens.clamp(min=1).unsqueeze(1)
    f = assign / (denom * k)
    p = prob_sum / denom
    per_pool = allowed.sum(1).to(probs.dtype) * (f * p).sum(1)
    return per_pool[present].mean() if bool(present.any()) else probs.sum() * 0


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE z-loss: mean squared log-partition of the (masked) router logits."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


class SparseMoE(nn.Module):
    def __init__(self, dim: int, cfg: MoEConfig, n_pools: int = 1) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_pools = n_pools
        e_t, e_sh = cfg.experts_per_modality, cfg.shared_experts
        self.n_experts = n_pools * e_t + e_sh
        if not 1 <= cfg.top_k <= e_t + e_sh:
            raise ValueError(f"top_k={cfg.top_k} must be in [1, {e_t + e_sh}] "
                             f"(experts_per_modality + shared_experts)")
        allowed = torch.zeros(n_pools, self.n_experts, dtype=torch.bool)
        for p in range(n_pools):
            allowed[p, p * e_t:(p + 1) * e_t] = True
        allowed[:, n_pools * e_t:] = True
        self.register_buffer("allowed", allowed, persistent=False)
        self.routers = nn.ModuleList(
            TopKRouter(dim, self.n_experts, cfg.top_k, cfg.noisy_gating, cfg.router_softmax)
            for _ in range(cfg.num_routers))
        self.experts = FFNExperts(self.n_experts, dim, cfg.expert_hidden)

    def expert_names(self, pool_names: list[str] | None = None) -> list[str]:
        """Readable expert labels: ``<pool>_<i>`` for pool experts, ``Shared_<i>`` for shared."""
        names = pool_names or [str(p) for p in range(self.n_pools)]
        out = [f"{names[p]}_{i + 1}" for p in range(self.n_pools)
               for i in range(self.cfg.experts_per_modality)]
        return out + [f"Shared_{i + 1}" for i in range(self.cfg.shared_experts)]

    def forward(self, x: Tensor, pools: Tensor | None = None) -> MoEOutput:
        if pools is None:
            pools = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        allowed = self.allowed[pools]
        routes: list[RouterOutput] = [router(x, allowed) for router in self.routers]
        r = len(routes)
        indices = torch.cat([o.indices for o in routes], dim=1)
        weights = torch.cat([o.weights for o in routes], dim=1) / r
        hidden = self.experts(x, indices, weights, self.cfg.dispatch)
        aux = x.new_zeros(())
        if self.cfg.aux_loss_weight > 0 and x.shape[0] > 0:
            lb = sum(load_balancing_loss(o.probs, o.indices, pools, self.allowed) for o in routes) / r
            aux = aux + self.cfg.aux_loss_weight * lb
        if self.cfg.z_loss_weight > 0 and x.shape[0] > 0:
            aux = aux + self.cfg.z_loss_weight * sum(router_z_loss(o.logits) for o in routes) / r
        return MoEOutput(hidden, aux, indices, weights)
