"""Reading one modality file of the folder format: tabular features (numbers and categories),
free text, and ``.npy`` arrays (tabular, sequences, images, volumes).

A sample lacks a modality when its id has no row in the file, or when its row holds no value:
every feature cell empty (blank, NA, NaN, N/A, null or None; all NaN for ``.npy``), or, for a text
modality, an empty or whitespace-only text (or one of those words).

Categorical columns are those ``dataset.yaml`` declares (``categorical: [columns]``) and those
whose non-empty cells are all non-numbers (a Parquet ``category`` column is categorical too). A
column where some cells are numbers and others are not is an error naming the first non-number
(usually a typo); declare it categorical when its levels really mix numbers and words, and
declare a numeric column (e.g. a product code) that should be a category. A categorical column's
cells hold the position of their level (the column's sorted distinct texts) until the levels are
fitted on a training split (:func:`moe_retriever.data.preprocessing.fit_categories`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import CategoricalColumn, DataValidationError
from ..text_embeddings import TextEncoding, load_texts
from .tables import Table, as_text, empty_cells, numeric_cells, read_table, table_ids

DEFAULT_MAX_LEVELS = 50
# a column with more distinct values is an identifier or free text, not a category
MAX_DISTINCT_LEVELS = 100_000


@dataclass(frozen=True)
class ModalityEntry:
    name: str
    file: Path
    kind: str
    ids: Path | None = None  # the id list of a .npy file
    column: str | None = None  # the text column of a text modality
    text: TextEncoding = TextEncoding()  # how a text modality is loaded
    categorical: tuple[str, ...] = ()  # columns declared categorical
    max_levels: int = DEFAULT_MAX_LEVELS
    where: str = ""  # its place in dataset.yaml, for messages


@dataclass
class ModalityBlock:
    """One modality file read: row ids, values (k, *shape) and which rows hold data."""

    path: Path
    ids: list[str]
    rows: list[str]
    values: np.ndarray
    present: np.ndarray  # (k,) bool
    columns: tuple[str, ...] | None
    lengths: np.ndarray | None  # (k,) valid steps of a sequence modality (ids of a text)
    categorical: tuple[CategoricalColumn, ...] = ()
    kind: str | None = None  # the ModalitySpec kind when it is not the entry's (text embeddings)

    def select(self, rows: np.ndarray) -> ModalityBlock:
        """The block of the rows ``rows`` (positions), e.g. without the ids of dropped samples."""
        return dataclasses.replace(
            self,
            ids=[self.ids[i] for i in rows],
            rows=[self.rows[i] for i in rows],
            values=self.values[rows],
            present=self.present[rows],
            lengths=self.lengths[rows] if self.lengths is not None else None,
        )


def is_categorical(column: pd.Series) -> bool:
    """Whether an undeclared column is categorical: a ``category`` column, or a column of text
    whose non-empty cells are all non-numbers."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return True
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return False
    text = as_text(column)
    filled = text[~empty_cells(text)]
    return bool(len(filled)) and bool(pd.to_numeric(filled, errors="coerce").isna().all())


def categorical_codes(
    column: pd.Series, name: str, max_levels: int, where: str
) -> tuple[np.ndarray, CategoricalColumn]:
    """The positions of a column's levels (NaN where empty) and the column's levels."""
    text = as_text(column)
    empty = empty_cells(text)
    levels = sorted(set(text[~empty].tolist()))
    if len(levels) > MAX_DISTINCT_LEVELS:
        raise DataValidationError(
            f"{where}, column {name!r}: {len(levels):,} distinct values, more than the "
            f"{MAX_DISTINCT_LEVELS:,} a categorical column may have (one-hot keeps at most "
            f"max_levels = {max_levels} of them anyway); this looks like an identifier or free "
            f"text: drop the column, or give it its own modality of kind text"
        )
    position = {level: k for k, level in enumerate(levels)}
    codes = np.array([np.nan if e else position[t] for t, e in zip(text.tolist(), empty, strict=True)])
    return codes, CategoricalColumn(name, tuple(levels), max_levels)


def read_tabular(entry: ModalityEntry, id_column: str, exclude: tuple[str, ...]) -> ModalityBlock:
    table = read_table(entry.file)
    ids = table_ids(table, id_column)
    columns = [c for c in table.frame.columns if c != id_column and c not in exclude]
    if not columns:
        raise DataValidationError(f"{entry.file}: no feature columns besides {id_column!r}")
    undeclared = [c for c in entry.categorical if c not in columns]
    if undeclared:
        raise DataValidationError(
            f"{entry.where}.categorical: {entry.file} has no feature column {undeclared[0]!r} "
            f"(columns: {columns[:10]})"
        )
    frame = table.frame
    categorical = [c for c in columns if c in entry.categorical or is_categorical(frame[c])]
    numeric = [c for c in columns if c not in categorical]
    values = np.empty((len(frame), len(columns)), dtype=np.float64)
    if numeric:
        values[:, [columns.index(c) for c in numeric]] = numeric_cells(table, numeric, ids)
    specs = []
    for name in categorical:
        codes, spec = categorical_codes(frame[name], name, entry.max_levels, str(entry.file))
        values[:, columns.index(name)] = codes
        specs.append(spec)
    present = _present_rows(values, entry.file, table.rows, ids, columns)
    return ModalityBlock(entry.file, ids, table.rows, values, present, tuple(columns), None, tuple(specs))


def text_column(table: Table, entry: ModalityEntry, id_column: str) -> str:
    """The text column of a text modality's table: ``column`` of dataset.yaml, or the one column
    besides the id."""
    others = [c for c in table.frame.columns if c != id_column]
    if entry.column is None:
        if len(others) != 1:
            raise DataValidationError(
                f"{entry.where}: {entry.file} has {len(others)} columns besides {id_column!r}; "
                f"name the text column with column: <name> (columns: {others[:10]})"
            )
        return others[0]
    if entry.column not in table.frame.columns or entry.column == id_column:
        raise DataValidationError(
            f"{entry.where}.column: {entry.file} has no text column {entry.column!r} (columns: {others[:10]})"
        )
    return entry.column


def read_text(entry: ModalityEntry, id_column: str) -> ModalityBlock:
    """A text modality: each row's hashed n-gram ids (their number as the length) or sentence
    embedding (:mod:`..text_embeddings`); an empty text means the modality is missing."""
    table = read_table(entry.file)
    ids = table_ids(table, id_column)
    column = table.frame[text_column(table, entry, id_column)]
    loaded = load_texts(column.astype(object).where(column.notna(), None).tolist(), entry.text)
    return ModalityBlock(
        entry.file, ids, table.rows, loaded.values, loaded.present, None, loaded.lengths, kind=loaded.kind
    )


def _present_rows(
    values: np.ndarray, path: Path, rows: list[str], ids: list[str], columns: list[str]
) -> np.ndarray:
    """Rows with every cell empty are absent; a partly empty row is an error."""
    nan = np.isnan(values)
    partial = nan.any(axis=1) & ~nan.all(axis=1)
    if partial.any():
        i = int(np.flatnonzero(partial)[0])
        j = int(np.flatnonzero(nan[i])[0])
        raise DataValidationError(
            f"{path}: {rows[i]} (id {ids[i]!r}), column {columns[j]!r}: the cell is empty while "
            f"others in the row are not; fill it, or leave the whole row empty to mark the "
            f"modality missing for this sample"
        )
    return ~nan.all(axis=1)


def read_npy(entry: ModalityEntry) -> ModalityBlock:
    assert entry.ids is not None
    try:
        array = np.load(entry.file, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle, which could run code
        raise DataValidationError(
            f"{entry.file}: not a numeric array ({exc}); save it with a numeric dtype"
        ) from exc
    if array.dtype.kind not in "biuf":
        raise DataValidationError(f"{entry.file}: dtype {array.dtype} is not numeric")
    want = {"tabular": "2 (samples, features)", "sequence": "3 (samples, steps, features)"}
    if (
        (entry.kind == "tabular" and array.ndim != 2)
        or (entry.kind == "sequence" and array.ndim != 3)
        or array.ndim < 2
    ):
        raise DataValidationError(
            f"{entry.file}: shape {array.shape} does not fit kind {entry.kind!r}: expected "
            f"{want.get(entry.kind, 'at least 2 (samples, ...)')} dimensions"
        )
    ids = [line.strip() for line in entry.ids.read_text(encoding="utf-8").splitlines()]
    while ids and not ids[-1]:
        ids.pop()
    if len(ids) != array.shape[0]:
        raise DataValidationError(
            f"{entry.ids}: {len(ids)} ids for the {array.shape[0]} rows of {entry.file}; "
            f"write one id a line, in row order"
        )
    first: dict[str, int] = {}
    for i, sample in enumerate(ids):
        if not sample:
            raise DataValidationError(f"{entry.ids}: line {i + 1} is an empty id")
        if sample in first:
            raise DataValidationError(
                f"{entry.ids}: line {i + 1}: duplicate id {sample!r} (first at line {first[sample] + 1})"
            )
        first[sample] = i
    values = array.astype(np.float64)
    rows = [f"row {i}" for i in range(len(ids))]
    if np.isinf(values).any():
        i = int(np.flatnonzero(np.isinf(values).reshape(len(ids), -1).any(axis=1))[0])
        raise DataValidationError(f"{entry.file}: {rows[i]} (id {ids[i]!r}) holds an infinite value")
    lengths = None
    if entry.kind == "sequence":
        present, lengths = _sequence_rows(values, entry.file, rows, ids)
    else:
        flat = values.reshape(len(ids), -1)
        columns = [str(j) for j in range(flat.shape[1])]
        present = _present_rows(flat, entry.file, rows, ids, columns)
    columns_t = tuple(str(j) for j in range(values.shape[1])) if entry.kind == "tabular" else None
    return ModalityBlock(entry.file, ids, rows, values, present, columns_t, lengths)


def _sequence_rows(values: np.ndarray, path: Path, rows: list[str], ids: list[str]):
    """Sequences are padded at the end with all-NaN steps; a sample whose steps are all NaN
    lacks the modality. NaN inside a sequence is an error."""
    nan = np.isnan(values)
    step_empty = nan.all(axis=2)  # (k, L)
    partial = nan.any(axis=2) & ~step_empty
    if partial.any():
        i, t = (int(v) for v in np.argwhere(partial)[0])
        raise DataValidationError(
            f"{path}: {rows[i]} (id {ids[i]!r}), step {t}: some features are "
            f"NaN; only whole padding steps at the end may be NaN"
        )
    steps = values.shape[1]
    filled = ~step_empty
    # length = 1 + the last filled step; every step before it must be filled
    last = np.where(filled.any(axis=1), steps - 1 - np.argmax(filled[:, ::-1], axis=1), -1)
    lengths = last + 1
    gap = filled.sum(axis=1) != lengths
    if gap.any():
        i = int(np.flatnonzero(gap)[0])
        raise DataValidationError(
            f"{path}: {rows[i]} (id {ids[i]!r}): an all-NaN step sits inside "
            f"the sequence; pad only at the end"
        )
    return lengths > 0, lengths
