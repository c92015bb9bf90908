"""Categorical columns: which columns are categorical, levels fitted on the training split only,
unseen levels counted as <unknown> at test and predict time, and the limits on levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_MODEL
from moe_retriever.config import load_config
from moe_retriever.data.partitions import split_data
from moe_retriever.data.preprocessing import OTHER_LEVEL, UNKNOWN_LEVEL, encode_categories, fit_categories
from moe_retriever.data.sources.folder import load_folder
from moe_retriever.errors import DataValidationError


def write_shop(root, colours, sizes=None, n_extra=0):
    """labels + a product modality (colour: words; size: numbers; price) + a numeric one."""
    n = len(colours)
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"p{i:03d}" for i in range(n)]
    rng = np.random.default_rng(0)
    sizes = sizes if sizes is not None else [int(s) for s in rng.integers(1, 4, n)]
    pd.DataFrame({"id": ids, "label": [i % 2 for i in range(n)]}).to_csv(root / "labels.csv", index=False)
    pd.DataFrame(
        {"id": ids, "colour": colours, "size": sizes, "price": rng.normal(10, 2, n).round(2)}
    ).to_csv(root / "product.csv", index=False)
    pd.DataFrame({"id": ids, "x": rng.normal(size=n).round(3)}).to_csv(root / "other.csv", index=False)
    (root / "dataset.yaml").write_text(
        "label: {file: labels.csv}\nmodalities:\n"
        "  - {name: product, file: product.csv, categorical: [size], max_levels: 2}\n"
        "  - {name: other, file: other.csv}\n"
    )
    return root


def test_text_columns_are_categorical_and_a_declared_numeric_column_too(tmp_path):
    colours = ["red", "blue", "red", "red", "green", "red"] * 2
    ds = load_folder(write_shop(tmp_path / "d", colours))
    spec = ds.modalities[0]
    assert [c.name for c in spec.categorical] == ["colour", "size"]
    colour, size = spec.categorical
    assert colour.levels == ("blue", "green", "red")
    # cells hold the position of their level
    expected = [["blue", "green", "red"].index(c) for c in colours]
    assert ds.features["product"][:, 0].tolist() == expected
    assert ds.features["product"][:, 1].tolist() == [
        size.levels.index(str(s)) for s in pd.read_csv(tmp_path / "d" / "product.csv")["size"]
    ]
    assert ds.modalities[1].categorical == ()


def test_a_partly_empty_row_with_a_categorical_gap_is_an_error_naming_the_cell(tmp_path):
    root = write_shop(tmp_path / "d", ["red", "blue", "", "red"])
    with pytest.raises(
        DataValidationError, match=r"product\.csv: line 4 \(id 'p002'\), column 'colour': the cell is empty"
    ):
        load_folder(root)


def test_a_column_mixing_numbers_and_words_is_an_error_not_a_category(tmp_path):
    root = write_shop(tmp_path / "d", ["red", "blue", "red", "blue"])
    frame = pd.read_csv(root / "product.csv")
    frame["price"] = frame["price"].astype(object)
    frame.loc[2, "price"] = "ten"
    frame.to_csv(root / "product.csv", index=False)
    with pytest.raises(
        DataValidationError, match=r"line 4 \(id 'p002'\), column 'price': 'ten' is not a finite number"
    ):
        load_folder(root)


def test_levels_come_from_the_training_split_and_unseen_ones_are_counted_unknown(tmp_path):
    # training rows 0-7; "violet" only in the test rows, "green" once in training (rare)
    colours = ["red", "red", "blue", "blue", "red", "green", "blue", "red", "violet", "violet", "red", "blue"]
    sizes = [1, 1, 2, 2, 1, 2, 3, 1, 5, 1, 2, 2]
    ds = load_folder(write_shop(tmp_path / "d", colours, sizes))
    fitted = fit_categories(ds.subset(range(8)))["product"]
    colour, size = fitted.categorical
    # the reference, counted by hand on rows 0-7: red 4, blue 3, green 1 (< 2: pooled)
    assert colour.levels == ("blue", "red") and colour.pooled == ("green",)
    # sizes 1 (x4), 2 (x3), 3 (x1); max_levels 2 keeps the two most frequent
    assert size.levels == ("1", "2") and size.pooled == ("3",)
    assert fitted.columns == (
        "colour=blue",
        "colour=red",
        f"colour={OTHER_LEVEL}",
        f"colour={UNKNOWN_LEVEL}",
        "size=1",
        "size=2",
        f"size={OTHER_LEVEL}",
        f"size={UNKNOWN_LEVEL}",
        "price",
    )
    # the test rows' levels change nothing: the same fit without them
    assert fit_categories(ds.subset(range(8))) == fit_categories(ds.subset(range(8)).subset(range(8)))
    encoded, unknown = encode_categories(ds, {"product": fitted})
    x = encoded.features["product"]
    assert unknown == {"product.colour": 2, "product.size": 1}
    assert x[8, 3] == 1 and x[8, :3].sum() == 0  # violet -> <unknown>
    assert x[5, 2] == 1  # green -> <other>
    assert x[8, 7] == 1  # size 5 -> <unknown>
    assert x[6, 6] == 1  # size 3 -> <other>
    assert x[0].tolist()[:2] == [0, 1]  # red


def test_split_data_fits_the_levels_on_the_training_split_only(tmp_path):
    colours = ["red", "blue"] * 10 + ["violet"] * 4
    ds = load_folder(write_shop(tmp_path / "d", colours))
    cfg = load_config(None, [f"data.path={tmp_path / 'd'}"])
    data = split_data(cfg, ds, list(range(16)), list(range(16, 20)), list(range(20, 24)))
    columns = data.train.modalities[0].columns
    assert "colour=violet" not in columns and f"colour={UNKNOWN_LEVEL}" in columns
    assert data.test.modalities[0] == data.train.modalities[0]
    # the four violet test samples are counted
    assert data.unknown_levels == {"test": {"product.colour": 4}}


def test_a_category_unseen_in_training_is_counted_at_predict(tmp_path, capsys):
    from moe_retriever.cli import main

    rng = np.random.default_rng(1)
    colours = list(rng.choice(["red", "blue"], 90))
    root = write_shop(tmp_path / "d", colours)
    cfg = [
        *[f"--set={o}" for o in TINY_MODEL],
        "--set=train.epochs=2",
        "--set=train.warmup_epochs=1",
        "--set=train.seeds=[0]",
        "--set=train.progress=false",
    ]
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *cfg]) == 0
    new = tmp_path / "new"
    new.mkdir()
    pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "colour": ["red", "violet", "violet"],
            "size": [1, 2, 3],
            "price": [9, 10, 11],
        }
    ).to_csv(new / "product.csv", index=False)
    (new / "dataset.yaml").write_text(
        "modalities:\n  - {name: product, file: product.csv, categorical: [size], max_levels: 2}\n"
    )
    capsys.readouterr()
    assert (
        main(
            ["predict", "--run", str(tmp_path / "run"), "--data", str(new), "--out", str(tmp_path / "p.csv")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "product.colour 2 sample(s)" in out
    assert len(pd.read_csv(tmp_path / "p.csv")) == 3
    # the analyses' "all" split encodes the categories as training did
    from moe_retriever.analysis.report import analysed_samples
    from moe_retriever.api.trained_run import load_run

    run = load_run(tmp_path / "run")
    samples = analysed_samples(run, load_folder(root), "all")
    assert samples.modalities[0].columns == run.modalities[0].columns
    assert len(samples) == 90


def test_a_categorical_column_with_a_million_levels_is_a_clear_error(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    n = 1_000_000
    pd.DataFrame(
        {"id": np.arange(n), "label": np.arange(n) % 2, "code": [f"c{i}" for i in range(n)]}
    ).to_parquet(root / "data.parquet", index=False)
    (root / "dataset.yaml").write_text(
        "label: {file: data.parquet}\nmodalities:\n  - {name: codes, file: data.parquet}\n"
    )
    with pytest.raises(
        DataValidationError,
        match=r"data\.parquet, column 'code': 1,000,000 distinct values, more than the 100,000 a "
        r"categorical column may have",
    ):
        load_folder(root)


def test_a_declared_categorical_column_must_exist(tmp_path):
    root = write_shop(tmp_path / "d", ["red", "blue"])
    (root / "dataset.yaml").write_text(
        (root / "dataset.yaml").read_text().replace("categorical: [size]", "categorical: [sizes]")
    )
    with pytest.raises(
        DataValidationError,
        match=r"modalities\[0\]\.categorical: .*product\.csv has no feature column 'sizes'",
    ):
        load_folder(root)


def test_the_estimator_takes_category_and_object_columns_and_counts_unseen_levels():
    from moe_retriever.sklearn import MoERetrieverClassifier

    rng = np.random.default_rng(0)
    n = 160
    y = np.arange(n) % 2
    X = pd.DataFrame(
        {
            "a_x": rng.normal(size=n),
            "b_shop": pd.Categorical(np.where(y == 1, "north", "south")),
            "b_kind": np.where(rng.random(n) < 0.5, "u", "v").astype(object),
        }
    )
    est = MoERetrieverClassifier(modalities={"a": "a_", "b": "b_"}, epochs=3, random_state=0).fit(X, y)
    assert [c.name for c in est.bank_.modalities[1].categorical] == ["b_shop", "b_kind"]
    new = X.iloc[:4].copy()
    new["b_kind"] = ["u", "w", "w", "v"]
    unseen = r"levels training never saw, encoded as <unknown>: b\.b_kind 2 row\(s\)$"
    with pytest.warns(UserWarning, match=unseen):
        est.predict(new)
    # the shop decides the class
    assert (est.predict(X) == y).mean() > 0.9


def test_unobserved_rows_encode_to_zeros(tmp_path):
    ds = load_folder(write_shop(tmp_path / "d", ["red", "blue"] * 4))
    hidden = ds.observed.clone()
    hidden[0, 0] = False
    ds = ds.with_observed(hidden)
    encoded, _ = encode_categories(ds, fit_categories(ds))
    assert torch.count_nonzero(encoded.features["product"][0]) == 0
