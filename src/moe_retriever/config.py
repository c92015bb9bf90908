"""Typed experiment configuration, loaded from YAML and overridable from the command line.

Every section is a dataclass; unknown keys are rejected with the dotted path of the key so a
typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


@dataclass
class MissingnessConfig:
    """How modalities go missing.

    kind: ``natural`` keeps the dataset's own missingness (``none`` is an alias); ``drop`` removes
    each observed modality independently with probability ``p`` (the paper's protocol);
    ``patterns`` assigns every sample one allowed combination drawn with the given probabilities.
    Simulated missingness is drawn from the run seed, so every method sees the same masks, and
    every sample keeps at least one modality.
    """

    kind: str = "natural"
    p: float = 0.3
    # [{"modalities": [names], "prob": float}, ...] for kind == "patterns"
    patterns: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DataConfig:
    """Where the data comes from and how it is split."""

    # a built-in dataset name ("synthetic", ...) or "folder" / a paper layout with ``path``
    name: str = "synthetic"
    path: str | None = None
    format: str | None = None
    # keyword arguments of the dataset's loader (e.g. synthetic sizes)
    options: dict[str, Any] = field(default_factory=dict)
    missing: MissingnessConfig = field(default_factory=MissingnessConfig)
    # train / validation / test fractions of a stratified split drawn from the run seed
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    # z-score tabular features with training-split statistics
    standardize: bool = True
    trust_pickle: bool = False


@dataclass
class EncoderConfig:
    """A modality encoder. ``kind`` selects the implementation (``mlp`` for tabular data)."""

    kind: str = "mlp"
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MoEConfig:
    """Sparse mixture of experts with per-target expert pools plus shared experts."""

    experts_per_modality: int = 8  # E_T
    shared_experts: int = 4  # E_sh
    top_k: int = 4
    expert_hidden: int = 256
    noisy_gating: bool = False
    # Eq. 1 of the paper applies softmax before top-k; the released code applies it after.
    router_softmax: str = "before_topk"
    num_routers: int = 1  # the paper's |R|: independent routers whose mixtures are averaged
    aux_loss_weight: float = 1e-2  # Switch load-balancing loss
    z_loss_weight: float = 0.0  # ST-MoE router z-loss (1e-3 is the usual value when enabled)
    # "auto" picks padded bmm for small token counts and sort+split for large ones
    dispatch: str = "auto"


@dataclass
class RetrieverConfig:
    """How embeddings of missing modalities are produced.

    mode ``moe``: the paper's MoE-Retriever (Eq. 3); ``mean``: 0.5 * mean(intra) + 0.5 *
    mean(inter), what the authors' released code returns (no routing); ``zero``: zero-filled
    missing embeddings (retrieval switched off).
    """

    mode: str = "moe"
    intra: bool = True
    inter: bool = True
    # intra-modal samples per missing pair; None means |mc| of the sample (the paper's choice)
    n_intra: int | None = None
    heads: int = 4
    # learned token-type (intra / inter) and modality embeddings added to context tokens
    token_embeddings: bool = True
    # at evaluation, average retrieved embeddings over this many supporting-group draws
    eval_draws: int = 1
    # masked-modality retrieval loss: during training one observed modality of each sample with
    # two or more is hidden, retrieved from the rest, and pulled (MSE) towards its encoder
    # embedding. Not in the paper; 0 trains the retriever from the task loss alone, as the paper
    # does (see docs/method.md for why the default is on).
    reconstruction_weight: float = 1.0
    # where the intra-modal context of bank samples comes from: "none" (the paper's method)
    # encodes the drawn bank samples in every step, so the encoders learn from the intra context
    # too; "epoch" / "steps:K" read them from a table of every bank sample's embeddings, computed
    # without gradient (and without dropout) at the start of every epoch / every K steps, so the
    # intra context trains the retriever but not the encoders. Evaluation and prediction build
    # the table from the current weights (the same embeddings as "none"). Faster with wide dense
    # encoders; cost 1-2 macro-F1 points in a quick check (docs/performance.md).
    bank_cache: str = "none"
    moe: MoEConfig = field(default_factory=MoEConfig)


@dataclass
class FusionConfig:
    """Fusion of the M modality embeddings: a pre-LN Transformer encoder or its SMoE variant."""

    kind: str = "transformer"
    layers: int = 1
    heads: int = 4
    ff_mult: int = 2
    moe: MoEConfig = field(
        default_factory=lambda: MoEConfig(experts_per_modality=0, shared_experts=8, top_k=2)
    )


@dataclass
class ModelConfig:
    hidden: int = 128  # d, the width of every modality embedding
    dropout: float = 0.1
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # per-modality overrides of ``encoder``, keyed by modality name
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # options of comparison methods, keyed by method then option name, e.g.
    # {"shaspec": {"missing_fill": "mean"}}; each method validates its own (see baselines/)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 20
    # epochs at the start that train with zero-filled missing embeddings before retrieval
    warmup_epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    class_weights: bool = False
    # validation metric that selects the checkpoint: macro_f1 | accuracy | auroc | auprc
    select_metric: str = "macro_f1"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: str = "auto"
    progress: bool = True


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    method: str = "moe_retriever"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "ExperimentConfig":
        """Check values that no type annotation can express; raise ConfigError naming the key."""
        t, m, d = self.train, self.model, self.data
        _check(t.epochs >= 1, "train.epochs", "must be >= 1")
        _check(0 <= t.warmup_epochs <= t.epochs, "train.warmup_epochs", "must be in [0, epochs]")
        _check(t.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(t.lr > 0, "train.lr", "must be > 0")
        _check(len(t.seeds) >= 1, "train.seeds", "needs at least one seed")
        _check(t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
               "train.device", "must be auto, cpu or cuda[:N]")
        _check(t.select_metric in ("macro_f1", "accuracy", "auroc", "auprc"),
               "train.select_metric", "must be macro_f1, accuracy, auroc or auprc")
        mis = d.missing
        _check(mis.kind in ("natural", "none", "drop", "patterns"), "data.missing.kind",
               "must be natural, none, drop or patterns")
        _check(0.0 <= mis.p < 1.0, "data.missing.p", f"must be in [0, 1), got {mis.p}")
        _check(len(d.split) == 3 and all(f > 0 for f in d.split) and abs(sum(d.split) - 1) < 1e-6,
               "data.split", "must be three positive fractions summing to 1")
        _check(m.hidden >= 1, "model.hidden", "must be >= 1")
        _check(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        r = m.retriever
        _check(r.mode in ("moe", "mean", "zero"), "model.retriever.mode", "must be moe, mean or zero")
        _check(r.intra or r.inter, "model.retriever", "needs intra or inter context (or both)")
        _check(r.n_intra is None or r.n_intra >= 1, "model.retriever.n_intra", "must be >= 1")
        _check(m.hidden % r.heads == 0, "model.retriever.heads", "must divide model.hidden")
        _check(r.eval_draws >= 1, "model.retriever.eval_draws", "must be >= 1")
        _check(r.reconstruction_weight >= 0, "model.retriever.reconstruction_weight", "must be >= 0")
        bank_cache_period(r.bank_cache)
        _validate_moe(r.moe, "model.retriever.moe")
        f = m.fusion
        _check(f.kind in ("transformer", "smoe"), "model.fusion.kind", "must be transformer or smoe")
        _check(m.hidden % f.heads == 0, "model.fusion.heads", "must divide model.hidden")
        if f.kind == "smoe":
            _validate_moe(f.moe, "model.fusion.moe")
        return self


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
    raise ConfigError(f"model.retriever.bank_cache: must be none, epoch or steps:K (K >= 1), "
                      f"got {value!r}")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _validate_moe(moe: MoEConfig, key: str) -> None:
    pool = moe.experts_per_modality + moe.shared_experts
    _check(moe.experts_per_modality >= 0 and moe.shared_experts >= 0, key,
           "expert counts must be >= 0")
    _check(pool >= 1, key, "needs at least one expert in each pool")
    _check(1 <= moe.top_k <= pool, f"{key}.top_k",
           f"must be in [1, experts_per_modality + shared_experts = {pool}], got {moe.top_k}")
    _check(moe.router_softmax in ("before_topk", "after_topk"), f"{key}.router_softmax",
           "must be before_topk or after_topk")
    _check(moe.num_routers >= 1, f"{key}.num_routers", "must be >= 1")
    _check(moe.dispatch in ("auto", "bmm", "split", "loop"), f"{key}.dispatch",
           "must be auto, bmm, split or loop")
    _check(moe.aux_loss_weight >= 0 and moe.z_loss_weight >= 0, key, "loss weights must be >= 0")


# --------------------------------------------------------------------------- (de)serialisation

def from_dict(cls: type, data: dict[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = path or "config"
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{path}.{key}" if path else key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {k: _coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. train.epochs=5)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from exc
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment config from YAML (or defaults) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    return from_dict(ExperimentConfig, data).validate()


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
