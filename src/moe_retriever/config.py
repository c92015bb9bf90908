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
from typing import Any, Literal

import yaml

from .config_checks import check, validate_experiment
from .errors import ConfigError as ConfigError  # re-exported
from .files import atomic_write_text

T = typing.TypeVar("T")

# The allowed strings of every choice, defined once: from_dict rejects any other value naming the
# key and the choices, and code that branches on a choice imports its alias.
MissingKind = Literal["natural", "none", "drop", "mar", "mnar", "label", "monotone", "patterns"]
RouterSoftmax = Literal["before_topk", "after_topk"]
Dispatch = Literal["auto", "bmm", "split", "loop"]
RetrieverMode = Literal["moe", "mean", "zero"]
RetrieverSampling = Literal["uniform", "knn"]
KnnIndex = Literal["exact", "faiss", "auto"]
FusionKind = Literal["transformer", "smoe"]
# the classification metrics first: a bad value's message lists them (as before other tasks);
# "auto": the task's default (training.metrics.DEFAULT_SELECT_METRIC)
SelectMetric = (
    Literal["macro_f1", "accuracy", "auroc", "auprc"]
    | Literal["auto", "rmse", "mae", "r2", "spearman", "c_harrell", "c_uno", "ibs"]
)
# "auto": the task the data declares
TaskChoice = Literal["auto", "classification", "regression", "survival"]
RegressionLoss = Literal["mse", "huber"]
CoxTies = Literal["breslow", "efron"]
LoggerName = Literal["tensorboard", "mlflow"]
ProtocolKind = Literal["holdout", "cv"]
Unlabelled = Literal["error", "bank", "drop"]


def bounded(default: Any, *, min: float | None = None, below: float | None = None, **metadata: Any) -> Any:
    """A dataclass field whose value from_dict checks: ``min <= value`` and ``value < below``."""
    return field(default=default, metadata={"min": min, "below": below, **metadata})


def only_when(default: Any, **condition: Any) -> Any:
    """A dataclass field that only matters when the section's other fields hold ``condition``
    (e.g. ``only_when(16, sampling="knn")``): a comparison's run key leaves it out otherwise, so
    runs stored before the option existed keep their keys (:func:`inactive_fields`)."""
    return field(default=default, metadata={"only_when": condition})


def inactive_fields(section: Any) -> list[str]:
    """The fields of the dataclass instance ``section`` whose ``only_when`` condition does not
    hold (they change nothing there)."""
    out = []
    for f in dataclasses.fields(section):
        condition = f.metadata.get("only_when")
        if condition and any(getattr(section, k) != v for k, v in condition.items()):
            out.append(f.name)
    return out


@dataclass
class MissingPattern:
    """One allowed combination of modalities and its (unnormalised) probability."""

    modalities: list[str]
    prob: float = bounded(1.0, min=0)


@dataclass
class MissingnessConfig:
    """How modalities go missing.

    kind: ``natural`` keeps the dataset's own missingness (``none`` is an alias); ``drop`` removes
    each observed modality independently with probability ``p`` (the paper's protocol, MCAR);
    ``mar`` makes the chance that a modality is missing depend on the values of the ``driver``
    modality, ``mnar`` on the modality's own values, ``label`` on the class (logistically, with
    slope ``strength``); ``monotone`` orders the modalities by cost (``order``) and a sample that
    misses one misses all later ones; ``patterns`` assigns every sample one allowed combination
    drawn with the given probabilities.

    ``p`` is the marginal missing rate of every modality (among the samples that have it), not a
    per-sample probability: for ``mar`` every modality but the driver, which is never hidden; for
    ``monotone`` the mean over the modalities after the first in ``order``, which is never hidden.
    See ``data/missingness.py`` and docs/data.md for the exact definitions.
    Simulated missingness is drawn from the run seed, so every method sees the same masks, and
    every sample keeps at least one modality.
    """

    kind: MissingKind = "natural"
    p: float = 0.3
    # mar / mnar / label: logistic slope per standard deviation of the score (label: from the
    # first class, score -1, to the last, +1); > 0 means high scores / late classes miss more
    strength: float = 2.0
    # mar: the modality whose values drive the others' missingness (default: the first modality)
    driver: str | None = None
    # monotone: every modality, cheapest (always kept) first; default: the dataset's order
    order: list[str] = field(default_factory=list)
    # for kind == "patterns"
    patterns: list[MissingPattern] = field(default_factory=list)


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
    # missingness of the validation and test samples when it differs from training (a shift);
    # None: ``missing`` everywhere. Masks are drawn on the whole dataset, so the split is unchanged.
    missing_test: MissingnessConfig | None = None
    # train / validation / test fractions of a stratified split drawn from the run seed
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    # z-score tabular features with training-split statistics
    standardize: bool = True
    trust_pickle: bool = False
    # what the labels are; "auto" takes the task the data declares, any other value must match it
    task: TaskChoice = "auto"
    # samples without a label: error (refused), bank (bank-only retrieval context), drop (left out)
    unlabelled: Unlabelled = "error"
    # share of each partition's training labels kept (stratified); the rest are hidden (unlabelled)
    label_fraction: float = 1.0


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
    router_softmax: RouterSoftmax = "before_topk"
    num_routers: int = 1  # the paper's |R|: independent routers whose mixtures are averaged
    aux_loss_weight: float = 1e-2  # Switch load-balancing loss
    z_loss_weight: float = 0.0  # ST-MoE router z-loss (1e-3 is the usual value when enabled)
    # "auto" picks padded bmm for small token counts and sort+split for large ones
    dispatch: Dispatch = "auto"


@dataclass
class RetrieverConfig:
    """How embeddings of missing modalities are produced.

    mode ``moe``: the paper's MoE-Retriever (Eq. 3); ``mean``: 0.5 * mean(intra) + 0.5 *
    mean(inter), what the authors' released code returns (no routing); ``zero``: zero-filled
    missing embeddings (retrieval switched off).

    sampling: how the intra-modal context is drawn from the supporting group G(T | mc).
    ``uniform`` (the paper): uniformly at random. ``knn``: among the group members most similar
    to the sample, by the mean cosine between the sample's encoder embeddings and the bank's
    over the modalities the sample observes; training draws ``n_intra`` distinct members of the
    ``knn_k`` best (at least ``n_intra``) with probabilities softmax(similarity /
    ``knn_temperature``), evaluation takes the ``n_intra`` best (deterministic, so
    ``eval_draws`` has no effect). The bank embeddings it compares with come from the bank
    table, refreshed on the ``bank_cache`` schedule, or once per epoch when that is ``none``
    (the intra context itself is still encoded with gradient then). ``knn_index``: ``exact``
    (chunked scan of the bank), ``faiss`` (an approximate IVF index; needs the ``knn`` extra)
    or ``auto`` (faiss when installed and the bank has more than 100,000 samples). See
    docs/method.md.
    """

    mode: RetrieverMode = "moe"
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
    # the knn options (and the choice itself) change nothing under uniform sampling
    sampling: RetrieverSampling = only_when("uniform", sampling="knn")
    knn_k: int = bounded(16, min=1, only_when={"sampling": "knn"})  # training-draw candidates (>= n_intra)
    knn_temperature: float = only_when(0.1, sampling="knn")  # softmax temperature of training draws, > 0
    knn_index: KnnIndex = only_when("auto", sampling="knn")
    moe: MoEConfig = field(default_factory=MoEConfig)


@dataclass
class FusionConfig:
    """Fusion of the M modality embeddings: a pre-LN Transformer encoder or its SMoE variant."""

    kind: FusionKind = "transformer"
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
    # give fusion the observed mask: a learned per-modality "missing" embedding is added to the
    # token of every missing modality (methods with their own fusion reject it)
    missing_indicators: bool = False
    # options of comparison methods, keyed by method then option name, e.g.
    # {"shaspec": {"missing_fill": "mean"}}; each method parses its own entry into its options
    # dataclass (see baselines/)
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
    # validation metric that selects the checkpoint; "auto": the task's default (macro_f1,
    # rmse, c_harrell), in the direction that metric is better
    select_metric: SelectMetric = "auto"
    # regression: the loss on the standardised target (huber: quadratic within huber_delta
    # training standard deviations of the target, linear beyond)
    regression_loss: RegressionLoss = "mse"
    huber_delta: float = bounded(1.0, min=0.0)
    # survival: how the Cox partial likelihood handles tied event times
    cox_ties: CoxTies = "breslow"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: str = "auto"
    progress: bool = True
    # where per-epoch scalars go besides history.csv: tensorboard and/or mlflow (optional extras)
    log: list[LoggerName] = field(default_factory=list)


@dataclass
class ProtocolConfig:
    """How samples are split into training, validation and test data (docs/results.md).

    ``holdout``: one stratified train / validation / test split (``data.split``) per seed.
    ``cv``: stratified ``folds``-fold cross-validation repeated ``repeats`` times; repeat r uses
    seed ``train.seeds[r]`` (its fold assignment and its missingness mask, shared by every method
    and fold), so ``train.seeds`` must list at least ``repeats`` seeds (the first ``repeats`` are
    used). In each fold the training part is split again, stratified, into train and validation
    in the proportions of ``data.split`` (0.70 : 0.15 by default, i.e. 17.6 % validation), and
    every sample is tested exactly once per repeat. A split shipped with the dataset is ignored
    by ``cv``: all its samples are pooled.
    """

    kind: ProtocolKind = "holdout"
    folds: int = bounded(5, min=2)
    repeats: int = bounded(3, min=1)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    method: str = "moe_retriever"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)

    def validate(self) -> ExperimentConfig:
        """Check values that no type annotation can express (:mod:`.config_checks`); raise
        ConfigError naming the key."""
        validate_experiment(self)
        return self


# --------------------------------------------------------------------------- (de)serialisation


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown or missing keys, wrong types,
    values outside a Literal's choices and values outside a :func:`bounded` field's range."""
    if data is None:
        data = {}
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data
    ]
    if required:
        raise ConfigError(f"{where}: missing required key(s) {required}")
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else key
        kwargs[key] = _coerce(hints[key], value, key_path)
        _check_bounds(fields[key], kwargs[key], key_path)
    return cls(**kwargs)


def _check_bounds(f: dataclasses.Field, value: Any, path: str) -> None:
    low, below = f.metadata.get("min"), f.metadata.get("below")
    if low is not None and below is not None:
        check(low <= value < below, path, f"must be in [{low:g}, {below:g}), got {value!r}")
    elif low is not None:
        check(low <= value, path, f"must be >= {low:g}, got {value!r}")
    elif below is not None:
        check(value < below, path, f"must be < {below:g}, got {value!r}")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ConfigError(f"{path}: must be one of {list(args)}, got {value!r}")
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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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


# the sections of ``data`` that simulate gaps on top of the data's own
SIMULATED_MISSINGNESS = ("missing", "missing_test")


@dataclass(frozen=True)
class MissingnessOrigin:
    """Where a loaded config's simulated missingness came from, for the line every run prints.

    ``missing_from`` / ``missing_test_from``: the config file and the overrides that set
    ``data.missing`` / ``data.missing_test`` (empty: the default). ``withheld``: the config file's
    sections that :func:`load_config` left out because ``data.path`` came from an override."""

    missing_from: tuple[str, ...] = ()
    missing_test_from: tuple[str, ...] = ()
    withheld: dict[str, MissingnessConfig] = field(default_factory=dict)
    config_file: str | None = None


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def _sets(overrides: list[str], key: str) -> list[str]:
    """The overrides that set ``key`` or a key inside it."""
    return [o for o in overrides if "=" in o and (_override_key(o) + ".").startswith(key + ".")]


def withhold_simulated_missingness(
    file_data: dict[str, Any], overrides: list[str]
) -> tuple[dict[str, Any], dict[str, MissingnessConfig]]:
    """A user's own data keeps its own gaps: when an override sets ``data.path`` (``--data``,
    ``--set data.path=...``), the config file's ``data.missing`` / ``data.missing_test`` (written
    for the file's own dataset) are left out, each unless an override sets a key inside it
    (``--set data.missing.kind=drop``: the user asks for simulated gaps) or the file itself sets
    ``data.path`` (the user wrote the data and its missingness together). Returns the file's
    mapping without the left-out sections, and those sections."""
    data_section = file_data.get("data")
    path_set = [o for o in overrides if "=" in o and _override_key(o) == "data.path"]
    if not isinstance(data_section, dict) or data_section.get("path") is not None or not path_set:
        return file_data, {}
    try:
        if yaml.safe_load(path_set[-1].split("=", 1)[1]) is None:  # data.path=null: no own data
            return file_data, {}
    except yaml.YAMLError:  # apply_overrides reports it, naming the override
        return file_data, {}
    withheld = {
        f"data.{name}": data_section[name]
        for name in SIMULATED_MISSINGNESS
        if data_section.get(name) is not None and not _sets(overrides, f"data.{name}")
    }
    if not withheld:
        return file_data, {}
    kept = {k: v for k, v in data_section.items() if f"data.{k}" not in withheld}
    parsed = {key: from_dict(MissingnessConfig, value, key) for key, value in withheld.items()}
    return {**file_data, "data": kept}, parsed


def read_yaml_file(path: Path, what: str) -> Any:
    """The parsed YAML of ``path`` (None for an empty file); a ConfigError naming ``what`` and the
    file when it does not exist, the file and the parser's message when it is not YAML."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment config from YAML (or defaults) and apply overrides.

    Data given by an override of ``data.path`` keeps its own gaps (see
    :func:`withhold_simulated_missingness`)."""
    return load_config_with_origin(path, overrides)[0]


def load_config_with_origin(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[ExperimentConfig, MissingnessOrigin]:
    """:func:`load_config`, and where its simulated missingness came from."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml_file(path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    overrides = list(overrides or [])
    data, withheld = withhold_simulated_missingness(data, overrides)
    section = data.get("data")
    file_data: dict[str, Any] = section if isinstance(section, dict) else {}
    whole_data = [o for o in overrides if "=" in o and _override_key(o) == "data"]

    def origin(name: str) -> tuple[str, ...]:
        from_file = (str(path),) if file_data.get(name) is not None and not whole_data else ()
        return from_file + tuple(whole_data[-1:] + _sets(overrides, f"data.{name}"))

    origins = MissingnessOrigin(
        origin("missing"), origin("missing_test"), withheld, None if path is None else str(path)
    )
    return from_dict(ExperimentConfig, apply_overrides(data, overrides)).validate(), origins


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
