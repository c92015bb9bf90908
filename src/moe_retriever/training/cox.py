"""Cox proportional hazards: the partial likelihood loss and the Breslow baseline hazard.

A survival model predicts a log-risk ``r(x)``; its hazard is ``h0(t) exp(r(x))``. It is trained
on the negative Cox partial log-likelihood of a batch (:func:`cox_partial_nll`), with tied event
times handled by Breslow's approximation (every tied event sees the whole risk set) or Efron's
(the tied events leave the risk set gradually). After training, :class:`BreslowBaseline` estimates
the cumulative baseline hazard ``H0`` on the training split, so that survival curves
``S(t | x) = exp(-H0(t) exp(r(x)))`` can be predicted (non-increasing in t by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Ties = Literal["breslow", "efron"]


def _tie_groups(time: Tensor) -> tuple[Tensor, Tensor]:
    """The order that sorts ``time`` in decreasing order, and the index of each sorted sample's
    group of equal times (groups numbered in that order)."""
    order = torch.argsort(time, descending=True, stable=True)
    sorted_time = time[order]
    new_group = torch.ones_like(sorted_time, dtype=torch.bool)
    new_group[1:] = sorted_time[1:] != sorted_time[:-1]
    return order, torch.cumsum(new_group.long(), 0) - 1


def cox_partial_nll(risk: Tensor, time: Tensor, event: Tensor, ties: Ties = "breslow") -> Tensor:
    """The negative Cox partial log-likelihood of log-risks ``risk`` (N,), divided by the number
    of events (so its scale does not grow with the batch); 0 (connected to ``risk``) when the
    batch has no event. ``time`` (N,) follow-up times, ``event`` (N,) 1 / True where observed."""
    risk = risk.reshape(-1)
    event = event.reshape(-1).to(risk.dtype)
    n_events = event.sum()
    if not bool(n_events > 0):
        return risk.sum() * 0.0
    order, group = _tie_groups(time.reshape(-1))
    r, e = risk[order], event[order]
    n_groups = int(group[-1]) + 1
    # log of each group's risk set sum: the cumulative log-sum-exp at the group's last position
    # (times sorted decreasing, so everything before it has a time >= the group's)
    cum = torch.logcumsumexp(r, dim=0)
    last = torch.zeros(n_groups, dtype=torch.long, device=r.device).scatter_reduce(
        0, group, torch.arange(len(r), device=r.device), reduce="amax"
    )
    log_risk_set = cum[last]  # (G,)
    if ties == "breslow":
        return -(e * (r - log_risk_set[group])).sum() / n_events
    # Efron: the l-th of a group's d tied events (l = 0..d-1) sees the risk set minus l/d of the
    # tied events' total; computed relative to the group's risk set sum for stability
    d = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add(0, group, e)
    tied = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add(
        0, group, e * torch.exp(r - log_risk_set[group])
    )  # (sum of exp(r) of the tied events) / (risk set sum), in [0, 1]
    rank = _rank_within_group(group, e)
    frac = rank / d[group].clamp(min=1)
    inner = (1 - frac * tied[group]).clamp(min=torch.finfo(r.dtype).tiny)
    log_denominator = log_risk_set[group] + torch.log(inner)
    return -(e * (r - log_denominator)).sum() / n_events


def _rank_within_group(group: Tensor, event: Tensor) -> Tensor:
    """0, 1, ... for the events of each group of equal times, in sorted order (0 elsewhere)."""
    count = torch.cumsum(event, 0)
    start = torch.zeros(int(group[-1]) + 1, dtype=event.dtype, device=event.device).scatter_reduce(
        0, group, count - event, reduce="amin", include_self=False
    )
    return (count - event - start[group]) * event


@dataclass
class BreslowBaseline:
    """The Breslow estimate of the cumulative baseline hazard, a step function that jumps at
    the distinct event times of the training split: H0(t) = sum over event times t_k <= t of
    d_k / sum_{j: t_j >= t_k} exp(r_j)."""

    times: np.ndarray  # (K,) distinct event times, increasing
    cumulative_hazard: np.ndarray  # (K,) H0 at each of them

    @classmethod
    def fit(cls, risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> BreslowBaseline:
        risk = np.asarray(risk, dtype=np.float64).reshape(-1)
        time = np.asarray(time, dtype=np.float64).reshape(-1)
        event = np.asarray(event).astype(bool).reshape(-1)
        if not event.any():
            raise ValueError("the Breslow baseline needs at least one event")
        # weights relative to the largest risk (no overflow); the jumps are scaled back below
        shift = float(risk.max())
        w = np.exp(risk - shift)
        event_times = np.unique(time[event])
        order = np.argsort(time)
        sorted_time, sorted_w = time[order], w[order]
        # risk set sum at each event time: the weights of samples with time >= t
        tail = np.concatenate([np.cumsum(sorted_w[::-1])[::-1], [0.0]])
        at_risk = tail[np.searchsorted(sorted_time, event_times, side="left")]
        deaths = np.array([np.sum(event & (time == t)) for t in event_times], dtype=np.float64)
        jumps = deaths / at_risk * np.exp(-shift)
        return cls(event_times, np.cumsum(jumps))

    def hazard_at(self, times: np.ndarray) -> np.ndarray:
        """H0 at ``times`` (0 before the first event time)."""
        idx = np.searchsorted(self.times, np.asarray(times, dtype=np.float64), side="right")
        return np.concatenate([[0.0], self.cumulative_hazard])[idx]

    def survival(self, risk: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(N, T) survival probabilities S(t | x) = exp(-H0(t) exp(r(x))) of log-risks ``risk``
        at ``times``."""
        h0 = self.hazard_at(times)
        risk = np.asarray(risk, dtype=np.float64).reshape(-1, 1)
        return np.exp(-h0[None, :] * np.exp(risk))

    def as_dict(self) -> dict[str, list[float]]:
        return {"times": self.times.tolist(), "cumulative_hazard": self.cumulative_hazard.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> BreslowBaseline:
        return cls(
            np.asarray(d["times"], dtype=np.float64), np.asarray(d["cumulative_hazard"], dtype=np.float64)
        )
