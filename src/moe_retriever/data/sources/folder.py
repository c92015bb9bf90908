"""The folder format: a user's own incomplete multimodal data as plain files plus ``dataset.yaml``.

::

    my_data/
      dataset.yaml      # name; id_column (default "id"); label: {file, column (default "label")};
                        # modalities: [{name, file, kind (default tabular), ids (.npy only)}];
                        # splits: optional file holding {"train": [ids], "val": [ids], "test": [ids]}
      labels.csv        # id,label              (labels may be strings or integers)
      clinical.csv      # id,<feature columns>
      genetic.parquet   # id,<feature columns>
      image.npy         # array (n, ...); its ids, one a line, in image.npy.ids.txt

A sample lacks a modality when its id has no row in that modality's file, or when every feature
cell of its row is empty (blank, NA, NaN, N/A, null or None; for ``.npy`` all NaN). Every message
about bad input names the file and, where there is one, the row and the column: CSV rows by
their line number in the file, Parquet and ``.npy`` rows by their 0-based position.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from ...errors import InputNotFoundError
from ..dataset import DataValidationError, ModalitySpec, MultimodalDataset
from . import register_format

SPEC_FILE = "dataset.yaml"
SPEC_KEYS = ("name", "id_column", "label", "modalities", "splits")
LABEL_KEYS = ("file", "column")
MODALITY_KEYS = ("name", "file", "kind", "ids")
SPLIT_KEYS = ("train", "val", "test")
KINDS = ("tabular", "sequence", "image", "volume")
TABLE_SUFFIXES = (".csv", ".parquet")
# cell texts that mean "no value" (compared stripped and lower-cased)
EMPTY_CELLS = frozenset({"", "na", "nan", "n/a", "null", "none"})
_INTEGER = re.compile(r"[+-]?\d+")


# --------------------------------------------------------------------------- dataset.yaml


@dataclass(frozen=True)
class ModalityEntry:
    name: str
    file: Path
    kind: str
    ids: Path | None  # the id list of a .npy file


@dataclass(frozen=True)
class FolderSpec:
    root: Path
    name: str
    id_column: str
    label_file: Path
    label_column: str
    modalities: list[ModalityEntry]
    splits: Path | None


def _unknown_keys(where: str, got: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(got) - set(allowed))
    if unknown:
        raise DataValidationError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")


def _existing_file(root: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise DataValidationError(f"{where}: expected a file name, got {value!r}")
    path = root / value
    if not path.is_file():
        raise InputNotFoundError(f"{where}: file {path} does not exist")
    return path


def read_spec(root: Path) -> FolderSpec:
    """Read and check ``dataset.yaml``; every referenced file must exist."""
    spec_path = root / SPEC_FILE
    if not spec_path.is_file():
        raise InputNotFoundError(f"{spec_path}: not found; a folder dataset is described by {SPEC_FILE}")
    try:
        raw = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError as exc:
        raise DataValidationError(f"{spec_path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataValidationError(f"{spec_path}: the top level must be a mapping with keys {list(SPEC_KEYS)}")
    _unknown_keys(str(spec_path), raw, SPEC_KEYS)
    for key in ("label", "modalities"):
        if key not in raw:
            raise DataValidationError(f"{spec_path}: the key {key!r} is required")
    name = str(raw.get("name") or root.resolve().name)
    id_column = raw.get("id_column", "id")
    if not isinstance(id_column, str) or not id_column:
        raise DataValidationError(f"{spec_path}: id_column must be a column name, got {id_column!r}")

    label = raw["label"]
    if not isinstance(label, dict):
        raise DataValidationError(f"{spec_path}: label must be a mapping {{file, column}}, got {label!r}")
    _unknown_keys(f"{spec_path}: label", label, LABEL_KEYS)
    label_file = _existing_file(root, label.get("file"), f"{spec_path}: label.file")
    label_column = str(label.get("column", "label"))

    mods = raw["modalities"]
    if not isinstance(mods, list) or not mods:
        raise DataValidationError(f"{spec_path}: modalities must be a non-empty list")
    entries: list[ModalityEntry] = []
    for i, mod in enumerate(mods):
        where = f"{spec_path}: modalities[{i}]"
        if not isinstance(mod, dict):
            raise DataValidationError(f"{where}: expected a mapping {{name, file, kind}}, got {mod!r}")
        _unknown_keys(where, mod, MODALITY_KEYS)
        if not isinstance(mod.get("name"), str) or not mod["name"]:
            raise DataValidationError(f"{where}: name is required")
        file = _existing_file(root, mod.get("file"), f"{where}.file")
        kind = mod.get("kind", "tabular")
        if kind not in KINDS:
            raise DataValidationError(f"{where}.kind: {kind!r} is not one of {list(KINDS)}")
        suffix = file.suffix.lower()
        if suffix not in TABLE_SUFFIXES + (".npy",):
            raise DataValidationError(f"{where}.file: {file.name} is not a .csv, .parquet or .npy file")
        if suffix != ".npy" and kind != "tabular":
            raise DataValidationError(
                f"{where}: a {suffix} file holds tabular features; store {kind} data as .npy"
            )
        ids = None
        if suffix == ".npy":
            ids = (
                _existing_file(root, mod["ids"], f"{where}.ids")
                if "ids" in mod
                else _existing_file(root, file.name + ".ids.txt", f"{where} (its id list)")
            )
        elif "ids" in mod:
            raise DataValidationError(
                f"{where}.ids: only .npy files take an id list; {file.name} has the id column {id_column!r}"
            )
        entries.append(ModalityEntry(mod["name"], file, kind, ids))
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataValidationError(f"{spec_path}: duplicate modality names {dup}")
    splits = _existing_file(root, raw["splits"], f"{spec_path}: splits") if "splits" in raw else None
    return FolderSpec(root, name, id_column, label_file, label_column, entries, splits)


# --------------------------------------------------------------------------- tables


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


def _as_text(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), "").astype(str).str.strip()


def _empty_cells(text: pd.Series) -> np.ndarray:
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
    ids = _as_text(col)
    empty = _empty_cells(ids)
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
            text = _as_text(col)
            empty = _empty_cells(text)
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
    return _empty_cells(_as_text(column))


# --------------------------------------------------------------------------- modalities


@dataclass
class ModalityBlock:
    """One modality file read: row ids, values (k, *shape) and which rows hold data."""

    path: Path
    ids: list[str]
    rows: list[str]
    values: np.ndarray
    present: np.ndarray  # (k,) bool
    columns: tuple[str, ...] | None
    lengths: np.ndarray | None  # (k,) valid steps of a sequence modality


def read_tabular(entry: ModalityEntry, id_column: str, exclude: tuple[str, ...]) -> ModalityBlock:
    table = read_table(entry.file)
    ids = table_ids(table, id_column)
    columns = [c for c in table.frame.columns if c != id_column and c not in exclude]
    if not columns:
        raise DataValidationError(f"{entry.file}: no feature columns besides {id_column!r}")
    values = numeric_cells(table, columns, ids)
    present = _present_rows(values, entry.file, table.rows, ids, columns)
    return ModalityBlock(entry.file, ids, table.rows, values, present, tuple(columns), None)


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


# --------------------------------------------------------------------------- labels and splits


def read_labels(spec: FolderSpec) -> tuple[list[str], list[str], list[str]]:
    """Ids, label texts and row names of the label file; every label present."""
    table = read_table(spec.label_file)
    ids = table_ids(table, spec.id_column)
    if spec.label_column not in table.frame.columns:
        raise DataValidationError(
            f"{spec.label_file}: no label column {spec.label_column!r} "
            f"(columns: {list(table.frame.columns)[:10]}); set label.column in {SPEC_FILE}"
        )
    col = table.frame[spec.label_column]
    if pd.api.types.is_float_dtype(col) and (col.dropna() == col.dropna().round()).all():
        col = col.astype("Int64")  # Parquet integer labels with gaps come back as floats
    empty = missing_cells(col)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise DataValidationError(
            f"{spec.label_file}: {table.rows[i]} (id {ids[i]!r}), column {spec.label_column!r}: "
            f"the label is missing"
        )
    return ids, _as_text(col).tolist(), table.rows


def encode_labels(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names: sorted unique labels, numerically when all are integers."""
    unique = set(texts)
    if all(_INTEGER.fullmatch(t) for t in unique):
        by_value = {int(t): t for t in unique}
        if len(by_value) != len(unique):  # "1" and "01" are the same class
            texts = [str(int(t)) for t in texts]
        names = [str(v) for v in sorted(by_value)]
    else:
        names = sorted(unique)
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[t] for t in texts], dtype=np.int64), names


def read_splits(path: Path, ids: list[str]) -> dict[str, list[int]]:
    """{"train", "val", "test"} -> positions; every labelled sample in exactly one part."""
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML, so both are accepted
    except yaml.YAMLError as exc:
        raise DataValidationError(f"{path}: not valid JSON/YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataValidationError(f"{path}: expected a mapping with keys {list(SPLIT_KEYS)}")
    _unknown_keys(str(path), raw, SPLIT_KEYS)
    position = {s: i for i, s in enumerate(ids)}
    owner: dict[str, str] = {}
    parts: dict[str, list[int]] = {}
    for key in SPLIT_KEYS:
        members = raw.get(key)
        if not isinstance(members, list) or not members:
            raise DataValidationError(f"{path}: {key!r} must be a non-empty list of ids")
        parts[key] = []
        for sample in (str(m).strip() for m in members):
            if sample not in position:
                raise DataValidationError(f"{path}: {key}: id {sample!r} has no label")
            if sample in owner:
                raise DataValidationError(f"{path}: id {sample!r} is in both {owner[sample]!r} and {key!r}")
            owner[sample] = key
            parts[key].append(position[sample])
    left = [s for s in ids if s not in owner]
    if left:
        raise DataValidationError(f"{path}: {len(left)} labelled sample(s) are in no split, e.g. {left[:5]}")
    return parts


# --------------------------------------------------------------------------- the loader


def load_folder(path: str | Path) -> MultimodalDataset:
    """Load a folder dataset described by ``dataset.yaml``."""
    spec = read_spec(Path(path))
    label_ids, label_texts, label_rows = read_labels(spec)
    labels, class_names = encode_labels(label_texts)
    position = {s: i for i, s in enumerate(label_ids)}
    n = len(label_ids)
    observed = np.zeros((n, len(spec.modalities)), dtype=bool)
    features: dict[str, torch.Tensor] = {}
    lengths: dict[str, torch.Tensor] = {}
    specs: list[ModalitySpec] = []
    for m, entry in enumerate(spec.modalities):
        if entry.ids is not None:
            block = read_npy(entry)
        else:
            # a label column kept in a modality's own file is not a feature
            same = entry.file.resolve() == spec.label_file.resolve()
            block = read_tabular(entry, spec.id_column, (spec.label_column,) if same else ())
        unlabelled = [i for i, s in enumerate(block.ids) if s not in position]
        if unlabelled:
            i = unlabelled[0]
            raise DataValidationError(
                f"{block.path}: {block.rows[i]}, column {spec.id_column!r}: id {block.ids[i]!r} has "
                f"no label in {spec.label_file} ({len(unlabelled)} such id(s)); "
                f"labels are missing for these ids"
            )
        pos = np.array([position[s] for s in block.ids], dtype=np.int64)
        x = np.zeros((n,) + block.values.shape[1:], dtype=np.float32)
        x[pos] = np.nan_to_num(block.values, nan=0.0)
        observed[pos, m] = block.present
        features[entry.name] = torch.from_numpy(x)
        if block.lengths is not None:
            full = np.zeros(n, dtype=np.int64)
            full[pos] = block.lengths
            lengths[entry.name] = torch.from_numpy(full)
        specs.append(ModalitySpec(entry.name, tuple(block.values.shape[1:]), entry.kind, block.columns))
        if not block.present.any():
            raise DataValidationError(
                f"{block.path}: every row is empty; modality {entry.name!r} would be observed by no sample"
            )
    none = np.flatnonzero(~observed.any(axis=1))
    if none.size:
        i = int(none[0])
        raise DataValidationError(
            f"{spec.label_file}: {label_rows[i]}, column {spec.id_column!r}: id {label_ids[i]!r} has a "
            f"label but no data in any modality ({none.size} such id(s)); remove it or add its data"
        )
    dataset = MultimodalDataset(
        specs,
        features,
        torch.from_numpy(observed),
        torch.from_numpy(labels),
        label_ids,
        class_names,
        spec.name,
        lengths or None,
    )
    if spec.splits is not None:
        dataset.set_splits(read_splits(spec.splits, label_ids))
    return dataset


@register_format("folder", detect=lambda p: (p / SPEC_FILE).is_file())
def _load_folder_format(path: Path, trust_pickle: bool = False) -> MultimodalDataset:
    # the folder format never unpickles (.npy files are read with allow_pickle=False)
    del trust_pickle
    return load_folder(path)
