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

**Other endpoints.** ``MoERetrieverRegressor`` (a numeric ``y``) and ``MoERetrieverSurvival``
(scikit-survival's structured ``y`` of event indicators and times) take the same parameters and
input; they live in :mod:`moe_retriever.sklearn_endpoints` and are importable from here.

**Persistence.** A fitted estimator pickles (pickle runs code while loading: unpickle only files
you trust). :meth:`MoERetrieverClassifier.save` writes the library's safetensors checkpoint
(weights, bank, statistics and JSON metadata, no pickle) and :meth:`MoERetrieverClassifier.load`
reads it back safely; methods fitted without the Trainer (``majority``, ``hist_gbt``) have no
such checkpoint and can only be pickled.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from .config import ConfigError, ExperimentConfig, TrainConfig, from_dict, load_config, to_dict
from .contract import DirectMethod, MethodModel, is_direct
from .data.bank import RetrievalBank
from .data.dataset import DataValidationError, MultimodalDataset
from .data.preprocessing import encode_categories, fit_categories, fit_standardizer, standardize
from .data.unlabelled import split_bank_only, with_bank_only
from .methods import METHODS
from .sklearn_input import (
    SINGLE_MODALITY,
    categories_to_codes,
    checked_matrix,
    column_names,
    from_modality_list,
    holdout,
    resolve_modalities,
    row_labels,
    to_dataset,
    unlabelled_rows,
)
from .sklearn_keywords import (
    KEYWORDS as KEYWORDS,
)
from .sklearn_keywords import (
    WARMUP_KEY,
    get_dotted,
    has_dotted,
    json_value,
    merge_mappings,
    naming_the_keyword,
    read_yaml_mapping,
    set_dotted,
)
from .training.endpoints import TaskHead
from .training.fitting import FittedMethod, fit_model
from .training.run_files import load_seed_checkpoint, save_seed_checkpoint
from .training.trainer import FitResult, Trainer, resolve_device

_CHECKPOINT_KEY = "estimator"  # the estimator's entry in the checkpoint metadata


# --------------------------------------------------------------------------- the estimator


class MoERetrieverEstimator(BaseEstimator):
    """What every estimator of the library shares: the parameters, the configuration, the input
    conversion, fitting with a validation split and persistence. The subclasses say what ``y``
    is (:meth:`_targets`) and what a prediction is: :class:`MoERetrieverClassifier` here,
    ``MoERetrieverRegressor`` and ``MoERetrieverSurvival`` in :mod:`moe_retriever.sklearn_endpoints`.

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
    unlabelled : what ``fit`` does with rows whose label is None / NaN (``data.unlabelled``):
        ``"error"`` (the default) names the first such row; ``"bank"`` keeps them as bank-only
        samples, which join the retrieval bank and never the loss or the validation split;
        ``"drop"`` leaves them out.

    Attributes
    ----------
    n_features_in_, feature_names_in_ (string column names only), modalities_
    (``{name: column positions}``), config_ (the resolved ExperimentConfig), seed_, model_,
    best_epoch_, best_val_ (validation metrics of the selected epoch), history_, bank_ (the
    retrieval bank: the training rows, then the bank-only rows), bank_labelled_ (how many of
    its first rows are labelled) and the subclass's own (``classes_`` of the classifier).
    """

    # the task of the labels: what ``y`` holds and what the model's head predicts
    _task: str = "classification"
    # the fitted attributes (set by fit and load; absent before, which check_is_fitted tests)
    modalities_: dict[str, list[int]]
    config_: ExperimentConfig
    seed_: int
    model_: MethodModel | DirectMethod
    stats_: dict[str, tuple[Tensor, Tensor]]
    bank_: MultimodalDataset
    bank_labelled_: int
    best_epoch_: int
    best_val_: dict[str, float]
    history_: list[dict[str, Any]]
    # the trained head's interpretation of the model's output (regression scale, survival
    # baseline); None for methods fitted without the Trainer and for the classifier
    head_: TaskHead | None
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
        unlabelled: str | None = None,
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
        self.unlabelled = unlabelled

    # ------------------------------------------------------------------ configuration
    def resolved_config(self, seed: int | None = None) -> ExperimentConfig:
        """The experiment config ``fit`` trains with: file < ``config`` < keywords. ``seed``
        (``train.seeds``) defaults to an integer ``random_state``, else 0."""
        if seed is None:
            seed = int(self.random_state) if isinstance(self.random_state, numbers.Integral) else 0
        # the file is read (and checked) as `moe-retriever train --config` reads it
        data = to_dict(load_config(self.config_path)) if self.config_path is not None else {}
        if self.config is not None:
            if not isinstance(self.config, Mapping):
                raise ConfigError(f"config: expected a dict of config values, got {self.config!r}")
            data = merge_mappings(data, self.config)
        for keyword, keys in KEYWORDS.items():
            value = getattr(self, keyword)
            if value is not None:
                for key in keys:
                    set_dotted(data, key, value)
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ConfigError(f"method: unknown method {self.method!r}; available: {sorted(METHODS)}")
        data["method"] = self.method
        set_dotted(data, "train.seeds", [int(seed)])
        set_dotted(data, "train.progress", bool(self.verbose))
        self._warmup_follows_epochs(data)
        try:
            return from_dict(ExperimentConfig, data).validate()
        except ConfigError as exc:
            raise naming_the_keyword(exc, data) from None

    def _warmup_follows_epochs(self, data: dict[str, Any]) -> None:
        """A warm-up nobody set (no keyword, not in ``config`` or the file) is the config's
        default, or ``epochs - 1`` when that is shorter: the default must leave a retrieval
        epoch, whatever the epochs. A warm-up the user set is kept (and checked)."""
        default = TrainConfig()
        raw_file = read_yaml_mapping(self.config_path) if self.config_path is not None else {}
        chosen = self.warmup_epochs is not None or any(
            has_dotted(source, WARMUP_KEY) for source in (raw_file, self.config or {})
        )
        epochs = get_dotted(data, "train.epochs", default.epochs)
        if not chosen and isinstance(epochs, int) and epochs - 1 < default.warmup_epochs:
            set_dotted(data, WARMUP_KEY, max(epochs - 1, 0))

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # ------------------------------------------------------------------ fit / predict
    def _targets(
        self, X: Any, y: Any, labelled: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[str] | None, dict[str, Any]]:
        """``X`` as a checked float matrix, the labels as the task's dataset stores them (any
        value where ``labelled`` is false; None: every row is labelled), the class names (None
        unless classification) and the fitted attributes the labels give."""
        raise NotImplementedError

    def _fit(self, X: Any, y: Any) -> None:
        """Train on ``X`` (rows with any observed modalities) and labels ``y``: a validation
        split stratified as the task's splits are (``MultimodalDataset.strata``)."""
        if not isinstance(self.validation_fraction, numbers.Real) or not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction: must be in (0, 1), got {self.validation_fraction!r}")
        seed = self._seed()
        cfg = self.resolved_config(seed)
        columns = column_names(X)
        X, categorical = categories_to_codes(X)
        # rows without a label (data.unlabelled: bank or drop; classification): bank-only samples
        y, without_label = (
            unlabelled_rows(y, cfg.data.unlabelled) if self._task == "classification" else (y, None)
        )
        labelled = None if without_label is None else ~without_label
        values, labels, class_names, attributes = self._targets(X, y, labelled)
        if labelled is None:
            labelled = np.ones(values.shape[0], dtype=bool)
        rows = row_labels(X, values.shape[0])
        modalities = resolve_modalities(self.modalities, columns, values.shape[1])
        dataset = to_dataset(
            values,
            labels,
            class_names,
            modalities,
            self._column_labels(columns, values),
            rows,
            loaded=True,
            categorical=categorical,
            task=self._task,
        )
        dataset, bank_only = split_bank_only(dataset, torch.from_numpy(labelled))
        if cfg.data.unlabelled == "drop":
            bank_only = None
        train_pos, val_pos = holdout(dataset.strata.numpy(), float(self.validation_fraction), seed)
        # categorical levels from the training rows only (as data.partitions does per split)
        categories = fit_categories(dataset.subset(train_pos))
        dataset, _ = encode_categories(dataset, categories)
        train = dataset.subset(train_pos)
        stats = fit_standardizer(train) if cfg.data.standardize else {}
        train, val = standardize(train, stats), standardize(dataset.subset(val_pos), stats)
        if bank_only is not None:
            bank_only = standardize(encode_categories(bank_only, categories)[0], stats)
        device = resolve_device(cfg.train.device)
        fitted = fit_model(cfg, train, val, dataset.n_classes, seed, device, bank_only=bank_only)
        model, result, trainer = fitted.model, fitted.fit, fitted.trainer
        for name, value in attributes.items():
            setattr(self, name, value)
        self.modalities_ = modalities
        self.config_ = cfg
        self.seed_ = seed
        self.model_ = model
        self.stats_ = stats
        self.bank_ = with_bank_only(train, bank_only)
        self.bank_labelled_ = len(train)
        self.best_epoch_ = result.best_epoch
        self.best_val_ = result.best_val
        self.history_ = result.history
        self.head_ = trainer.head if trainer is not None and self._task != "classification" else None
        self._trainer = trainer

    @staticmethod
    def _column_labels(columns: list[Any] | None, values: np.ndarray) -> list[str]:
        return [str(c) for c in columns] if columns is not None else [str(j) for j in range(values.shape[1])]

    def _prediction_data(self, X: Any) -> MultimodalDataset:
        """``X`` as the standardised dataset a fitted model predicts (placeholder labels). Each
        row may observe any non-empty subset of the modalities; missing ones are retrieved from
        the training rows."""
        check_is_fitted(self)
        columns = column_names(X)
        trained = [c.name for s in self.bank_.modalities for c in s.categorical]
        X, categorical = categories_to_codes(X, trained)
        values = checked_matrix(self, X, reset=False)
        rows = row_labels(X, values.shape[0])
        n = values.shape[0]
        placeholder = {
            "classification": np.zeros(n, dtype=np.int64),
            "regression": np.zeros(n),
            "survival": np.zeros((n, 2)),
        }[self._task]
        dataset = to_dataset(
            values,
            placeholder,
            [str(c) for c in getattr(self, "classes_", [])] if self._task == "classification" else None,
            self.modalities_,
            self._column_labels(columns, values),
            rows,
            loaded=False,
            categorical=categorical,
            task=self._task,
        )
        # levels training never saw are encoded as <unknown>; a warning counts them per column
        # (predict may not change the estimator's attributes)
        dataset, unknown = encode_categories(dataset, self.bank_.modalities)
        if unknown:
            warnings.warn(
                "X: levels training never saw, encoded as <unknown>: "
                + ", ".join(f"{column} {n} row(s)" for column, n in unknown.items()),
                UserWarning,
                stacklevel=3,
            )
        return standardize(dataset, self.stats_)

    def _fitted(self) -> FittedMethod:
        """The fitted model as the library's pipeline holds it (predictions of every task)."""
        return FittedMethod(self.model_, FitResult(self.best_epoch_, self.best_val_), self._trainer)

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
            RetrievalBank(self.bank_, device, getattr(self, "bank_labelled_", None)),
            device,
            self.seed_,
            self.config_.model.retriever.eval_draws,
            head=getattr(self, "head_", None),
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


class MoERetrieverClassifier(ClassifierMixin, MoERetrieverEstimator):
    """scikit-learn classifier for incomplete multimodal tabular data (see the module docstring
    and :class:`MoERetrieverEstimator` for the parameters).

    Attributes: ``classes_`` (the labels, in the column order of :meth:`predict_proba`) and
    those of :class:`MoERetrieverEstimator`.
    """

    classes_: np.ndarray

    def _targets(
        self, X: Any, y: Any, labelled: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[str] | None, dict[str, Any]]:
        values, y = checked_matrix(self, X, y)
        rows = slice(None) if labelled is None else labelled
        check_classification_targets(y[rows])
        classes, encoded_labelled = np.unique(y[rows], return_inverse=True)
        encoded = np.zeros(len(y), dtype=np.int64)
        encoded[rows] = encoded_labelled
        if len(classes) < 2:
            raise DataValidationError(
                f"y has 1 class ({classes[0]!r}); a classifier needs at least two classes"
            )
        return values, encoded, [str(c) for c in classes], {"classes_": classes}

    def fit(self, X: Any, y: Any) -> MoERetrieverClassifier:
        """Train on ``X`` (rows with any observed modalities) and labels ``y``."""
        self._fit(X, y)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, C) class probabilities, columns in :attr:`classes_` order. Each row may observe
        any non-empty subset of the modalities; missing ones are retrieved from the training rows."""
        dataset = self._prediction_data(X)
        if self._trainer is None:  # a method fitted without the Trainer
            assert is_direct(self.model_)
            return np.asarray(self.model_.predict_proba(dataset), dtype=np.float64)
        return self._trainer.predict_proba(dataset).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (values of :attr:`classes_`)."""
        probs = self.predict_proba(X)  # first: it raises NotFittedError before classes_ exists
        return self.classes_[probs.argmax(axis=1)]

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
            "params": json_value(self.get_params(deep=False)),
            "classes": json_value(self.classes_),
            "classes_dtype": self.classes_.dtype.str,
            "modalities": self.modalities_,
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": (
                json_value(self.feature_names_in_) if hasattr(self, "feature_names_in_") else None
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
            {_CHECKPOINT_KEY: meta, "bank_labelled": self.bank_labelled_},
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
        est.bank_labelled_ = loaded.n_labelled
        est.best_epoch_, est.best_val_, est.history_ = meta["best_epoch"], meta["best_val"], meta["history"]
        est._trainer = est._make_trainer()
        return est


def __getattr__(name: str) -> Any:
    # the regression and survival estimators live in their own module (imported on first use)
    if name in ("MoERetrieverRegressor", "MoERetrieverSurvival"):
        from . import sklearn_endpoints

        return getattr(sklearn_endpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KEYWORDS",
    "SINGLE_MODALITY",
    "MoERetrieverClassifier",
    "MoERetrieverEstimator",
    "from_modality_list",
]
