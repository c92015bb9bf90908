"""A scikit-learn estimator for every registered method (MoE-Retriever and the baselines).

    >>> from moe_retriever.sklearn import MoERetrieverClassifier
    >>> clf = MoERetrieverClassifier(modalities={"clinical": "clin_", "genetic": ["apoe", "snp1"]},
    ...                              epochs=30, hidden=64, random_state=0)
    >>> clf.fit(frame, labels).predict_proba(new_frame)          # (N, C), columns in classes_ order

**Input.** ``X`` is a pandas DataFrame whose columns are grouped into modalities by
``modalities`` (name -> list of column names, or name -> column-name prefix), or a 2-D array
with ``modalities`` given as lists of column positions; without ``modalities`` every column
belongs to one modality named ``X``. Every column must belong to exactly one modality. A
modality is *missing* for a row when all its columns are NaN; a row with only some NaN in a
modality is an error naming the row and the modality (impute those values first: NaN is no
value the models could use, and filling it silently would hide the problem). A row missing
every modality is an error too. Per-modality arrays or DataFrames (the ``Xs`` lists of imml) are
turned into one DataFrame and its ``modalities`` by :func:`from_modality_list`. ``y`` holds any
labels (strings or integers); :attr:`classes_` keeps them and ``predict`` returns them.

**Training.** ``fit`` draws a stratified validation split (``validation_fraction`` of every
class, from ``random_state``) out of the training data for model selection (the epoch of the
best ``train.select_metric``), standardises tabular features with statistics of the remaining
training rows, and trains exactly as ``moe-retriever train`` trains one seed
(:func:`~moe_retriever.training.experiment.fit_model`). The training rows are the retrieval
bank at prediction time, as in a run directory.

**Configuration.** ``config_path`` (a YAML experiment file, e.g. ``configs/ad_data.yaml``) <
``config`` (a nested dict with the same layout) < keywords: a keyword that is not None overrides
the dotted config key(s) listed in :data:`KEYWORDS`, which override ``config``, which overrides
the file. Any config value is reachable through ``config``. ``train.seeds`` and
``train.progress`` come from ``random_state`` and ``verbose``. The ``data`` section describes
where a run's data comes from and how its missingness is simulated; here ``X`` is the data and
its missingness, so only ``data.standardize`` is used.

**Persistence.** A fitted estimator pickles (pickle runs code while loading: unpickle only files
you trust). :meth:`MoERetrieverClassifier.save` writes the library's safetensors checkpoint
(weights, bank, statistics and JSON metadata, no pickle) and :meth:`MoERetrieverClassifier.load`
reads it back safely; methods fitted without the Trainer (``majority``, ``hist_gbt``) have no
such checkpoint and can only be pickled.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from .config import ConfigError, ExperimentConfig, from_dict, load_config, to_dict
from .contract import DirectMethod, MethodModel, is_direct
from .data.bank import RetrievalBank
from .data.dataset import DataValidationError, ModalitySpec, MultimodalDataset
from .data.preprocessing import fit_standardizer, standardize
from .training.fitting import fit_model
from .training.run_files import load_seed_checkpoint, save_seed_checkpoint
from .training.trainer import Trainer, resolve_device

# keyword -> the dotted config key(s) it sets; the single place that maps the two
KEYWORDS: dict[str, tuple[str, ...]] = {
    "epochs": ("train.epochs",),
    "warmup_epochs": ("train.warmup_epochs",),
    "batch_size": ("train.batch_size",),
    "lr": ("train.lr",),
    "weight_decay": ("train.weight_decay",),
    "class_weights": ("train.class_weights",),
    "select_metric": ("train.select_metric",),
    "device": ("train.device",),
    "hidden": ("model.hidden",),
    "dropout": ("model.dropout", "model.encoder.dropout"),
    "encoder_hidden": ("model.encoder.hidden",),
    "encoder_layers": ("model.encoder.layers",),
    "heads": ("model.retriever.heads", "model.fusion.heads"),
    "experts_per_modality": ("model.retriever.moe.experts_per_modality",),
    "shared_experts": ("model.retriever.moe.shared_experts",),
    "top_k": ("model.retriever.moe.top_k",),
    "expert_hidden": ("model.retriever.moe.expert_hidden",),
    "n_intra": ("model.retriever.n_intra",),
    "eval_draws": ("model.retriever.eval_draws",),
    "reconstruction_weight": ("model.retriever.reconstruction_weight",),
    "sampling": ("model.retriever.sampling",),
    "missing_indicators": ("model.missing_indicators",),
    "standardize": ("data.standardize",),
}

SINGLE_MODALITY = "X"  # the modality name when ``modalities`` is None
_CHECKPOINT_KEY = "estimator"  # the estimator's entry in the checkpoint metadata


# --------------------------------------------------------------------------- input conversion


def from_modality_list(
    Xs: Sequence[Any], names: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Per-modality blocks (imml's ``Xs``: one 2-D array or DataFrame per modality, rows aligned,
    a missing modality's row all NaN) as one DataFrame and its ``modalities`` mapping.

    Columns are named ``<modality>__<column>`` (``<modality>__<j>`` for arrays). ``names``
    defaults to ``modality_0``, ``modality_1``, ... DataFrames must share one index, which the
    result keeps (arrays get positions).
    """
    if isinstance(Xs, (pd.DataFrame, np.ndarray)) or not isinstance(Xs, Sequence) or not Xs:
        raise DataValidationError(
            "from_modality_list: expected a non-empty list of per-modality 2-D arrays or DataFrames"
        )
    names = [f"modality_{i}" for i in range(len(Xs))] if names is None else [str(n) for n in names]
    if len(names) != len(Xs):
        raise DataValidationError(f"from_modality_list: {len(names)} names for {len(Xs)} modalities")
    if len(set(names)) != len(names):
        raise DataValidationError(f"from_modality_list: duplicate modality names {names}")
    index = None
    blocks: list[pd.DataFrame] = []
    modalities: dict[str, list[str]] = {}
    for name, block in zip(names, Xs, strict=True):
        if isinstance(block, pd.DataFrame):
            if index is None:
                index = block.index
            elif not block.index.equals(index):
                raise DataValidationError(
                    f"from_modality_list: modality {name!r} has another row index than the first "
                    f"DataFrame; align the blocks (e.g. reindex) first"
                )
            values, cols = block.to_numpy(), [str(c) for c in block.columns]
        else:
            values = np.asarray(block)
            if values.ndim != 2:
                raise DataValidationError(
                    f"from_modality_list: modality {name!r} is not 2-D (shape {values.shape})"
                )
            cols = [str(j) for j in range(values.shape[1])]
        if blocks and values.shape[0] != blocks[0].shape[0]:
            raise DataValidationError(
                f"from_modality_list: modality {name!r} has {values.shape[0]} "
                f"rows, {names[0]!r} has {blocks[0].shape[0]}"
            )
        modalities[name] = [f"{name}__{c}" for c in cols]
        blocks.append(pd.DataFrame(values, columns=modalities[name]))
    frame = pd.concat(blocks, axis=1)
    if index is not None:
        frame.index = index
    return frame, modalities


def _column_names(X: Any) -> list[Any] | None:
    if isinstance(X, (list, tuple)) and X and all(isinstance(b, pd.DataFrame) or np.ndim(b) == 2 for b in X):
        raise DataValidationError(
            "X is a list of per-modality blocks; convert it with "
            "moe_retriever.sklearn.from_modality_list(Xs, names) -> (frame, modalities) first"
        )
    return list(X.columns) if isinstance(X, pd.DataFrame) else None


def _row_labels(X: Any, n: int) -> list[str]:
    """Row names for ids and error messages: a DataFrame's index when unique, else positions."""
    if isinstance(X, pd.DataFrame) and X.index.is_unique:
        return [str(i) for i in X.index]
    return [str(i) for i in range(n)]


def _resolve_modalities(modalities: Any, columns: list[Any] | None, n_features: int) -> dict[str, list[int]]:
    """``{name: column positions}``; every column in exactly one modality."""
    if modalities is None:
        return {SINGLE_MODALITY: list(range(n_features))}
    if not isinstance(modalities, Mapping) or not modalities:
        raise ConfigError(
            "modalities: expected a non-empty dict of modality name -> columns "
            f"(a list) or column-name prefix (a string), got {modalities!r}"
        )
    position = {c: j for j, c in enumerate(columns)} if columns is not None else None
    owner: dict[int, str] = {}
    out = {}
    for name, spec in modalities.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"modalities: modality names must be non-empty strings, got {name!r}")
        if isinstance(spec, str):
            if position is None:
                raise ConfigError(f"modalities.{name}: a column-name prefix needs a DataFrame X")
            cols = [j for c, j in position.items() if isinstance(c, str) and c.startswith(spec)]
            if not cols:
                raise ConfigError(f"modalities.{name}: no column starts with {spec!r}")
        elif isinstance(spec, (Sequence, np.ndarray, pd.Index)) and len(spec) > 0:
            cols = []
            for item in spec:
                if position is not None:
                    if item not in position:
                        raise ConfigError(f"modalities.{name}: X has no column {item!r}")
                    cols.append(position[item])
                elif isinstance(item, numbers.Integral) and 0 <= int(item) < n_features:
                    cols.append(int(item))
                else:
                    raise ConfigError(
                        f"modalities.{name}: {item!r} is not a column position of an "
                        f"array with {n_features} columns"
                    )
        else:
            raise ConfigError(
                f"modalities.{name}: expected a non-empty list of columns or a prefix string, got {spec!r}"
            )
        for j in cols:
            if j in owner:
                label = columns[j] if columns is not None else j
                raise ConfigError(f"modalities: column {label!r} is in both {owner[j]!r} and {name!r}")
            owner[j] = name
        out[name] = cols
    unused = [j for j in range(n_features) if j not in owner]
    if unused:
        labels = [columns[j] if columns is not None else j for j in unused]
        raise ConfigError(
            f"modalities: column(s) {labels[:10]}{' ...' if len(labels) > 10 else ''} "
            f"belong to no modality; drop them from X or add them to a modality"
        )
    return out


def _to_dataset(
    values: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    modalities: dict[str, list[int]],
    column_labels: list[str],
    rows: list[str],
    loaded: bool,
) -> MultimodalDataset:
    """A MultimodalDataset from a float matrix; a modality is missing where all its values are NaN.

    ``loaded``: the data a model is fitted on, which must observe every modality somewhere."""
    features, observed, specs = {}, [], []
    for name, cols in modalities.items():
        block = values[:, cols]
        nan = np.isnan(block)
        missing = nan.all(axis=1)
        partial = nan.any(axis=1) & ~missing
        if partial.any():
            i = int(np.flatnonzero(partial)[0])
            bad = [column_labels[cols[j]] for j in np.flatnonzero(nan[i])]
            raise DataValidationError(
                f"row {rows[i]!r}, modality {name!r}: {len(bad)} of {len(cols)} values are NaN "
                f"(columns {bad[:5]}{' ...' if len(bad) > 5 else ''}; {int(partial.sum())} such "
                f"row(s)); a modality is missing only when all its columns are NaN, so impute "
                f"these values or blank the whole modality"
            )
        features[name] = torch.from_numpy(np.where(missing[:, None], 0.0, block)).float()
        observed.append(~missing)
        specs.append(ModalitySpec(name, (len(cols),), "tabular", tuple(column_labels[j] for j in cols)))
    return MultimodalDataset(
        specs,
        features,
        torch.from_numpy(np.stack(observed, axis=1)),
        torch.from_numpy(labels.astype(np.int64)),
        rows,
        class_names,
        "X",
        require_every_modality=loaded,
    )


def _holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, validation) positions: round(fraction * n_c) of every class, at least
    one from a class with two or more samples, never a class's last sample."""
    rng = np.random.default_rng(int(seed))
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(round(fraction * len(idx)), 1), len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    if not val:
        raise DataValidationError(
            f"fit: {len(y)} samples leave no validation sample for model "
            f"selection (every class has a single sample)"
        )
    return np.sort(train), np.sort(val)


# --------------------------------------------------------------------------- configuration


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    node = data
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _json_value(value: Any) -> Any:
    """Parameters as JSON values for the checkpoint metadata (numpy scalars and tuples too)."""
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None  # e.g. a RandomState instance: the drawn seed is stored instead


# --------------------------------------------------------------------------- the estimator


class MoERetrieverClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier for incomplete multimodal tabular data (see the module docstring).

    Parameters
    ----------
    method : name of a registered method (``moe_retriever.methods.METHODS``): ``moe_retriever``,
        its ``zero`` / ``official_retriever`` variants, or a baseline (``mean``, ``shaspec``,
        ``flex_moe``, ``hist_gbt``, ``majority``, ...).
    modalities : ``{name: [columns]}`` or ``{name: "prefix"}`` for a DataFrame, ``{name:
        [positions]}`` for an array; None puts every column in one modality.
    config, config_path : nested config values / a YAML experiment file (see the precedence above).
    random_state : int, RandomState or None; seeds the validation split and training.
    validation_fraction : share of every class held out from ``X`` for model selection.
    verbose : show progress bars while training.
    epochs ... standardize : see :data:`KEYWORDS`; None leaves the config's value.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ (string column names only), modalities_
    (``{name: column positions}``), config_ (the resolved ExperimentConfig), seed_, model_,
    best_epoch_, best_val_ (validation metrics of the selected epoch), history_.
    """

    # the fitted attributes (set by fit and load; absent before, which check_is_fitted tests)
    classes_: np.ndarray
    modalities_: dict[str, list[int]]
    config_: ExperimentConfig
    seed_: int
    model_: MethodModel | DirectMethod
    stats_: dict[str, tuple[Tensor, Tensor]]
    bank_: MultimodalDataset
    best_epoch_: int
    best_val_: dict[str, float]
    history_: list[dict[str, Any]]
    _trainer: Trainer | None

    def __init__(
        self,
        method: str = "moe_retriever",
        modalities: Mapping[str, Any] | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        config_path: str | None = None,
        random_state: Any = None,
        validation_fraction: float = 0.2,
        verbose: bool = False,
        device: str | None = None,
        epochs: int | None = None,
        warmup_epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        class_weights: bool | None = None,
        select_metric: str | None = None,
        hidden: int | None = None,
        dropout: float | None = None,
        encoder_hidden: int | None = None,
        encoder_layers: int | None = None,
        heads: int | None = None,
        experts_per_modality: int | None = None,
        shared_experts: int | None = None,
        top_k: int | None = None,
        expert_hidden: int | None = None,
        n_intra: int | None = None,
        eval_draws: int | None = None,
        reconstruction_weight: float | None = None,
        sampling: str | None = None,
        missing_indicators: bool | None = None,
        standardize: bool | None = None,
    ) -> None:
        self.method = method
        self.modalities = modalities
        self.config = config
        self.config_path = config_path
        self.random_state = random_state
        self.validation_fraction = validation_fraction
        self.verbose = verbose
        self.device = device
        self.epochs = epochs
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_weights = class_weights
        self.select_metric = select_metric
        self.hidden = hidden
        self.dropout = dropout
        self.encoder_hidden = encoder_hidden
        self.encoder_layers = encoder_layers
        self.heads = heads
        self.experts_per_modality = experts_per_modality
        self.shared_experts = shared_experts
        self.top_k = top_k
        self.expert_hidden = expert_hidden
        self.n_intra = n_intra
        self.eval_draws = eval_draws
        self.reconstruction_weight = reconstruction_weight
        self.sampling = sampling
        self.missing_indicators = missing_indicators
        self.standardize = standardize

    # ------------------------------------------------------------------ configuration
    def resolved_config(self, seed: int | None = None) -> ExperimentConfig:
        """The experiment config ``fit`` trains with: file < ``config`` < keywords. ``seed``
        (``train.seeds``) defaults to an integer ``random_state``, else 0."""
        from .methods import METHODS

        if seed is None:
            seed = int(self.random_state) if isinstance(self.random_state, numbers.Integral) else 0
        # the file is read (and checked) as `moe-retriever train --config` reads it
        data = to_dict(load_config(self.config_path)) if self.config_path is not None else {}
        if self.config is not None:
            if not isinstance(self.config, Mapping):
                raise ConfigError(f"config: expected a dict of config values, got {self.config!r}")
            data = _merge(data, self.config)
        for keyword, keys in KEYWORDS.items():
            value = getattr(self, keyword)
            if value is not None:
                for key in keys:
                    _set_dotted(data, key, value)
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ConfigError(f"method: unknown method {self.method!r}; available: {sorted(METHODS)}")
        data["method"] = self.method
        _set_dotted(data, "train.seeds", [int(seed)])
        _set_dotted(data, "train.progress", bool(self.verbose))
        return from_dict(ExperimentConfig, data).validate()

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: Any, y: Any) -> MoERetrieverClassifier:
        """Train on ``X`` (rows with any observed modalities) and labels ``y``."""
        if not isinstance(self.validation_fraction, numbers.Real) or not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction: must be in (0, 1), got {self.validation_fraction!r}")
        seed = self._seed()
        cfg = self.resolved_config(seed)
        columns = _column_names(X)
        values, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        rows = _row_labels(X, values.shape[0])
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DataValidationError(
                f"y has 1 class ({classes[0]!r}); a classifier needs at least two classes"
            )
        modalities = _resolve_modalities(self.modalities, columns, values.shape[1])
        class_names = [str(c) for c in classes]
        dataset = _to_dataset(
            values, encoded, class_names, modalities, self._column_labels(columns, values), rows, loaded=True
        )
        train_pos, val_pos = _holdout(encoded, float(self.validation_fraction), seed)
        train = dataset.subset(train_pos)
        stats = fit_standardizer(train) if cfg.data.standardize else {}
        train, val = standardize(train, stats), standardize(dataset.subset(val_pos), stats)
        device = resolve_device(cfg.train.device)
        fitted = fit_model(cfg, train, val, len(classes), seed, device)
        model, result, trainer = fitted.model, fitted.fit, fitted.trainer
        self.classes_ = classes
        self.modalities_ = modalities
        self.config_ = cfg
        self.seed_ = seed
        self.model_ = model
        self.stats_ = stats
        self.bank_ = train
        self.best_epoch_ = result.best_epoch
        self.best_val_ = result.best_val
        self.history_ = result.history
        self._trainer = trainer
        return self

    @staticmethod
    def _column_labels(columns: list[Any] | None, values: np.ndarray) -> list[str]:
        return [str(c) for c in columns] if columns is not None else [str(j) for j in range(values.shape[1])]

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, C) class probabilities, columns in :attr:`classes_` order. Each row may observe
        any non-empty subset of the modalities; missing ones are retrieved from the training rows."""
        check_is_fitted(self)
        columns = _column_names(X)
        values = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        rows = _row_labels(X, values.shape[0])
        dataset = _to_dataset(
            values,
            np.zeros(values.shape[0], dtype=np.int64),
            [str(c) for c in self.classes_],
            self.modalities_,
            self._column_labels(columns, values),
            rows,
            loaded=False,
        )
        dataset = standardize(dataset, self.stats_)
        if self._trainer is None:  # a method fitted without the Trainer
            assert is_direct(self.model_)
            return np.asarray(self.model_.predict_proba(dataset), dtype=np.float64)
        return self._trainer.predict_proba(dataset).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (values of :attr:`classes_`)."""
        probs = self.predict_proba(X)  # first: it raises NotFittedError before classes_ exists
        return self.classes_[probs.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # NaN marks a missing modality (all its columns NaN); with a single modality a row
        # cannot miss it, so there every NaN is an error
        tags.input_tags.allow_nan = self.modalities is not None
        return tags

    # ------------------------------------------------------------------ persistence
    def _make_trainer(self) -> Trainer:
        """The evaluation Trainer of a fitted model: retrieval from the training rows (the bank),
        draws restarted from the seed on every call, as in ``evaluate`` and ``predict``."""
        assert not is_direct(self.model_), "a method fitted without the Trainer"
        device = resolve_device(self.config_.train.device)
        return Trainer(
            self.model_,
            self.config_.train,
            RetrievalBank(self.bank_, device),
            device,
            self.seed_,
            self.config_.model.retriever.eval_draws,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        state.pop("_trainer", None)  # rebuilt on unpickling (it holds device-bound tensors)
        model = state.get("model_")
        if isinstance(model, torch.nn.Module):
            state["model_"] = copy.deepcopy(model).cpu()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "model_" in state:
            self._trainer = None if is_direct(self.model_) else self._make_trainer()

    def save(self, path: str | Path) -> None:
        """Write the fitted model as a safetensors checkpoint (see :meth:`load`)."""
        check_is_fitted(self)
        if self._trainer is None:
            raise NotImplementedError(
                f"save: method {self.method!r} is fitted without the Trainer and has no safetensors "
                f"checkpoint; pickle the estimator instead (unpickle only files you trust)"
            )
        assert isinstance(self.model_, torch.nn.Module)
        meta = {
            "params": _json_value(self.get_params(deep=False)),
            "classes": _json_value(self.classes_),
            "classes_dtype": self.classes_.dtype.str,
            "modalities": self.modalities_,
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": (
                _json_value(self.feature_names_in_) if hasattr(self, "feature_names_in_") else None
            ),
            "best_epoch": self.best_epoch_,
            "best_val": self.best_val_,
            "history": self.history_,
        }
        save_seed_checkpoint(
            Path(path),
            self.config_,
            self.seed_,
            self.model_.state_dict(),
            self.bank_,
            self.stats_,
            {_CHECKPOINT_KEY: meta},
        )

    @classmethod
    def load(cls, path: str | Path) -> MoERetrieverClassifier:
        """A fitted estimator from a checkpoint written by :meth:`save` (nothing is unpickled)."""
        loaded = load_seed_checkpoint(path)
        meta = loaded.meta.get(_CHECKPOINT_KEY)
        if meta is None:
            raise DataValidationError(
                f"{path}: not written by MoERetrieverClassifier.save "
                f"(a run's checkpoint: use moe_retriever.load_run)"
            )
        est = cls(**meta["params"])
        est.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        est.n_features_in_ = meta["n_features_in"]
        if meta["feature_names_in"] is not None:
            est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        est.modalities_ = {k: list(v) for k, v in meta["modalities"].items()}
        est.config_ = loaded.cfg
        est.seed_ = loaded.seed
        est.model_ = loaded.model
        est.stats_ = loaded.stats
        est.bank_ = loaded.bank
        est.best_epoch_, est.best_val_, est.history_ = meta["best_epoch"], meta["best_val"], meta["history"]
        est._trainer = est._make_trainer()
        return est


__all__ = ["KEYWORDS", "MoERetrieverClassifier", "from_modality_list"]
