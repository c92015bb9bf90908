"""Regression and survival labels: how a dataset holds them, the folder format's task and label
columns, bad labels named by row and id, stratified splits, the config's task and the run keys
of classification runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from moe_retriever.config import load_config
from moe_retriever.data.dataset import DataValidationError, ModalitySpec, MultimodalDataset
from moe_retriever.data.labels import strata, survival_labels
from moe_retriever.data.partitions import Partition, partition_split, prepare_seed
from moe_retriever.data.sources.folder import load_folder
from moe_retriever.data.splits import stratified_split
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.errors import ConfigError
from moe_retriever.task_config import resolve_task, run_key_config, select_metric_for

SPEC = [ModalitySpec("a", (2,)), ModalitySpec("b", (1,))]


def dataset(labels, task, n=None, **kw) -> MultimodalDataset:
    n = len(labels) if n is None else n
    return MultimodalDataset(
        SPEC,
        {"a": torch.randn(n, 2), "b": torch.randn(n, 1)},
        torch.ones(n, 2, dtype=torch.bool),
        labels,
        ids=[f"p{i}" for i in range(n)],
        task=task,
        **kw,
    )


def test_regression_labels_keep_their_values_and_survive_derived_copies():
    y = torch.tensor([1.5, -2.25, 3.0, 0.125])
    ds = dataset(y, "regression")
    assert ds.task == "regression" and ds.labels.dtype == torch.float64
    assert ds.target.tolist() == [1.5, -2.25, 3.0, 0.125]
    assert ds.n_classes == 0 and ds.n_outputs == 1 and ds.class_names == []
    sub = ds.subset([2, 0])
    assert sub.task == "regression" and sub.target.tolist() == [3.0, 1.5]
    assert ds.with_observed(ds.observed).task == "regression"
    assert ds.map_features(lambda s, x: x).task == "regression"
    with pytest.raises(AttributeError, match="survival"):
        _ = ds.time


def test_survival_labels_hold_time_and_event():
    ds = dataset(survival_labels([3.0, 1.0, 0.0, 7.5], [1, 0, 1, 0]), "survival")
    assert ds.labels.shape == (4, 2)
    assert ds.time.tolist() == [3.0, 1.0, 0.0, 7.5]
    assert ds.event.tolist() == [True, False, True, False]
    assert ds.subset([1]).task == "survival" and ds.n_outputs == 1
    assert "2 events" in ds.describe()


@pytest.mark.parametrize(
    ("labels", "task", "message"),
    [
        (survival_labels([1.0, -2.0, 3.0], [1, 1, 0]), "survival", "sample 'p1' has survival time -2.0"),
        (
            survival_labels([1.0, float("nan"), 3.0], [1, 1, 0]),
            "survival",
            "sample 'p1' has survival time nan",
        ),
        (survival_labels([1.0, 2.0, 3.0], [1, 2, 0]), "survival", "sample 'p1' has event 2.0"),
        (survival_labels([1.0, 2.0, 3.0], [0, 0, 0]), "survival", "all 3 samples are censored"),
        (torch.tensor([1.0, float("nan"), 2.0]), "regression", "sample 'p1' has regression target nan"),
        (torch.tensor([2.0, 2.0, 2.0]), "regression", "regression target is 2.0 for every sample"),
        (torch.tensor([1.0, 2.0, 3.0]), "survival", "survival labels must have shape"),
    ],
)
def test_bad_labels_name_the_sample(labels, task, message):
    with pytest.raises(DataValidationError, match=message.replace("(", r"\(")):
        dataset(labels, task)


def test_a_split_may_be_constant_or_all_censored():
    # only loaded data must be learnable; a test split of three may hold no event
    ds = dataset(survival_labels([1.0, 2.0, 3.0, 4.0], [1, 0, 0, 0]), "survival")
    assert not ds.subset([1, 2]).event.any()
    reg = dataset(torch.tensor([1.0, 1.0, 2.0]), "regression")
    assert reg.subset([0, 1]).target.tolist() == [1.0, 1.0]


def test_regression_strata_are_quantile_bins_and_survival_strata_events_by_follow_up():
    y = torch.arange(100, dtype=torch.float64)
    bins = strata("regression", y)
    assert torch.bincount(bins).tolist() == [20, 20, 20, 20, 20]
    assert bool((bins[1:] >= bins[:-1]).all())
    lab = survival_labels([1.0, 2.0, 3.0, 4.0], [1, 0, 0, 1])
    assert strata("survival", lab).tolist() == [2, 0, 1, 3]
    # classification: the classes themselves, so classification splits are unchanged
    c = torch.tensor([2, 0, 1, 1])
    assert torch.equal(strata("classification", c), c)


def test_splits_balance_events_and_are_deterministic():
    ds = make_synthetic(n_samples=400, task="survival", censoring=0.5, seed=3)
    a = stratified_split(ds.strata, [0.7, 0.15, 0.15], seed=1)
    b = stratified_split(ds.strata, [0.7, 0.15, 0.15], seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    rate = float(ds.event.double().mean())
    for part in a:
        assert abs(float(ds.event[part].double().mean()) - rate) < 0.05
    cfg = load_config(None, ["protocol.kind=cv", "protocol.folds=4", "protocol.repeats=1", "train.seeds=[0]"])
    _, parts = partition_split(cfg, ds, Partition(0, 1, 0))
    assert abs(float(ds.event[parts["test"]].double().mean()) - rate) < 0.05


def test_synthetic_variants_declare_their_task():
    reg = make_synthetic(n_samples=120, task="regression")
    assert reg.task == "regression" and reg.labels.std() > 0.5
    surv = make_synthetic(n_samples=300, task="survival", censoring=0.3)
    assert surv.task == "survival" and 0.15 < 1 - float(surv.event.double().mean()) < 0.45
    with pytest.raises(ConfigError, match="data.options.task"):
        make_synthetic(task="ranking")


def write_folder(root: Path, spec_label: dict, labels_csv: str, task: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(labels_csv)
    (root / "x.csv").write_text("id,f1,f2\np1,1,2\np2,3,4\np3,5,6\np4,7,9\n")
    spec: dict = {"name": "demo", "label": {"file": "labels.csv", **spec_label}}
    if task is not None:
        spec["task"] = task
    spec["modalities"] = [{"name": "x", "file": "x.csv"}]
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root


def test_folder_survival_and_regression_labels(tmp_path):
    surv = write_folder(
        tmp_path / "s",
        {"time": "months", "event": "died"},
        "id,months,died\np1,3.5,1\np2,10,0\np3,2,true\np4,8,False\n",
        "survival",
    )
    ds = load_folder(surv)
    assert ds.task == "survival"
    assert ds.time.tolist() == [3.5, 10.0, 2.0, 8.0] and ds.event.tolist() == [True, False, True, False]
    reg = write_folder(
        tmp_path / "r", {"column": "mmse"}, "id,mmse\np1,24\np2,30\np3,18.5\np4,27\n", "regression"
    )
    assert load_folder(reg).target.tolist() == [24.0, 30.0, 18.5, 27.0]
    # without task the folder is a classification data set, as before
    cls = write_folder(tmp_path / "c", {"column": "mmse"}, "id,mmse\np1,24\np2,30\np3,18\np4,27\n", None)
    assert load_folder(cls).task == "classification"


@pytest.mark.parametrize(
    ("label", "csv", "task", "message"),
    [
        (
            {"column": "y"},
            "id,y\np1,1\np2,high\np3,2\np4,3\n",
            "regression",
            r"labels.csv: line 3 \(id 'p2'\), column 'y': 'high' is not a finite number",
        ),
        (
            {"column": "y"},
            "id,y\np1,1\np2,\np3,2\np4,3\n",
            "regression",
            r"line 3 \(id 'p2'\), column 'y': the label is missing",
        ),
        (
            {"column": "y"},
            "id,y\np1,5\np2,5\np3,5\np4,5\n",
            "regression",
            "regression target is 5.0 for every sample",
        ),
        (
            {},
            "id,time,event\np1,1,1\np2,-4,0\np3,2,1\np4,3,0\n",
            "survival",
            r"line 3 \(id 'p2'\), column 'time': time -4 is negative",
        ),
        (
            {},
            "id,time,event\np1,1,1\np2,4,0\np3,2,yes\np4,3,0\n",
            "survival",
            r"line 4 \(id 'p3'\), column 'event': event 'yes' is not 0",
        ),
        ({}, "id,time,event\np1,1,0\np2,4,0\np3,2,0\np4,3,0\n", "survival", "all 4 samples are censored"),
        (
            {"column": "y"},
            "id,time,event\np1,1,1\n",
            "survival",
            r"unknown key\(s\) \['column'\] for task survival",
        ),
        (
            {"time": "t"},
            "id,t,event\np1,1,1\n",
            "regression",
            r"unknown key\(s\) \['time'\] for task regression",
        ),
    ],
)
def test_folder_bad_labels_name_row_id_and_column(tmp_path, label, csv, task, message):
    root = write_folder(tmp_path / "d", label, csv, task)
    with pytest.raises(DataValidationError, match=message):
        load_folder(root)


def test_folder_task_must_be_known(tmp_path):
    root = write_folder(tmp_path / "d", {"column": "y"}, "id,y\np1,1\np2,2\np3,1\np4,2\n", "ranking")
    with pytest.raises(DataValidationError, match="dataset.yaml: task: task 'ranking' is not one of"):
        load_folder(root)


def test_config_task_resolves_against_the_data_and_names_the_key():
    logs: list[str] = []
    cfg = resolve_task(load_config(None), "regression", logs.append)
    assert cfg.data.task == "regression" and cfg.train.select_metric == "rmse"
    assert logs == [
        "data.task: regression (declared by the data set)",
        "train.select_metric: rmse (the default for regression)",
    ]
    with pytest.raises(
        ConfigError,
        match="data.task: the config says survival, but the data set 'synthetic' declares regression",
    ):
        resolve_task(load_config(None, ["data.task=survival"]), "regression", None)
    with pytest.raises(ConfigError, match="train.select_metric: 'macro_f1' is not a regression metric"):
        resolve_task(load_config(None, ["train.select_metric=macro_f1"]), "regression", None)
    with pytest.raises(ConfigError, match="train.select_metric: 'rmse' is not a survival metric"):
        load_config(None, ["data.task=survival", "train.select_metric=rmse"])
    with pytest.raises(ConfigError, match="data.task: must be one of"):
        load_config(None, ["data.task=ranking"])
    with pytest.raises(ConfigError, match="train.huber_delta"):
        load_config(None, ["train.huber_delta=0"])
    with pytest.raises(ConfigError, match="train.class_weights: weights classes, which survival data"):
        resolve_task(load_config(None, ["train.class_weights=true"]), "survival", None)
    assert select_metric_for("auto", "survival") == "c_harrell"
    assert select_metric_for("auroc", "classification") == "auroc"


def test_classification_keys_ignore_the_task_fields():
    base = run_key_config(load_config("configs/synthetic.yaml"))
    assert "task" not in base["data"] and base["train"]["select_metric"] == "macro_f1"
    assert "regression_loss" not in base["train"] and "cox_ties" not in base["train"]
    explicit = load_config(
        "configs/synthetic.yaml", ["data.task=classification", "train.select_metric=macro_f1"]
    )
    assert run_key_config(explicit) == base
    reg = run_key_config(
        load_config("configs/synthetic.yaml", ["data.task=regression", "train.regression_loss=huber"])
    )
    assert reg["data"]["task"] == "regression" and reg["train"]["regression_loss"] == "huber"
    assert "cox_ties" not in reg["train"]


def test_regression_seed_split_standardises_features_and_keeps_targets():
    ds = make_synthetic(n_samples=200, task="regression")
    cfg = load_config(None, ["data.missing.kind=drop"])
    data = prepare_seed(cfg, ds, 0)
    assert data.train.task == data.test.task == "regression"
    pos = [ds.ids.index(i) for i in data.test.ids]
    assert np.array_equal(data.test.target.numpy(), ds.target.numpy()[pos])


def test_survival_only_methods_are_listed_and_keyed_but_not_classification_methods():
    from moe_retriever.methods import METHODS, method_names, method_tasks
    from moe_retriever.training.comparison import run_key

    assert "cox_ph" in method_names() and "cox_ph" not in METHODS
    assert method_tasks("cox_ph") == ("survival",)
    assert method_tasks("hist_gbt") == ("classification", "regression")
    assert method_tasks("majority") == ("classification", "regression", "survival")
    assert len(run_key(load_config(None, ["method=cox_ph", "data.task=survival"]))) == 12
