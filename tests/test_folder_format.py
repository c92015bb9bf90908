"""The folder format: loading, missingness, labels, splits, and an error naming the file, row and
column for every kind of bad input. Each test writes its own small fixture folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from moe_retriever.cli import main
from moe_retriever.config import DataConfig, load_config
from moe_retriever.data.dataset import DataValidationError
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.data.sources import detect_format, load_dataset
from moe_retriever.data.sources.folder import encode_labels, load_folder

IDS = [f"p{i}" for i in range(1, 9)]
LABELS = ["AD", "CN", "MCI", "CN", "AD", "CN", "MCI", "AD"]
# clinical: rows for p1..p7 (p8 absent); p3's row is all empty -> clinical missing for p3 and p8
CLINICAL = {
    "p1": (71, 24),
    "p2": (65, 30),
    "p3": None,
    "p4": (80, 28),
    "p5": (75, 20),
    "p6": (60, 29),
    "p7": (68, 26),
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def clinical_csv(rows: dict[str, tuple | None] = CLINICAL) -> str:
    lines = ["id,age,mmse"]
    for sample, values in rows.items():
        lines.append(f"{sample},," if values is None else f"{sample},{values[0]},{values[1]}")
    return "\n".join(lines) + "\n"


def make_folder(root: Path, spec_extra: dict | None = None, npy: bool = True) -> Path:
    """labels.csv (8 ids) + clinical.csv + genetic.csv (+ image.npy): a valid folder dataset."""
    root.mkdir(parents=True, exist_ok=True)
    write(
        root / "labels.csv",
        "id,diagnosis\n" + "".join(f"{i},{y}\n" for i, y in zip(IDS, LABELS, strict=True)),
    )
    write(root / "clinical.csv", clinical_csv())
    # genetic: p2, p3, p4, p6, p8 in another order than the labels; p4's row is all empty
    write(root / "genetic.csv", "id,g1,g2,g3\np8,0.5,1,2\np2,1.5,-1,0\np4,NA,nan,\np6,2,3,4e-1\np3,1,1,1\n")
    spec = {
        "name": "demo",
        "label": {"file": "labels.csv", "column": "diagnosis"},
        "modalities": [
            {"name": "clinical", "file": "clinical.csv"},
            {"name": "genetic", "file": "genetic.csv", "kind": "tabular"},
        ],
    }
    if npy:
        image = np.arange(3 * 2 * 3, dtype=np.float32).reshape(3, 2, 3)
        image[1] = np.nan  # p5: all NaN -> image missing
        np.save(root / "image.npy", image)
        write(root / "image.npy.ids.txt", "p1\np5\np7\n")
        spec["modalities"].append({"name": "image", "file": "image.npy", "kind": "image"})
    spec.update(spec_extra or {})
    write(root / "dataset.yaml", yaml.safe_dump(spec, sort_keys=False))
    return root


def raises(root: Path, *fragments: str, exc: type[Exception] = DataValidationError) -> str:
    with pytest.raises(exc) as info:
        load_folder(root)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- valid data


def test_folder_loads_features_mask_and_labels(tmp_path):
    ds = load_folder(make_folder(tmp_path / "d"))
    assert ds.name == "demo" and ds.ids == IDS
    assert ds.modality_names == ["clinical", "genetic", "image"]
    assert ds.class_names == ["AD", "CN", "MCI"]
    assert ds.labels.tolist() == [["AD", "CN", "MCI"].index(y) for y in LABELS]
    expected = {
        "clinical": [s in CLINICAL and CLINICAL[s] is not None for s in IDS],
        "genetic": [s in ("p2", "p3", "p6", "p8") for s in IDS],  # p4's row is all empty
        "image": [s in ("p1", "p7") for s in IDS],  # p5's image is all NaN
    }
    for m, name in enumerate(ds.modality_names):
        assert ds.observed[:, m].tolist() == expected[name], name
    assert ds.natural_missingness
    clinical = {s: ds.features["clinical"][i].tolist() for i, s in enumerate(IDS)}
    for s, values in CLINICAL.items():
        if values is not None:
            assert clinical[s] == list(map(float, values))
    assert ds.features["genetic"][IDS.index("p6")].tolist() == pytest.approx([2.0, 3.0, 0.4])
    assert ds.features["genetic"][IDS.index("p8")].tolist() == [0.5, 1.0, 2.0]
    expected_image = np.arange(18, dtype=np.float32).reshape(3, 2, 3)
    assert torch.equal(ds.features["image"][IDS.index("p7")], torch.from_numpy(expected_image[2]))
    specs = {s.name: s for s in ds.modalities}
    assert specs["clinical"].columns == ("age", "mmse") and specs["clinical"].shape == (2,)
    assert specs["genetic"].columns == ("g1", "g2", "g3")
    assert specs["image"].shape == (2, 3) and specs["image"].kind == "image"


def test_folder_is_detected_and_loaded_through_the_registry(tmp_path):
    root = make_folder(tmp_path / "d", npy=False)
    assert detect_format(root) == "folder"
    ds = load_dataset(DataConfig(path=str(root)))
    assert len(ds) == 8 and ds.modality_names == ["clinical", "genetic"]


def test_integer_labels_sort_numerically_and_strings_alphabetically():
    y, names = encode_labels(["10", "2", "1", "2"])
    assert names == ["1", "2", "10"] and y.tolist() == [2, 1, 0, 1]
    y, names = encode_labels(["b", "a", "10"])
    assert names == ["10", "a", "b"] and y.tolist() == [2, 1, 0]
    y, names = encode_labels(["01", "1", "3"])  # the same integer written twice is one class
    assert names == ["1", "3"] and y.tolist() == [0, 0, 1]


def test_label_column_inside_a_modality_file_is_not_a_feature(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    write(root / "clinical.csv", "id,age,label\na,1,0\nb,2,1\nc,3,0\n")
    write(root / "other.csv", "id,x\na,5\n")
    write(
        root / "dataset.yaml",
        yaml.safe_dump(
            {
                "label": {"file": "clinical.csv"},
                "modalities": [
                    {"name": "clinical", "file": "clinical.csv"},
                    {"name": "other", "file": "other.csv"},
                ],
            }
        ),
    )
    ds = load_folder(root)
    assert ds.modalities[0].columns == ("age",)
    assert ds.labels.tolist() == [0, 1, 0] and ds.name == "d"


def test_parquet_modality(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow", reason="parquet needs: pip install pyarrow")
    root = make_folder(tmp_path / "d", npy=False)
    pd.DataFrame({"id": ["p1", "p3", "p5"], "a": [1.0, None, 3.0], "b": [4, None, 6]}).to_parquet(
        root / "lab.parquet", index=False
    )
    spec = yaml.safe_load((root / "dataset.yaml").read_text())
    spec["modalities"].append({"name": "lab", "file": "lab.parquet"})
    write(root / "dataset.yaml", yaml.safe_dump(spec))
    ds = load_folder(root)
    m = ds.modality_names.index("lab")
    assert ds.observed[:, m].tolist() == [s in ("p1", "p5") for s in IDS]
    assert ds.features["lab"][IDS.index("p5")].tolist() == [3.0, 6.0]
    assert ds.modalities[m].columns == ("a", "b")


def test_sequence_npy_lengths_come_from_trailing_nan_padding(tmp_path):
    root = make_folder(tmp_path / "d", npy=False)
    seq = np.ones((3, 4, 2), dtype=np.float32)
    seq[0, 2:] = np.nan  # length 2
    seq[2] = np.nan  # all padding -> missing
    np.save(root / "seq.npy", seq)
    write(root / "seq_ids.txt", "p2\np4\np6\n")
    spec = yaml.safe_load((root / "dataset.yaml").read_text())
    spec["modalities"].append({"name": "seq", "file": "seq.npy", "kind": "sequence", "ids": "seq_ids.txt"})
    write(root / "dataset.yaml", yaml.safe_dump(spec))
    ds = load_folder(root)
    assert ds.lengths["seq"][[IDS.index("p2"), IDS.index("p4"), IDS.index("p6")]].tolist() == [2, 4, 0]
    m = ds.modality_names.index("seq")
    assert ds.observed[IDS.index("p6"), m].item() is False
    assert ds.features["seq"][IDS.index("p2"), 2:].abs().sum() == 0


def test_splits_file_fixes_the_split_used_for_training(tmp_path):
    root = make_folder(tmp_path / "d", {"splits": "splits.json"}, npy=False)
    # every part observes both modalities (clinical: p1-p7 but p3; genetic: p2, p3, p6, p8)
    parts = {"train": ["p1", "p2", "p3", "p4", "p7"], "val": ["p5", "p8"], "test": ["p6"]}
    write(root / "splits.json", json.dumps(parts))
    ds = load_folder(root)
    for key, members in parts.items():
        assert [ds.ids[i] for i in ds.splits[key].tolist()] == members
    cfg = load_config()
    for seed in (0, 1):  # the random stratified split would differ between seeds
        data = prepare_seed(cfg, ds, seed)
        assert data.train.ids == parts["train"] and data.val.ids == parts["val"]
        assert data.test.ids == parts["test"]


# --------------------------------------------------------------------------- bad input

# (file, the text it is overwritten with, fragments the error must hold)
BAD_FILES = {
    "duplicate_id": (
        "clinical.csv",
        "id,age,mmse\np1,1,2\np2,3,4\np1,5,6\n",
        ["clinical.csv: line 4, column 'id': duplicate id 'p1' (first at line 2)"],
    ),
    "duplicate_id_in_label_file": (
        "labels.csv",
        "id,diagnosis\np1,AD\np1,CN\n",
        ["labels.csv: line 3, column 'id': duplicate id 'p1'"],
    ),
    # without its genetic row, p3 (label file line 4) has only an all-empty clinical row
    "label_but_no_modality": (
        "genetic.csv",
        "id,g1,g2,g3\np8,0.5,1,2\n",
        ["labels.csv: line 4, column 'id': id 'p3' has a label but no data in any modality"],
    ),
    "non_numeric_cell": (
        "clinical.csv",
        "id,age,mmse\np1,71,24\np2,sixty,30\n",
        ["clinical.csv: line 3 (id 'p2'), column 'age': 'sixty' is not a finite number"],
    ),
    "infinite_cell": (
        "genetic.csv",
        "id,g1\np2,inf\n",
        ["genetic.csv: line 2 (id 'p2'), column 'g1': 'inf' is not a finite number"],
    ),
    "short_row": (
        "genetic.csv",
        "id,g1,g2\np2,1,2\np4,1\n",
        ["genetic.csv: line 3 has 2 fields but the header (line 1) has 3"],
    ),
    "long_row": (
        "genetic.csv",
        "id,g1,g2\np2,1,2,3\n",
        ["genetic.csv: line 2 has 4 fields but the header (line 1) has 3"],
    ),
    "id_without_a_label": (
        "genetic.csv",
        "id,g1\np2,1\nzz,2\n",
        ["genetic.csv: line 3, column 'id': id 'zz' has no label in", "labels.csv", "labels are missing"],
    ),
    "empty_label_cell": (
        "labels.csv",
        "id,diagnosis\np1,AD\np2, \np4,NA\n",
        ["labels.csv: line 3 (id 'p2'), column 'diagnosis': the label is missing"],
    ),
    "empty_modality_file": ("genetic.csv", "", ["genetic.csv: the file is empty"]),
    "header_only": ("genetic.csv", "id,g1\n", ["genetic.csv: the file has a header but no data rows"]),
    "empty_label_file": ("labels.csv", "\n", ["labels.csv: the file is empty"]),
    "partly_empty_row": (
        "clinical.csv",
        "id,age,mmse\np1,71,\n",
        ["clinical.csv: line 2 (id 'p1'), column 'mmse': the cell is empty"],
    ),
    "no_id_column": ("genetic.csv", "ID,g1\np2,1\n", ["genetic.csv: no id column 'id'"]),
    "no_label_column": ("labels.csv", "id,dx\np1,AD\n", ["labels.csv: no label column 'diagnosis'"]),
    "too_few_npy_ids": (
        "image.npy.ids.txt",
        "p1\np5\n",
        ["image.npy.ids.txt: 2 ids for the 3 rows of", "image.npy"],
    ),
    "duplicate_npy_id": (
        "image.npy.ids.txt",
        "p1\np5\np1\n",
        ["image.npy.ids.txt: line 3: duplicate id 'p1' (first at line 1)"],
    ),
}


@pytest.mark.parametrize("file, text, fragments", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_names_file_line_and_column(tmp_path, file, text, fragments):
    root = make_folder(tmp_path / "d")
    write(root / file, text)
    raises(root, *fragments)


def test_unknown_keys_in_dataset_yaml(tmp_path):
    root = make_folder(tmp_path / "d", {"labels": "x"})
    raises(root, "dataset.yaml: unknown key(s) ['labels']")
    root = make_folder(tmp_path / "e")
    spec = yaml.safe_load((root / "dataset.yaml").read_text())
    spec["modalities"][1]["kinds"] = "tabular"
    write(root / "dataset.yaml", yaml.safe_dump(spec))
    raises(root, "dataset.yaml: modalities[1]: unknown key(s) ['kinds']")
    spec["modalities"][1].pop("kinds")
    spec["label"]["columns"] = "x"
    write(root / "dataset.yaml", yaml.safe_dump(spec))
    raises(root, "dataset.yaml: label: unknown key(s) ['columns']")


@pytest.mark.parametrize(
    "file, fragments",
    [
        ("genetic.csv", ["modalities[1].file", "genetic.csv does not exist"]),
        ("image.npy.ids.txt", ["modalities[2]", "image.npy.ids.txt does not exist"]),
        ("dataset.yaml", ["dataset.yaml: not found"]),
    ],
)
def test_missing_files(tmp_path, file, fragments):
    root = make_folder(tmp_path / "d")
    (root / file).unlink()
    raises(root, *fragments, exc=FileNotFoundError)


def test_parquet_non_numeric_cell(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow", reason="parquet needs: pip install pyarrow")
    root = make_folder(tmp_path / "d", npy=False)
    pd.DataFrame({"id": ["p1", "p3"], "a": ["1.5", "high"]}).to_parquet(root / "lab.parquet", index=False)
    spec = yaml.safe_load((root / "dataset.yaml").read_text())
    spec["modalities"].append({"name": "lab", "file": "lab.parquet"})
    write(root / "dataset.yaml", yaml.safe_dump(spec))
    raises(root, "lab.parquet: row 1 (id 'p3'), column 'a': 'high' is not a finite number")


@pytest.mark.parametrize(
    "image, fragment",
    [
        (
            np.where(np.arange(18).reshape(3, 2, 3) == 16, np.nan, 1.0),
            "image.npy: row 2 (id 'p7'), column '4': the cell is empty",
        ),
        (np.array([{"a": 1}] * 3, dtype=object), "image.npy: not a numeric array"),
    ],
    ids=["nan_among_filled_cells", "object_array"],
)
def test_bad_npy_array(tmp_path, image, fragment):
    root = make_folder(tmp_path / "d")
    np.save(root / "image.npy", image)
    raises(root, fragment)


GOOD_SPLITS = {"train": IDS[:5], "val": IDS[5:7], "test": IDS[7:]}


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"valid": []}, ["splits.json: unknown key(s) ['valid']"]),
        ({"test": ["p8", "p99"]}, ["splits.json: test: id 'p99' has no label"]),
        ({"test": ["p8", "p1"]}, ["splits.json: id 'p1' is in both 'train' and 'test'"]),
        ({"val": ["p6"]}, ["splits.json: 1 labelled sample(s) are in no split", "p7"]),
    ],
    ids=["unknown_key", "unlabelled_id", "id_in_two_splits", "sample_in_no_split"],
)
def test_bad_splits(tmp_path, change, fragments):
    root = make_folder(tmp_path / "d", {"splits": "splits.json"})
    write(root / "splits.json", json.dumps({**GOOD_SPLITS, **change}))
    raises(root, *fragments)


def test_train_command_runs_on_a_folder(tmp_path, capsys):
    """`moe-retriever train --data FOLDER` end to end on a folder with a splits file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    root.mkdir()
    n = 60
    ids = [f"s{i:03d}" for i in range(n)]
    y = np.arange(n) % 2
    write(root / "labels.csv", "id,label\n" + "".join(f"{s},{c}\n" for s, c in zip(ids, y, strict=True)))
    for name, width, keep in (("a", 3, range(0, 52)), ("b", 4, range(20, 60))):
        x = rng.normal(size=(n, width)) + y[:, None]
        write(
            root / f"{name}.csv",
            f"id,{','.join(f'{name}{j}' for j in range(width))}\n"
            + "".join(f"{ids[i]},{','.join(f'{v:.4f}' for v in x[i])}\n" for i in keep),
        )
    parts = {"train": ids[:40], "val": ids[40:50], "test": ids[50:]}
    write(root / "splits.json", json.dumps(parts))
    write(
        root / "dataset.yaml",
        yaml.safe_dump(
            {
                "label": {"file": "labels.csv", "column": "label"},
                "splits": "splits.json",
                "modalities": [{"name": "a", "file": "a.csv"}, {"name": "b", "file": "b.csv"}],
            }
        ),
    )
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(root),
            "--out",
            str(out),
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--no-progress",
            "--set",
            "train.warmup_epochs=0",
            "--set",
            "model.hidden=16",
            "--set",
            "model.encoder.hidden=16",
            "--set",
            "model.retriever.moe.expert_hidden=16",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "seed_0" / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (40, 10, 10)
    combos = json.loads((out / "combinations.json").read_text())["combinations"]
    assert combos == {"AB": 32, "A": 20, "B": 8}  # a: s000-s051, b: s020-s059
