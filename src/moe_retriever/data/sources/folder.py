"""The folder format: a user's own incomplete multimodal data as plain files plus ``dataset.yaml``.

::

    my_data/
      dataset.yaml      # name; id_column (default "id"); task (classification (default),
                        #   regression or survival); label: {file, column (default "label")},
                        #   for survival {file, time (default "time"), event (default "event")};
                        # modalities: [{name, file, kind (default tabular), ids (.npy only),
                        #   column, max_tokens, encoder, model_dir and cache_dir (text),
                        #   categorical and max_levels (tabular)}];
                        # splits: optional file holding {"train": [ids], "val": [ids], "test": [ids]}
      labels.csv        # id,label              (labels may be strings or integers; regression:
                        #                        numbers; survival: id,time,event)
      clinical.csv      # id,<feature columns>
      genetic.parquet   # id,<feature columns>
      image.npy         # array (n, ...); its ids, one a line, in image.npy.ids.txt
      notes.csv         # id,<text column>      (kind: text)

A sample lacks a modality when its id has no row in that modality's file, or when every feature
cell of its row is empty (blank, NA, NaN, N/A, null or None; for ``.npy`` all NaN), or its text is
(see :mod:`.folder_modalities`, which also says which columns are categorical). Every message
about bad input names the file and, where there is one, the row and the column: CSV rows by
their line number in the file, Parquet and ``.npy`` rows by their 0-based position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from ...errors import InputNotFoundError
from ..dataset import DataValidationError, ModalitySpec, MultimodalDataset
from ..text_embeddings import TEXT_ENCODERS, TextEncoding
from ..text_tokens import DEFAULT_MAX_TOKENS
from ..unlabelled import split_bank_only
from . import register_format
from .folder_labels import LabelSpec, label_columns, read_numeric_labels, read_task
from .folder_modalities import DEFAULT_MAX_LEVELS, ModalityEntry, read_npy, read_tabular, read_text
from .tables import (  # noqa: F401  (re-exported: the folder format's table readers)
    EMPTY_CELLS,
    SPEC_FILE,
    Table,
    as_text,
    missing_cells,
    numeric_cells,
    numeric_frame,
    read_table,
    table_ids,
)

SPEC_KEYS = ("name", "id_column", "task", "label", "modalities", "splits")
MODALITY_KEYS = (
    "name",
    "file",
    "kind",
    "ids",
    "column",
    "max_tokens",
    "encoder",
    "model_dir",
    "cache_dir",
    "categorical",
    "max_levels",
)
SPLIT_KEYS = ("train", "val", "test")
KINDS = ("tabular", "sequence", "image", "volume", "text")
TABLE_SUFFIXES = (".csv", ".parquet")
_INTEGER = re.compile(r"[+-]?\d+")


# --------------------------------------------------------------------------- dataset.yaml


@dataclass(frozen=True)
class FolderSpec:
    root: Path
    name: str
    id_column: str
    label_file: Path
    label_column: str
    modalities: list[ModalityEntry]
    splits: Path | None
    task: str = "classification"
    # the label column(s): (label,) or, for survival, (time, event)
    label_columns: tuple[str, ...] = ()


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


def _positive_int(mod: dict, key: str, default: int, where: str) -> int:
    value = mod.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataValidationError(f"{where}.{key}: must be a positive integer, got {value!r}")
    return value


def _modality_entry(
    root: Path, mod: dict, file: Path, kind: str, id_column: str, where: str
) -> ModalityEntry:
    """One checked entry of ``modalities``; keys that do not fit its kind or file are errors."""
    suffix = file.suffix.lower()
    if suffix not in TABLE_SUFFIXES + (".npy",):
        raise DataValidationError(f"{where}.file: {file.name} is not a .csv, .parquet or .npy file")
    if suffix != ".npy" and kind not in ("tabular", "text"):
        raise DataValidationError(
            f"{where}: a {suffix} file holds tabular features or text; store {kind} data as .npy"
        )
    if suffix == ".npy" and kind == "text":
        raise DataValidationError(f"{where}: text is read from a .csv or .parquet file, not {file.name}")
    for key, needs in (
        ("column", "text"),
        ("max_tokens", "text"),
        ("encoder", "text"),
        ("model_dir", "text"),
        ("cache_dir", "text"),
        ("categorical", "tabular"),
        ("max_levels", "tabular"),
    ):
        if key in mod and (kind != needs or (needs == "tabular" and suffix == ".npy")):
            raise DataValidationError(
                f"{where}.{key}: only {needs} modalities in a .csv or .parquet file take {key}"
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
    column = mod.get("column")
    if column is not None and (not isinstance(column, str) or not column):
        raise DataValidationError(f"{where}.column: expected a column name, got {column!r}")
    categorical = mod.get("categorical", [])
    if not isinstance(categorical, list) or not all(isinstance(c, str) and c for c in categorical):
        raise DataValidationError(
            f"{where}.categorical: expected a list of column names, got {categorical!r}"
        )
    return ModalityEntry(
        mod["name"],
        file,
        kind,
        ids,
        column,
        _text_encoding(root, mod, where),
        tuple(categorical),
        _positive_int(mod, "max_levels", DEFAULT_MAX_LEVELS, where),
        where,
    )


def _text_encoding(root: Path, mod: dict, where: str) -> TextEncoding:
    """``encoder`` (hashed ids or sentence embeddings) and its settings; paths are relative to
    the folder."""
    encoder = mod.get("encoder", "hashed")
    if encoder not in TEXT_ENCODERS:
        raise DataValidationError(f"{where}.encoder: {encoder!r} is not one of {list(TEXT_ENCODERS)}")
    needs = {"max_tokens": "hashed", "model_dir": "minilm", "cache_dir": "minilm"}
    for key, encoder_of_key in needs.items():
        if key in mod and encoder != encoder_of_key:
            raise DataValidationError(f"{where}.{key}: only encoder {encoder_of_key} takes {key}")
    paths = {}
    for key in ("model_dir", "cache_dir"):
        value = mod.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise DataValidationError(f"{where}.{key}: expected a directory, got {value!r}")
        paths[key] = root / Path(value).expanduser() if value else None
    return TextEncoding(
        "minilm" if encoder == "minilm" else "hashed",
        _positive_int(mod, "max_tokens", DEFAULT_MAX_TOKENS, where),
        paths["model_dir"],
        paths["cache_dir"],
        where,
    )


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

    task = read_task(raw, f"{spec_path}: task")
    label = raw["label"]
    if not isinstance(label, dict):
        raise DataValidationError(f"{spec_path}: label must be a mapping {{file, column}}, got {label!r}")
    columns = label_columns(task, label, f"{spec_path}: label")
    label_file = _existing_file(root, label.get("file"), f"{spec_path}: label.file")
    label_column = columns[0]

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
        entries.append(_modality_entry(root, mod, file, kind, id_column, where))
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataValidationError(f"{spec_path}: duplicate modality names {dup}")
    splits = _existing_file(root, raw["splits"], f"{spec_path}: splits") if "splits" in raw else None
    return FolderSpec(root, name, id_column, label_file, label_column, entries, splits, task, columns)


# --------------------------------------------------------------------------- labels and splits


def read_labels(
    spec: FolderSpec, unlabelled: str = "error"
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Ids, label texts and row names of the label file's labelled rows, and the ids whose label
    cell is empty (an error unless ``unlabelled`` is bank or drop)."""
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
    if empty.any() and unlabelled == "error":
        i = int(np.flatnonzero(empty)[0])
        raise DataValidationError(
            f"{spec.label_file}: {table.rows[i]} (id {ids[i]!r}), column {spec.label_column!r}: "
            f"the label is missing ({int(empty.sum())} such row(s)); set data.unlabelled: bank to "
            f"use them as bank-only samples"
        )
    keep = np.flatnonzero(~empty)
    texts = as_text(col).tolist()
    return (
        [ids[i] for i in keep],
        [texts[i] for i in keep],
        [table.rows[i] for i in keep],
        [ids[i] for i in np.flatnonzero(empty)],
    )


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


def load_folder(path: str | Path, unlabelled: str = "error") -> MultimodalDataset:
    """Load a folder dataset described by ``dataset.yaml``. Ids with modality rows but no label
    are an error, or with ``unlabelled`` = ``bank`` the dataset's bank-only samples
    (:attr:`MultimodalDataset.bank_only`, see :mod:`..unlabelled`), or with ``drop`` left out."""
    spec = read_spec(Path(path))
    if spec.task == "classification":
        label_ids, label_texts, label_rows, empty_label_ids = read_labels(spec, unlabelled)
        labels_array, class_names = encode_labels(label_texts)
        labels = torch.from_numpy(labels_array)
    else:
        # an empty cell of a regression or survival label is an error; ids the label file does
        # not list can still be bank-only samples
        label_ids, labels, label_rows = read_numeric_labels(
            LabelSpec(spec.task, spec.label_file, spec.label_columns), spec.id_column
        )
        class_names, empty_label_ids = [], []
    blocks = [_read_block(spec, entry) for entry in spec.modalities]
    n_labelled = len(label_ids)
    sample_ids = label_ids + (
        _unlabelled_ids(spec, blocks, label_ids, empty_label_ids) if unlabelled == "bank" else []
    )
    position = {s: i for i, s in enumerate(sample_ids)}
    n = len(sample_ids)
    observed = np.zeros((n, len(spec.modalities)), dtype=bool)
    features: dict[str, torch.Tensor] = {}
    lengths: dict[str, torch.Tensor] = {}
    specs: list[ModalitySpec] = []
    for m, (entry, block) in enumerate(zip(spec.modalities, blocks, strict=True)):
        without = [i for i, s in enumerate(block.ids) if s not in position]
        if without and unlabelled == "error":
            i = without[0]
            raise DataValidationError(
                f"{block.path}: {block.rows[i]}, column {spec.id_column!r}: id {block.ids[i]!r} has "
                f"no label in {spec.label_file} ({len(without)} such id(s)); labels are missing for "
                f"these ids (set data.unlabelled: bank to use them as bank-only samples)"
            )
        rows = np.array([i for i, s in enumerate(block.ids) if s in position], dtype=np.int64)
        block = block.select(rows) if len(rows) < len(block.ids) else block
        pos = np.array([position[s] for s in block.ids], dtype=np.int64)
        x = np.zeros((n,) + block.values.shape[1:], dtype=np.float32)
        x[pos] = np.nan_to_num(block.values, nan=0.0)
        observed[pos, m] = block.present
        features[entry.name] = torch.from_numpy(x)
        if block.lengths is not None:
            full = np.zeros(n, dtype=np.int64)
            full[pos] = block.lengths
            lengths[entry.name] = torch.from_numpy(full)
        specs.append(
            ModalitySpec(
                entry.name,
                tuple(block.values.shape[1:]),
                block.kind or entry.kind,
                block.columns,
                block.categorical,
            )
        )
        if not block.present.any():
            raise DataValidationError(
                f"{block.path}: every row is empty; modality {entry.name!r} would be observed by no sample"
            )
    none = np.flatnonzero(~observed[:n_labelled].any(axis=1))
    if none.size:
        i = int(none[0])
        raise DataValidationError(
            f"{spec.label_file}: {label_rows[i]}, column {spec.id_column!r}: id {label_ids[i]!r} has a "
            f"label but no data in any modality ({none.size} such id(s)); remove it or add its data"
        )
    # bank-only ids whose every row is empty have nothing to retrieve: they are not samples
    kept = np.flatnonzero(observed.any(axis=1))
    everything = MultimodalDataset(
        specs,
        {k: v[kept] for k, v in features.items()},
        torch.from_numpy(observed[kept]),
        # bank-only rows carry a placeholder label that split_bank_only drops with them
        torch.cat([labels, labels.new_zeros((n - n_labelled,) + tuple(labels.shape[1:]))])[kept],
        [sample_ids[i] for i in kept],
        class_names,
        spec.name,
        {k: v[kept] for k, v in lengths.items()} or None,
        task=spec.task,  # type: ignore[arg-type]  # read_task checked it
    )
    dataset, bank_only = split_bank_only(everything, torch.from_numpy(kept < n_labelled))
    dataset.bank_only = bank_only
    if spec.splits is not None:
        dataset.set_splits(read_splits(spec.splits, label_ids))
    return dataset


def _read_block(spec: FolderSpec, entry: ModalityEntry):
    """The rows of one modality's file."""
    if entry.ids is not None:
        return read_npy(entry)
    if entry.kind == "text":
        return read_text(entry, spec.id_column)
    # a label column kept in a modality's own file is not a feature
    same = entry.file.resolve() == spec.label_file.resolve()
    return read_tabular(entry, spec.id_column, spec.label_columns if same else ())


def _unlabelled_ids(spec: FolderSpec, blocks: list, label_ids: list[str], empty: list[str]) -> list[str]:
    """The ids without a label (an empty label cell, or no row in the label file) that have a row
    in some modality's file, in the order of the label file, then of the modality files."""
    labelled = set(label_ids)
    out = dict.fromkeys(empty)
    for block in blocks:
        out.update(dict.fromkeys(s for s in block.ids if s not in labelled))
    return list(out)


@register_format("folder", detect=lambda p: (p / SPEC_FILE).is_file())
def _load_folder_format(
    path: Path, trust_pickle: bool = False, unlabelled: str = "error"
) -> MultimodalDataset:
    # the folder format never unpickles (.npy files are read with allow_pickle=False)
    del trust_pickle
    return load_folder(path, unlabelled)
