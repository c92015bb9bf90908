"""The label file of the folder format for each task (``dataset.yaml``'s ``task`` and ``label``).

* ``classification`` (default): ``label: {file, column}``; labels may be strings or integers.
* ``regression``: ``label: {file, column}``; the column holds a number for every sample.
* ``survival``: ``label: {file, time, event}``; ``time`` (default "time") holds the follow-up
  time (>= 0), ``event`` (default "event") 1 when the event was observed at that time and 0 when
  the sample was censored then (true/false are read as 1/0).

Every message names the file, the row (CSV: its line; Parquet: its position), the sample id and
the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..dataset import DataValidationError
from ..labels import TASKS
from .tables import SPEC_FILE, Table, as_text, missing_cells, numeric_frame, read_table, table_ids

# the keys of ``label`` for each task
LABEL_KEYS = {
    "classification": ("file", "column"),
    "regression": ("file", "column"),
    "survival": ("file", "time", "event"),
}


@dataclass(frozen=True)
class LabelSpec:
    """Where a folder dataset's labels are: the file and its label column(s) for the task."""

    task: str
    file: Path
    columns: tuple[str, ...]  # (label,) or (time, event)


def label_columns(task: str, label: dict, where: str) -> tuple[str, ...]:
    """The label column(s) of ``task`` from the checked ``label`` mapping."""
    allowed = LABEL_KEYS[task]
    unknown = sorted(set(label) - set(allowed))
    if unknown:
        hint = " (survival labels are label: {file, time, event})" if task != "survival" else ""
        raise DataValidationError(
            f"{where}: unknown key(s) {unknown} for task {task}; allowed: {list(allowed)}{hint}"
        )
    if task == "survival":
        return (str(label.get("time", "time")), str(label.get("event", "event")))
    return (str(label.get("column", "label")),)


def read_task(raw: dict, where: str) -> str:
    task = raw.get("task", "classification")
    if task not in TASKS:
        raise DataValidationError(f"{where}: task {task!r} is not one of {list(TASKS)}")
    return str(task)


def _column(table: Table, name: str, spec_file: Path, what: str) -> pd.Series:
    if name not in table.frame.columns:
        raise DataValidationError(
            f"{table.path}: no {what} column {name!r} (columns: {list(table.frame.columns)[:10]}); "
            f"set it under label in {SPEC_FILE}"
        )
    return table.frame[name]


def _present(table: Table, ids: list[str], name: str) -> None:
    empty = missing_cells(table.frame[name])
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise DataValidationError(
            f"{table.path}: {table.rows[i]} (id {ids[i]!r}), column {name!r}: the label is missing"
        )


def read_numeric_labels(spec: LabelSpec, id_column: str) -> tuple[list[str], torch.Tensor, list[str]]:
    """Ids, the label tensor of a regression or survival task (:mod:`..labels`) and row names;
    an empty cell, a non-number, a negative time or an event other than 0/1 is an error naming
    the row, the id and the column."""
    table = read_table(spec.file)
    ids = table_ids(table, id_column)
    for name in spec.columns:
        _column(table, name, spec.file, "label")
        _present(table, ids, name)

    def place(i: int, name: str) -> str:
        return f"{table.path}: {table.rows[i]} (id {ids[i]!r}), column {name!r}"

    if spec.task == "regression":
        values = numeric_frame(table.frame, list(spec.columns), place)[:, 0]
        return ids, torch.from_numpy(values), table.rows
    time_col, event_col = spec.columns
    time = numeric_frame(table.frame, [time_col], place)[:, 0]
    negative = np.flatnonzero(time < 0)
    if negative.size:
        i = int(negative[0])
        raise DataValidationError(f"{place(i, time_col)}: time {time[i]:g} is negative")
    event = _event_values(table, event_col, place)
    return ids, torch.from_numpy(np.stack([time, event], axis=1)), table.rows


def _event_values(table: Table, name: str, place) -> np.ndarray:
    col = table.frame[name]
    text = as_text(col).str.lower()
    mapped = text.map({"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "true": 1.0, "false": 0.0})
    bad = np.flatnonzero(mapped.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataValidationError(
            f"{place(i, name)}: event {as_text(col).iloc[i]!r} is not 0 (censored) or 1 (event observed)"
        )
    return mapped.to_numpy(dtype=np.float64)
