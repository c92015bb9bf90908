"""The checks of an experiment config that no type annotation can express.

:meth:`ExperimentConfig.validate <moe_retriever.config.ExperimentConfig.validate>` runs them after
the config is built; each failure is a ConfigError naming the key.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import ExperimentConfig, MissingnessConfig, MoEConfig, ProtocolConfig


def validate_experiment(cfg: ExperimentConfig) -> None:
    """Check values that no type annotation can express; raise ConfigError naming the key."""
    t, m, d = cfg.train, cfg.model, cfg.data
    check(t.epochs >= 1, "train.epochs", "must be >= 1")
    check(0 <= t.warmup_epochs <= t.epochs, "train.warmup_epochs", "must be in [0, epochs]")
    check(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    check(t.lr > 0, "train.lr", "must be > 0")
    check(len(t.seeds) >= 1, "train.seeds", "needs at least one seed")
    check(
        t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
        "train.device",
        "must be auto, cpu or cuda[:N]",
    )
    _validate_missing(d.missing, "data.missing")
    if d.missing_test is not None:
        _validate_missing(d.missing_test, "data.missing_test")
    check(
        len(d.split) == 3 and all(f > 0 for f in d.split) and abs(sum(d.split) - 1) < 1e-6,
        "data.split",
        "must be three positive fractions summing to 1",
    )
    check(0 < d.label_fraction <= 1, "data.label_fraction", "must be in (0, 1]")
    check(
        d.label_fraction == 1 or d.unlabelled != "error",
        "data.unlabelled",
        "data.label_fraction < 1 hides labels: set data.unlabelled to bank (bank-only samples) or drop",
    )
    _validate_protocol(cfg.protocol, t.seeds)
    _validate_task(cfg)
    check(m.hidden >= 1, "model.hidden", "must be >= 1")
    check(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)")
    r = m.retriever
    check(r.intra or r.inter, "model.retriever", "needs intra or inter context (or both)")
    check(r.n_intra is None or r.n_intra >= 1, "model.retriever.n_intra", "must be >= 1")
    check(m.hidden % r.heads == 0, "model.retriever.heads", "must divide model.hidden")
    check(r.eval_draws >= 1, "model.retriever.eval_draws", "must be >= 1")
    check(r.reconstruction_weight >= 0, "model.retriever.reconstruction_weight", "must be >= 0")
    bank_cache_period(r.bank_cache)
    check(
        r.knn_temperature > 0 and math.isfinite(r.knn_temperature),
        "model.retriever.knn_temperature",
        f"must be a finite number > 0, got {r.knn_temperature}",
    )
    _validate_moe(r.moe, "model.retriever.moe")
    f = m.fusion
    check(m.hidden % f.heads == 0, "model.fusion.heads", "must divide model.hidden")
    if f.kind == "smoe":
        _validate_moe(f.moe, "model.fusion.moe")


def check(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError ``<key>: <message>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _validate_protocol(p: ProtocolConfig, seeds: list[int]) -> None:
    if p.kind == "cv":
        check(
            len(seeds) >= p.repeats,
            "protocol.repeats",
            f"{p.repeats} repeats need {p.repeats} seeds (one per repeat), but train.seeds is "
            f"{seeds}; list more seeds or use fewer repeats",
        )


def _validate_task(cfg: ExperimentConfig) -> None:
    """The task fields: a select_metric of another task than the stated one, a Huber threshold."""
    # imported here: task_config imports the config module, which imports this one
    from .task_config import check_select_metric

    t, task = cfg.train, cfg.data.task
    if task != "auto":
        check_select_metric(t.select_metric, task)
    check(
        t.huber_delta > 0 and math.isfinite(t.huber_delta),
        "train.huber_delta",
        f"must be a finite number > 0, got {t.huber_delta}",
    )


def _validate_missing(mis: MissingnessConfig, key: str) -> None:
    check(0.0 <= mis.p < 1.0, f"{key}.p", f"must be in [0, 1), got {mis.p}")
    check(math.isfinite(mis.strength), f"{key}.strength", f"must be finite, got {mis.strength}")


def _validate_moe(moe: MoEConfig, key: str) -> None:
    pool = moe.experts_per_modality + moe.shared_experts
    check(moe.experts_per_modality >= 0 and moe.shared_experts >= 0, key, "expert counts must be >= 0")
    check(pool >= 1, key, "needs at least one expert in each pool")
    check(
        1 <= moe.top_k <= pool,
        f"{key}.top_k",
        f"must be in [1, experts_per_modality + shared_experts = {pool}], got {moe.top_k}",
    )
    check(moe.num_routers >= 1, f"{key}.num_routers", "must be >= 1")
    check(moe.aux_loss_weight >= 0 and moe.z_loss_weight >= 0, key, "loss weights must be >= 0")


def bank_cache_period(value: str) -> int | None:
    """``model.retriever.bank_cache`` as a refresh period: None (no cache), 0 (every epoch) or
    K (every K steps)."""
    if value == "none":
        return None
    if value == "epoch":
        return 0
    head, _, k = value.partition(":")
    if head == "steps" and k.isdigit() and int(k) >= 1:
        return int(k)
    raise ConfigError(f"model.retriever.bank_cache: must be none, epoch or steps:K (K >= 1), got {value!r}")
