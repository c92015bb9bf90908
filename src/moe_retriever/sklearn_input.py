"""Input of the scikit-learn estimator (:mod:`moe_retriever.sklearn`): ``X`` and ``y`` checked
and turned into a :class:`~moe_retriever.data.dataset.MultimodalDataset`.

Bad cells and labels are reported as the folder loader reports them (the same checks, from
:mod:`moe_retriever.data.sources.folder`), naming the row (the DataFrame's index when unique, else
the position) and the column.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import validate_data

from .config import ConfigError
from .data.dataset import CategoricalColumn, DataValidationError, ModalitySpec, MultimodalDataset
from .data.sources.folder_modalities import DEFAULT_MAX_LEVELS, categorical_codes, is_categorical
from .data.sources.tables import missing_cells, numeric_frame

SINGLE_MODALITY = "X"  # the modality name when ``modalities`` is None


_NO_Y = object()  # predict passes no y; fit passes the user's, None included


def checked_matrix(estimator: Any, X: Any, y: Any = _NO_Y, reset: bool = True) -> Any:
    """``validate_data`` of ``X`` (and ``y``) as float64, NaN allowed. A cell that is no number
    (a text, inf) is a DataValidationError naming its row and column instead of numpy's or
    scikit-learn's message; a missing label one naming its row."""
    if y is not _NO_Y and y is not None:
        labels = np.asarray(y, dtype=object)
        aligned = labels.ndim == 1 and _n_rows(X) == len(labels)
        check_labels(labels, row_labels(X, len(labels)) if aligned else None)
    kwargs: dict[str, Any] = dict(reset=reset, dtype=np.float64, ensure_all_finite="allow-nan")
    try:
        if y is _NO_Y:
            return validate_data(estimator, X, **kwargs)
        return validate_data(estimator, X, y, **kwargs)
    except ValueError:
        check_cells(X)
        raise


def unlabelled_rows(y: Any, option: str) -> tuple[Any, np.ndarray | None]:
    """``y`` with its missing labels (None, NaN, empty) set to one of its labels, so that it
    passes scikit-learn's checks, and the mask of the rows whose label is missing; (``y``,
    None) when none is or when ``option`` (``data.unlabelled``) is ``error``, which
    :func:`checked_matrix` then reports."""
    values = np.asarray(y, dtype=object) if y is not None else None
    if option == "error" or values is None or values.ndim != 1:
        return y, None
    missing = np.asarray(missing_cells(pd.Series(values)), dtype=bool)
    if not missing.any():
        return y, None
    if missing.all():
        raise DataValidationError(
            f"y: all {len(values)} labels are missing; a classifier needs labelled rows"
        )
    filled = values.copy()
    filled[missing] = values[~missing][0]
    return np.asarray(filled.tolist()), missing


def categories_to_codes(X: Any, declared: Sequence[str] = ()) -> tuple[Any, dict[str, CategoricalColumn]]:
    """``X`` with its categorical columns replaced by the positions of their levels (NaN where
    empty), and those columns by name. A DataFrame column is categorical when its dtype is
    ``category``, when it holds text none of whose non-empty cells is a number (the folder
    format's rule), or when it is in ``declared`` (the categorical columns of training, so new
    data is read as the training data was). Anything but a DataFrame is returned as it is."""
    if not isinstance(X, pd.DataFrame):
        return X, {}
    names = [str(c) for c in X.columns]
    chosen = [j for j, c in enumerate(X.columns) if names[j] in declared or is_categorical(X.iloc[:, j])]
    if not chosen:
        return X, {}
    out = X.copy()
    categorical = {}
    for j in chosen:
        codes, column = categorical_codes(X.iloc[:, j], names[j], DEFAULT_MAX_LEVELS, "X")
        out.isetitem(j, codes)
        categorical[names[j]] = column
    return out, categorical


def _n_rows(X: Any) -> int | None:
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    return len(X) if isinstance(X, Sequence) else None


def check_cells(X: Any) -> None:
    """Raise the folder loader's error for the first cell of ``X`` that is not a finite number
    (NaN and empty cells are missing values, not errors); nothing when ``X`` is not a table."""
    try:
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
    except (TypeError, ValueError):
        return
    if frame.ndim != 2:
        return
    labels = [str(c) for c in frame.columns]
    rows = row_labels(X, len(frame))
    # positions, not names: a repeated column name would select several columns
    numeric_frame(
        frame.set_axis(range(frame.shape[1]), axis=1),
        list(range(frame.shape[1])),
        lambda i, j: f"X: row {rows[i]!r}, column {labels[j]!r}",
    )


def check_labels(y: Any, rows: list[str] | None) -> None:
    """A DataValidationError naming the first row whose label is missing (None, NaN, empty)."""
    values = np.asarray(y, dtype=object)
    if values.ndim != 1:
        return  # scikit-learn reports the shape
    missing = missing_cells(pd.Series(values))
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        row = rows[i] if rows is not None else str(i)
        raise DataValidationError(
            f"y: row {row!r}: the label is missing ({int(missing.sum())} such row(s)); "
            f"drop these rows or give their labels"
        )


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


def column_names(X: Any) -> list[Any] | None:
    if isinstance(X, (list, tuple)) and X and all(isinstance(b, pd.DataFrame) or np.ndim(b) == 2 for b in X):
        raise DataValidationError(
            "X is a list of per-modality blocks; convert it with "
            "moe_retriever.sklearn.from_modality_list(Xs, names) -> (frame, modalities) first"
        )
    return list(X.columns) if isinstance(X, pd.DataFrame) else None


def row_labels(X: Any, n: int) -> list[str]:
    """Row names for ids and error messages: a DataFrame's index when unique, else positions."""
    if isinstance(X, pd.DataFrame) and X.index.is_unique:
        return [str(i) for i in X.index]
    return [str(i) for i in range(n)]


def resolve_modalities(modalities: Any, columns: list[Any] | None, n_features: int) -> dict[str, list[int]]:
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


def to_dataset(
    values: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | None,
    modalities: dict[str, list[int]],
    column_labels: list[str],
    rows: list[str],
    loaded: bool,
    categorical: Mapping[str, CategoricalColumn] | None = None,
    task: str = "classification",
) -> MultimodalDataset:
    """A MultimodalDataset from a float matrix; a modality is missing where all its values are NaN.

    ``loaded``: the data a model is fitted on, which must observe every modality somewhere.
    ``categorical``: the columns (by label) that hold level positions (:func:`categories_to_codes`).
    ``labels``: class positions, regression targets or survival (time, event) rows, as the
    ``task``'s dataset stores them (``class_names`` None unless classification)."""
    categorical = categorical or {}
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
        names = tuple(column_labels[j] for j in cols)
        cats = tuple(categorical[c] for c in names if c in categorical)
        specs.append(ModalitySpec(name, (len(cols),), "tabular", names, cats))
    return MultimodalDataset(
        specs,
        features,
        torch.from_numpy(np.stack(observed, axis=1)),
        torch.from_numpy(labels.astype(np.int64 if task == "classification" else np.float64)),
        rows,
        class_names,
        "X",
        require_every_modality=loaded,
        task=task,  # type: ignore[arg-type]  # one of the Task values, set by the estimator class
    )


def holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
