"""The sparse MoE block: routers + experts + expert pools, and its auxiliary loss terms.

Experts are laid out as ``n_pools`` modality pools of ``pool_experts`` experts followed by shared
ones; a token of pool ``p`` may choose among pool ``p`` and the shared experts. With R > 1
routers (the paper's |R|), each picks top-k and their mixtures are averaged; all R·k assignments
go through one dispatch. :func:`build_sparse_moe` builds the block from a :class:`MoEConfig`;
other routers (e.g. FuseMoE's Laplace router) plug in through the constructor.

The block returns its auxiliary terms unweighted, by name (``load_balance``, ``z_loss``); it
computes only the terms it was built with (:func:`moe_loss_weights`: those of weight > 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import MoEConfig
from .experts import FFNExperts
from .router import RouterOutput, TopKRouter


@dataclass
class MoEOutput:
    hidden: Tensor  # (T, d)
    losses: dict[str, Tensor]  # unweighted auxiliary terms by name (load_balance, z_loss)
    indices: Tensor  # (T, R*k) selected experts
    weights: Tensor  # (T, R*k) their mixing weights
    routes: list[RouterOutput]  # each router's output


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
        1, indices, torch.ones_like(indices, dtype=probs.dtype)
    )  # (T, E) assignment counts
    # per pool: the assignments and probabilities summed over its tokens, and its token count
    # (not F.one_hot, which validates the ids on the host on a GPU)
    in_pool = (pools.unsqueeze(1) == torch.arange(n_pools, device=pools.device)).to(probs.dtype)
    sums = in_pool.t() @ torch.cat([one_hot, probs], dim=1)  # (n_pools, 2E)
    tokens = in_pool.sum(0)
    denom = tokens.clamp(min=1).unsqueeze(1)
    f = sums[:, :n_experts] / (denom * k)
    p = sums[:, n_experts:] / denom
    # a pool without tokens has f = 0, so it adds exactly 0 to the sum over pools; the mean is
    # over the pools that have tokens, counted on the device (no host sync)
    per_pool = allowed.sum(1).to(probs.dtype) * (f * p).sum(1)
    return per_pool.sum() / (tokens > 0).sum().clamp(min=1)


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE z-loss: mean squared log-partition of the (masked) router logits."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def moe_loss_weights(cfg: MoEConfig) -> dict[str, float]:
    """The configured weight of each auxiliary term of a :class:`SparseMoE` built from ``cfg``."""
    return {"load_balance": cfg.aux_loss_weight, "z_loss": cfg.z_loss_weight}


class SparseMoE(nn.Module):
    """Routers + experts + the pool mask (which experts each pool's tokens may choose).

    ``routers``: modules called ``router(x, allowed)`` returning a :class:`RouterOutput` (top-k
    over ``experts.n_experts``); ``loss_terms``: the auxiliary terms to compute.
    """

    allowed: Tensor

    def __init__(
        self,
        routers: Sequence[nn.Module],
        experts: FFNExperts,
        n_pools: int = 1,
        pool_experts: int = 0,
        dispatch: str = "auto",
        loss_terms: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.n_pools = n_pools
        self.pool_experts = pool_experts
        self.n_experts = experts.n_experts
        self.shared_experts = self.n_experts - n_pools * pool_experts
        unknown = set(loss_terms) - {"load_balance", "z_loss"}
        if unknown or self.shared_experts < 0:
            raise ValueError(
                f"SparseMoE: unknown loss terms {sorted(unknown)} or more pool experts "
                f"({n_pools} x {pool_experts}) than experts ({self.n_experts})"
            )
        allowed = torch.zeros(n_pools, self.n_experts, dtype=torch.bool)
        for p in range(n_pools):
            allowed[p, p * pool_experts : (p + 1) * pool_experts] = True
        allowed[:, n_pools * pool_experts :] = True
        self.register_buffer("allowed", allowed, persistent=False)
        self.routers = nn.ModuleList(routers)
        self.experts = experts
        self.dispatch = dispatch
        self.loss_terms = tuple(loss_terms)

    def expert_names(self, pool_names: list[str] | None = None) -> list[str]:
        """Readable expert labels: ``<pool>_<i>`` for pool experts, ``Shared_<i>`` for shared."""
        names = pool_names or [str(p) for p in range(self.n_pools)]
        out = [f"{names[p]}_{i + 1}" for p in range(self.n_pools) for i in range(self.pool_experts)]
        return out + [f"Shared_{i + 1}" for i in range(self.shared_experts)]

    def forward(self, x: Tensor, pools: Tensor | None = None) -> MoEOutput:
        if pools is None:
            pools = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        allowed = self.allowed[pools]
        routes: list[RouterOutput] = [router(x, allowed) for router in self.routers]
        if len(routes) == 1:
            indices, weights = routes[0].indices, routes[0].weights
        else:
            indices = torch.cat([o.indices for o in routes], dim=1)
            weights = torch.cat([o.weights for o in routes], dim=1) / len(routes)
        hidden = self.experts(x, indices, weights, self.dispatch)
        losses: dict[str, Tensor] = {}
        if "load_balance" in self.loss_terms and x.shape[0] > 0:
            losses["load_balance"] = _mean(
                [load_balancing_loss(o.probs, o.indices, pools, self.allowed) for o in routes]
            )
        if "z_loss" in self.loss_terms and x.shape[0] > 0:
            losses["z_loss"] = _mean([router_z_loss(o.logits) for o in routes])
        return MoEOutput(hidden, losses, indices, weights, routes)


def _mean(terms: list[Tensor]) -> Tensor:
    """The routers' mean of a term, summed left to right."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total / len(terms)


def build_sparse_moe(dim: int, cfg: MoEConfig, n_pools: int = 1) -> SparseMoE:
    """``cfg.num_routers`` top-k routers (created first) and the FFN experts of ``cfg``."""
    e_t, e_sh = cfg.experts_per_modality, cfg.shared_experts
    n_experts = n_pools * e_t + e_sh
    if not 1 <= cfg.top_k <= e_t + e_sh:
        raise ValueError(
            f"top_k={cfg.top_k} must be in [1, {e_t + e_sh}] (experts_per_modality + shared_experts)"
        )
    routers = [
        TopKRouter(dim, n_experts, cfg.top_k, cfg.noisy_gating, cfg.router_softmax)
        for _ in range(cfg.num_routers)
    ]
    experts = FFNExperts(n_experts, dim, cfg.expert_hidden)
    terms = tuple(name for name, weight in moe_loss_weights(cfg).items() if weight > 0)
    return SparseMoE(routers, experts, n_pools, e_t, cfg.dispatch, terms)
