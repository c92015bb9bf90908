"""The tables of the folder format: reading ``.csv`` / ``.parquet`` files and checking their cells.

CSV cells are read as text (UTF-8, a BOM is fine); Parquet columns keep their types. Every
message about a bad cell names the file, the row (CSV: its line number in the file; Parquet: its
0-based position) and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..dataset import DataValidationError

SPEC_FILE = "dataset.yaml"
# cell texts that mean "no value" (compared stripped and lower-cased)
EMPTY_CELLS = frozenset({"", "na", "nan", "n/a", "null", "none"})


@dataclass
class Table:
    """A .csv or .parquet file: its columns and how each data row is named in messages."""

    path: Path
    frame: pd.DataFrame  # CSV cells as text; Parquet columns keep their types
    rows: list[str]  # "line 7" (CSV) or "row 5" (Parquet)


def read_table(path: Path) -> Table:
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path)
    return _read_csv(path)


def _read_csv(path: Path) -> Table:
    header: list[str] | None = None
    records: list[list[str]] = []
    lines: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for record in reader:
                if not record:  # a blank line
                    continue
                if header is None:
                    header, header_line = [c.strip() for c in record], reader.line_num
                    continue
                if len(record) != len(header):
                    raise DataValidationError(
                        f"{path}: line {reader.line_num} has {len(record)} fields but the header "
                        f"(line {header_line}) has {len(header)}: rows must all have the same width"
                    )
                records.append(record)
                lines.append(f"line {reader.line_num}")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}: not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise DataValidationError(f"{path}: not a readable CSV file ({exc})") from exc
    if header is None:
        raise DataValidationError(f"{path}: the file is empty")
    if not records:
        raise DataValidationError(f"{path}: the file has a header but no data rows")
    _check_header(path, header)
    return Table(path, pd.DataFrame(records, columns=header, dtype=str), lines)


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow  # noqa: F401  (pandas reads Parquet through it)
    except ImportError as exc:
        raise DataValidationError(
            f"{path}: reading Parquet needs pyarrow: pip install pyarrow "
            f"(or pip install -e .[datasets]); where it cannot be installed, save the table as .csv"
        ) from exc
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for broken files
        raise DataValidationError(f"{path}: not a readable Parquet file ({exc})") from exc
    if frame.shape[1] == 0:
        raise DataValidationError(f"{path}: the file is empty")
    if frame.shape[0] == 0:
        raise DataValidationError(f"{path}: the file has columns but no data rows")
    # an index written by pandas (e.g. the id set as index) becomes an ordinary column
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    frame.columns = [str(c) for c in frame.columns]
    _check_header(path, list(frame.columns))
    return Table(path, frame.reset_index(drop=True), [f"row {i}" for i in range(len(frame))])


def _check_header(path: Path, header: list[str]) -> None:
    for j, name in enumerate(header):
        if not name:
            raise DataValidationError(f"{path}: column {j + 1} of the header has no name")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise DataValidationError(f"{path}: duplicate column name(s) {dup}")


def as_text(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), "").astype(str).str.strip()


def empty_cells(text: pd.Series) -> np.ndarray:
    return text.str.lower().isin(EMPTY_CELLS).to_numpy()


def table_ids(table: Table, id_column: str) -> list[str]:
    """The id column as text; every id present and unique."""
    if id_column not in table.frame.columns:
        raise DataValidationError(
            f"{table.path}: no id column {id_column!r} (columns: {list(table.frame.columns)[:10]}); "
            f"set id_column in {SPEC_FILE}"
        )
    col = table.frame[id_column]
    if pd.api.types.is_float_dtype(col) and col.notna().all() and (col == col.round()).all():
        col = col.astype("int64")  # Parquet ids stored as floats: 3.0 -> "3"
    ids = as_text(col)
    empty = empty_cells(ids)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise DataValidationError(f"{table.path}: {table.rows[i]}, column {id_column!r}: the id is empty")
    first: dict[str, int] = {}
    for i, sample in enumerate(ids.tolist()):
        if sample in first:
            raise DataValidationError(
                f"{table.path}: {table.rows[i]}, column {id_column!r}: duplicate id {sample!r} "
                f"(first at {table.rows[first[sample]]})"
            )
        first[sample] = i
    return ids.tolist()


def numeric_cells(table: Table, columns: list[str], ids: list[str]) -> np.ndarray:
    """The given columns as float64 (n, w), NaN where a cell is empty; any other non-number
    (including inf) is an error naming the row and the column."""
    return numeric_frame(
        table.frame,
        columns,
        lambda i, name: f"{table.path}: {table.rows[i]} (id {ids[i]!r}), column {name!r}",
    )


def numeric_frame(
    frame: pd.DataFrame, columns: Sequence[Any], place: Callable[[int, Any], str]
) -> np.ndarray:
    """``frame``'s ``columns`` as float64 (n, w), NaN where a cell is empty (NaN, None or an
    empty-cell text); a numeric text is its number; anything else (including inf) is a
    DataValidationError "``place(row position, column)``: <cell> is not a finite number"."""
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        col = frame[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isinf(values)
            shown: Sequence[Any] = values.tolist()  # Python floats: the message says inf
        else:
            text = as_text(col)
            empty = empty_cells(text)
            values = pd.to_numeric(text.where(~empty, None), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            bad = ~empty & ~np.isfinite(values)
            shown = text.tolist()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(f"{place(i, name)}: {shown[i]!r} is not a finite number")
        out[:, j] = values
    return out


def missing_cells(column: pd.Series) -> np.ndarray:
    """Where ``column`` holds no value: NaN, None or an empty-cell text ("", "NA", ...)."""
    return empty_cells(as_text(column))
