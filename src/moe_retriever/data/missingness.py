"""Simulated missingness: which observed modalities a run hides, drawn from the run seed.

Kinds (``data.missing.kind``; see :class:`~moe_retriever.config.MissingnessConfig`):

* ``drop``: MCAR, each observed modality hidden independently with probability ``p``.
* ``mar``: modality m is hidden with probability ``sigmoid(b_m + strength * s_i)``, where ``s_i``
  is the standardised first principal score of the sample's *driver* modality (never hidden).
* ``mnar``: the same with ``s_i`` the score of modality m's own features.
* ``label``: the same with ``s_i`` the class score, ``-1`` for class 0 up to ``+1`` for the last
  class, so with ``strength > 0`` classes later in ``class_names`` miss modalities more often.
* ``monotone``: modalities ordered by cost; a sample that misses one misses every later one.
* ``patterns``: every sample gets one allowed combination, drawn with the patterns' probabilities.

``p`` is the marginal missing rate of each modality (for ``monotone``: the mean over the
modalities after the first in ``order``), measured among the samples that have the modality
before simulation. Many libraries use ``p`` as a per-sample or per-entry probability instead.
For ``mar``, ``mnar`` and ``label`` the intercepts ``b_m`` are solved (``scipy.optimize.brentq``)
so that the *realised* rate, after the rescue below, equals ``p`` in expectation; ``drop`` keeps
its historical draws, so its realised rate is slightly under ``p`` (by about ``p**M / M`` on
complete data with M modalities).

Masks are drawn from a ``torch.Generator`` seeded by the run seed, so every method compared on
the same seed sees the same masks. A simulated mask only hides modalities (it never reveals one a
sample does not have), and every sample keeps at least one observed modality: a sample whose draw
would leave it empty keeps one of its own modalities, chosen at random.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor

from ..config import ConfigError, DataConfig, MissingnessConfig, MissingnessOrigin, MissingPattern
from .dataset import DataValidationError, MultimodalDataset

# the kinds whose missing probability is logistic in a per-sample score
SCORED_KINDS = ("mar", "mnar", "label")
# scores of modalities wider than this come from a fixed random projection to PROJECTED_WIDTH
MAX_PCA_WIDTH = 1024
PROJECTED_WIDTH = 256
_INTERCEPT_BOUND = 60.0


def drop_mask(observed: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Hide each observed modality independently with probability ``p``."""
    if not 0.0 <= p < 1.0:
        raise DataValidationError(f"drop probability must be in [0, 1), got {p}")
    keep = torch.rand(observed.shape, generator=generator) >= p
    return _keep_one(observed, observed & keep, generator)


def pattern_mask(
    observed: Tensor, patterns: list[MissingPattern], names: list[str], generator: torch.Generator
) -> Tensor:
    """Give every sample one allowed combination, drawn with the patterns' probabilities."""
    key = "data.missing.patterns"
    if not patterns:
        raise DataValidationError(f"data.missing.kind is 'patterns' but {key} is empty")
    rows, probs = [], []
    for i, pat in enumerate(patterns):
        bad = [m for m in pat.modalities if m not in names]
        if bad:
            raise DataValidationError(f"{key}[{i}].modalities: unknown modalities {bad}; known: {names}")
        if not pat.modalities:
            raise DataValidationError(f"{key}[{i}].modalities: a pattern needs at least one modality")
        if pat.prob < 0:
            raise DataValidationError(f"{key}[{i}].prob: must be >= 0, got {pat.prob}")
        rows.append([n in pat.modalities for n in names])
        probs.append(pat.prob)
    probs_t = torch.tensor(probs, dtype=torch.float)
    if probs_t.sum() <= 0:
        raise DataValidationError(f"{key}: the probabilities sum to zero")
    choice = torch.multinomial(
        probs_t / probs_t.sum(), observed.shape[0], replacement=True, generator=generator
    )
    allowed = torch.tensor(rows, dtype=torch.bool)[choice]
    return _keep_one(observed, observed & allowed, generator)


def _keep_one(original: Tensor, new: Tensor, generator: torch.Generator) -> Tensor:
    empty = ~new.any(dim=1)
    if empty.any():
        scores = torch.rand(original.shape, generator=generator).masked_fill(~original, -1.0)
        pick = scores.argmax(dim=1)
        rescue = torch.zeros_like(new)
        rescue[torch.arange(new.shape[0]), pick] = True
        new = torch.where(empty.unsqueeze(1), rescue & original, new)
    return new


def modality_score(x: Tensor, rows: Tensor) -> np.ndarray:
    """The first principal score of a modality's standardised features: (N,), zero-mean and unit
    variance over ``rows`` (the samples that observe it), 0 elsewhere.

    Features are flattened per sample and z-scored column by column over ``rows``; modalities
    wider than ``MAX_PCA_WIDTH`` are first projected on a fixed random Gaussian basis. The sign is
    fixed so that the component's largest loading is positive, so the score is deterministic.
    """
    mask = rows.cpu().numpy().astype(bool)
    out = np.zeros(mask.shape[0])
    if mask.sum() < 2:
        return out
    sel = x.reshape(x.shape[0], -1)[torch.as_tensor(mask)].double().cpu().numpy()
    std = sel.std(0)
    sel = (sel - sel.mean(0)) / np.where(std > 1e-12, std, 1.0)
    if sel.shape[1] > MAX_PCA_WIDTH:
        basis = np.random.default_rng(0).standard_normal((sel.shape[1], PROJECTED_WIDTH))
        sel = sel @ basis / np.sqrt(PROJECTED_WIDTH)
    _, vectors = np.linalg.eigh(sel.T @ sel / sel.shape[0])
    component = vectors[:, -1]
    component = component if component[np.abs(component).argmax()] >= 0 else -component
    score = sel @ component
    sd = score.std()
    out[mask] = (score - score.mean()) / (sd if sd > 1e-12 else 1.0)
    return out


def class_scores(labels: Tensor, n_classes: int) -> np.ndarray:
    """(N,) class score of each sample: -1 for class 0, rising evenly to +1 for the last class."""
    y = labels.cpu().numpy().astype(float)
    return 2.0 * y / (n_classes - 1) - 1.0 if n_classes > 1 else np.zeros_like(y)


def label_scores(dataset: MultimodalDataset) -> np.ndarray:
    """(N,) the score ``label`` missingness follows: :func:`class_scores` for classes, the
    z-scored target for regression, +1 for an observed event and -1 for a censored sample
    (survival)."""
    if dataset.task == "regression":
        y = dataset.target.numpy()
        return (y - y.mean()) / (y.std() if y.std() > 1e-12 else 1.0)
    if dataset.task == "survival":
        return np.where(dataset.event.numpy(), 1.0, -1.0)
    return class_scores(dataset.labels, dataset.n_classes)


def calibrate_intercepts(
    observed: Tensor,
    scores: np.ndarray,
    hideable: np.ndarray,
    p: float,
    strength: float,
    key: str = "data.missing",
) -> np.ndarray:
    """Intercepts b (M,) of ``sigmoid(b_m + strength * scores[:, m])`` such that every hideable
    modality's expected realised missing rate, among the samples that observe it, equals ``p``.

    The realised rate accounts for the rescue of samples whose draw hides everything (one of
    their modalities, uniform at random, is kept): modality m of sample i ends up hidden with
    probability ``pi_im * (1 - prod_{k != m observed} pi_ik / n_observed_i)``. The M equations are
    coupled through that product, so they are solved modality by modality (Gauss-Seidel) until the
    intercepts settle; each one-dimensional equation is monotone in b_m and solved with brentq.
    """
    obs = observed.cpu().numpy().astype(bool)
    n_obs = np.maximum(obs.sum(1), 1)
    m_count = obs.shape[1]
    b = np.full(m_count, np.log(p / (1 - p)) if 0 < p < 1 else 0.0)

    def probs() -> np.ndarray:
        pi = 1.0 / (1.0 + np.exp(-(b + strength * scores)))
        return np.where(obs & hideable, pi, 0.0)

    for _ in range(200):
        before = b.copy()
        for m in np.flatnonzero(hideable):
            rows = obs[:, m]
            if not rows.any():
                continue
            pi = probs()
            # product over the other observed modalities (unobserved ones contribute a factor 1)
            others = np.prod(np.where(obs, pi, 1.0), axis=1, where=np.arange(m_count) != m)
            keep_share = (1.0 - others / n_obs)[rows]
            s = strength * scores[rows, m]

            def excess(bm: float, keep_share=keep_share, s=s) -> float:
                return float(np.mean(keep_share / (1.0 + np.exp(-(bm + s))))) - p

            hi = excess(_INTERCEPT_BOUND)
            if hi < 0:
                raise ConfigError(
                    f"{key}.p: a realised missing rate of {p} is out of reach for modality {m} "
                    f"(at most {hi + p:.3f}, because every sample keeps one modality)"
                )
            b[m] = brentq(excess, -_INTERCEPT_BOUND, _INTERCEPT_BOUND, xtol=1e-12)
        if np.max(np.abs(b - before)) < 1e-9:
            break
    return b


def logistic_mask(
    observed: Tensor,
    scores: np.ndarray,
    hideable: np.ndarray,
    p: float,
    strength: float,
    generator: torch.Generator,
    key: str = "data.missing",
) -> Tensor:
    """Hide modality m of sample i with probability ``sigmoid(b_m + strength * scores[i, m])``,
    intercepts calibrated to a realised marginal rate ``p``; then keep one modality per sample."""
    if p == 0:
        return observed.clone()
    b = calibrate_intercepts(observed, scores, hideable, p, strength, key)
    prob = torch.from_numpy(np.where(hideable, 1.0 / (1.0 + np.exp(-(b + strength * scores))), 0.0))
    hide = torch.rand(observed.shape, generator=generator, dtype=torch.float64) < prob
    return _keep_one(observed, observed & ~hide, generator)


def monotone_hazard(p: float, n_modalities: int) -> float:
    """The per-step hazard h whose rates ``1 - (1 - h)**k`` (k = 1..M-1) average ``p``."""
    k = np.arange(1, n_modalities)
    if p == 0 or len(k) == 0:
        return 0.0
    return float(brentq(lambda h: np.mean(1 - (1 - h) ** k) - p, 0.0, 1.0, xtol=1e-14))


def monotone_mask(observed: Tensor, order: list[int], p: float, generator: torch.Generator) -> Tensor:
    """Walk each sample along ``order`` (positions of modalities, cheapest first); before each
    modality after the first the sample drops out with hazard h, losing it and every later one.

    The first modality in the order is never hidden; the k-th after it is missing with rate
    ``1 - (1 - h)**k``, h chosen so the mean over those M-1 modalities is ``p``."""
    h = monotone_hazard(p, len(order))
    steps = torch.rand(observed.shape[0], len(order) - 1, generator=generator, dtype=torch.float64)
    gone = torch.cummax((steps < h).int(), dim=1).values.bool()
    hide = torch.zeros_like(observed)
    hide[:, order[1:]] = gone
    return _keep_one(observed, observed & ~hide, generator)


def _modality_positions(names: list[str], given: list[str], key: str) -> list[int]:
    unknown = [n for n in given if n not in names]
    if unknown:
        raise ConfigError(f"{key}: unknown modalities {unknown}; known: {names}")
    if sorted(given) != sorted(names):
        raise ConfigError(f"{key}: must list every modality exactly once; got {given}, modalities: {names}")
    return [names.index(n) for n in given]


def simulated_mask(
    dataset: MultimodalDataset, cfg: MissingnessConfig, seed: int, key: str = "data.missing"
) -> Tensor:
    """The (N, M) observed mask after ``cfg``'s simulated missingness under ``seed``."""
    observed = dataset.observed
    if cfg.kind in ("natural", "none"):
        return observed.clone()
    generator = torch.Generator().manual_seed(10_007 * int(seed) + 17)
    names = dataset.modality_names
    if cfg.kind == "drop":
        return drop_mask(observed, cfg.p, generator)
    if cfg.kind == "patterns":
        return pattern_mask(observed, cfg.patterns, names, generator)
    if cfg.kind == "monotone":
        order = _modality_positions(names, cfg.order or names, f"{key}.order")
        return monotone_mask(observed, order, cfg.p, generator)
    if cfg.kind not in SCORED_KINDS:
        raise ConfigError(f"{key}.kind: unknown missingness kind {cfg.kind!r}")
    m_count = observed.shape[1]
    hideable = np.ones(m_count, dtype=bool)
    if cfg.kind == "mar":
        driver = cfg.driver if cfg.driver is not None else names[0]
        if driver not in names:
            raise ConfigError(f"{key}.driver: unknown modality {driver!r}; known: {names}")
        d = names.index(driver)
        hideable[d] = False
        score = modality_score(dataset.features[driver], observed[:, d])
        scores = np.repeat(score[:, None], m_count, axis=1)
    elif cfg.kind == "mnar":
        scores = np.stack(
            [modality_score(dataset.features[name], observed[:, m]) for m, name in enumerate(names)], axis=1
        )
    else:
        scores = np.repeat(label_scores(dataset)[:, None], m_count, axis=1)
    return logistic_mask(observed, scores, hideable, cfg.p, cfg.strength, generator, key)


def apply_missingness(
    dataset: MultimodalDataset, cfg: MissingnessConfig, seed: int, key: str = "data.missing"
) -> MultimodalDataset:
    """Return ``dataset`` with simulated missingness applied (or unchanged for ``natural``).

    ``key`` names the config section in error messages (``data.missing_test`` for the shift)."""
    if cfg.kind in ("natural", "none"):
        return dataset
    return dataset.with_observed(simulated_mask(dataset, cfg, seed, key))


def missing_rates(dataset: MultimodalDataset) -> dict[str, dict]:
    """Per modality, the fraction of samples that miss it: overall and per class."""
    names = dataset.modality_names
    missing = (~dataset.observed).double()

    def rates(rows: Tensor) -> dict[str, float]:
        sel = missing[rows]
        return {n: float(sel[:, m].mean()) if len(sel) else float("nan") for m, n in enumerate(names)}

    return {
        "overall": rates(torch.ones(len(dataset), dtype=torch.bool)),
        "by_class": {c: rates(dataset.labels == k) for k, c in enumerate(dataset.class_names)},
    }


def missingness_summary(dataset: MultimodalDataset, parts: dict[str, Tensor]) -> dict[str, dict]:
    """What a run's masks look like (``combinations.json``): samples per observed combination,
    and per modality the missing rate overall, per class and per split (``parts``: positions)."""
    rates = missing_rates(dataset)
    rates["by_split"] = {
        k: missing_rates(dataset.subset(rows))["overall"] for k, rows in parts.items() if len(rows)
    }
    return {"combinations": dataset.combination_counts(), "missing_rate": rates}


# the options each simulated kind uses, in the order its description names them
KIND_OPTIONS = {
    "drop": ("p",),
    "mar": ("p", "strength", "driver"),
    "mnar": ("p", "strength"),
    "label": ("p", "strength"),
    "monotone": ("p", "order"),
    "patterns": ("patterns",),
}


def is_simulated(mis: MissingnessConfig | None) -> bool:
    return mis is not None and mis.kind not in ("natural", "none")


def missingness_options(mis: MissingnessConfig) -> dict:
    """The kind of a missingness config and the options that kind uses."""
    return {"kind": mis.kind, **{k: getattr(mis, k) for k in KIND_OPTIONS.get(mis.kind, ())}}


def missingness_text(mis: MissingnessConfig) -> str:
    """``natural``, ``drop p=0.3``, ``mar p=0.3 strength=2.0 driver=clinical``, ..."""
    if mis.kind == "patterns":
        return f"patterns ({len(mis.patterns)} allowed combinations)"
    options = missingness_options(mis)
    kind = options.pop("kind")
    used = [f"{k}={v}" for k, v in options.items() if v not in (None, [])]
    return " ".join([kind, *used])


def _rates_text(names: list[str], observed: Tensor) -> str:
    missing = (~observed).double().mean(0) if len(observed) else torch.full((len(names),), float("nan"))
    return ", ".join(f"{n} {float(r):.3f}" for n, r in zip(names, missing, strict=True))


def _from_text(sources: tuple[str, ...], config_file: str | None) -> str:
    named = [s if s == config_file else f"--set {s}" for s in sources]
    return f" (from {', '.join(named)})" if named else ""


def missingness_in_effect(
    cfg: DataConfig,
    origin: MissingnessOrigin | None,
    dataset: MultimodalDataset,
    masked: MultimodalDataset,
    parts: dict[str, Tensor],
    seed: int,
) -> str:
    """The lines a run prints first: which missingness it trains and tests under (the data's own
    gaps, or a simulated kind on top of them, and where that was set), and the per-modality
    missing rates of the data and, when gaps are simulated, of seed ``seed``'s masks
    (``masked``, with its ``parts`` positions, as :func:`masked_split` gives them)."""
    origin = origin or MissingnessOrigin()
    shift = cfg.missing_test
    names = dataset.modality_names
    if is_simulated(cfg.missing):
        line = (
            f"missingness: simulated {missingness_text(cfg.missing)} on top of the data's gaps"
            + _from_text(origin.missing_from, origin.config_file)
        )
    else:
        line = "missingness: natural (the data's own gaps; no simulated drop)"
    if shift is not None:
        line += (
            f"; validation and test: {'simulated ' if is_simulated(shift) else ''}"
            f"{missingness_text(shift)}" + _from_text(origin.missing_test_from, origin.config_file)
        )
    lines = [line]
    for key, mis in origin.withheld.items():
        if is_simulated(mis):
            lines.append(
                f"  {origin.config_file}'s {key} ({missingness_text(mis)}) is not applied to the data of "
                f"--data / data.path, which keeps its own gaps; add it with --set {key}.kind={mis.kind}"
            )
    own = f"missing rate per modality, the data's own (all {len(dataset)} samples): "
    own += _rates_text(names, dataset.observed)
    lines.append(own)
    if is_simulated(cfg.missing) or is_simulated(shift):
        after = f"  with seed {seed}'s simulated gaps, training split: "
        after += _rates_text(names, masked.observed[parts["train"]])
        if shift is not None:
            held_out = torch.cat([parts["val"], parts["test"]])
            after += f"; validation and test: {_rates_text(names, masked.observed[held_out])}"
        lines.append(after)
    return "\n".join(lines)
