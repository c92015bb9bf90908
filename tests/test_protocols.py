"""Evaluation protocols: repeated stratified cross-validation next to the holdout split."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from _tiny_run import TINY, write_folder
from moe_retriever.api import best_fold, load_run
from moe_retriever.cli import main
from moe_retriever.config import ConfigError, load_config
from moe_retriever.data.missingness import apply_missingness
from moe_retriever.data.partitions import Partition, prepare_partition, protocol_partitions
from moe_retriever.data.sources import load_dataset
from moe_retriever.data.splits import stratified_folds
from moe_retriever.training.experiment import evaluate_run
from moe_retriever.training.fitting import train_seed
from moe_retriever.training.metrics import classification_metrics

CV = ["protocol={kind: cv, folds: 3, repeats: 2}", "train.seeds=[4, 7]"]


def _cfg(*extra):
    return load_config(None, TINY + list(extra))


def test_cv_folds_partition_every_repeat_and_share_its_mask():
    cfg = _cfg(*CV)
    dataset = load_dataset(cfg.data)
    parts = protocol_partitions(cfg)
    assert [(p.seed, p.repeat, p.fold) for p in parts] == [
        (s, r, k) for r, s in enumerate([4, 7]) for k in range(3)
    ]
    all_ids = sorted(dataset.ids)
    for seed in (4, 7):
        masked = apply_missingness(dataset, cfg.data.missing, seed)
        mask_of = dict(zip(masked.ids, masked.observed.tolist(), strict=True))
        tested = []
        for p in (p for p in parts if p.seed == seed):
            data = prepare_partition(cfg, dataset, p)
            train, val, test = set(data.train.ids), set(data.val.ids), set(data.test.ids)
            assert not (train & val or train & test or val & test)
            assert sorted(train | val | test) == all_ids
            # validation is about 15/85 of the fold's training part, stratified
            assert abs(len(val) / (len(train) + len(val)) - 0.15 / 0.85) < 0.02
            assert set(data.val.labels.tolist()) == set(dataset.labels.tolist())
            for split in (data.train, data.val, data.test):  # the repeat's mask, every fold
                assert [mask_of[i] for i in split.ids] == split.observed.tolist()
            tested += data.test.ids
        assert sorted(tested) == all_ids  # each sample tested exactly once per repeat
    # the two repeats assign folds differently
    a = stratified_folds(dataset.labels, 3, 4)
    b = stratified_folds(dataset.labels, 3, 7)
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_cv_folds_take_the_shifted_mask_on_their_validation_and_test_rows():
    from moe_retriever.data.missingness import simulated_mask

    cfg = _cfg(*CV, "data.missing_test={kind: label, p: 0.6}")
    dataset = load_dataset(cfg.data)
    position = {i: k for k, i in enumerate(dataset.ids)}
    for p in protocol_partitions(cfg)[:3]:
        train_mask = simulated_mask(dataset, cfg.data.missing, p.seed)
        shifted = simulated_mask(dataset, cfg.data.missing_test, p.seed)
        data = prepare_partition(cfg, dataset, p)
        rows = {
            name: [position[i] for i in split.ids]
            for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
        }
        assert torch.equal(data.train.observed, train_mask[rows["train"]])
        assert torch.equal(data.val.observed, shifted[rows["val"]])
        assert torch.equal(data.test.observed, shifted[rows["test"]])


def test_every_method_sees_the_same_folds_and_masks():
    cfg_a = _cfg(*CV, "method=majority")
    cfg_b = _cfg(*CV, "method=mean", "train.epochs=1", "train.warmup_epochs=0")
    dataset = load_dataset(cfg_a.data)
    part = Partition(7, 2, 1)
    a = train_seed(cfg_a, dataset, 0, None, torch.device("cpu"), partition=part)
    b = train_seed(cfg_b, dataset, 0, None, torch.device("cpu"), partition=part)
    for key in ("ids", "label", "code"):
        assert a["test_predictions"][key] == b["test_predictions"][key]
    assert a["partition"] == {"seed": 7, "fold": 2, "repeat": 1}
    assert (a["n_train"], a["n_val"], a["n_test"]) == (b["n_train"], b["n_val"], b["n_test"])


def test_protocol_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="protocol.repeats"):
        _cfg("protocol={kind: cv, folds: 3, repeats: 4}", "train.seeds=[0, 1]")
    with pytest.raises(ConfigError, match="protocol.folds"):
        _cfg("protocol={kind: cv, folds: 1, repeats: 1}")
    with pytest.raises(ConfigError, match="protocol.kind"):
        _cfg("protocol.kind=kfold")


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "run"
    sets = [x for o in TINY for x in ("--set", o)]
    assert (
        main(
            [
                "train",
                *sets,
                "--protocol",
                "cv",
                "--folds",
                "2",
                "--repeats",
                "1",
                "--seeds",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_cv_run_writes_folds_with_intervals_and_evaluates(cv_run):
    assert sorted(p.name for p in cv_run.glob("fold_*")) == ["fold_s3_k0", "fold_s3_k1"]
    results = json.loads((cv_run / "results.json").read_text())
    assert results["protocol"] == {"kind": "cv", "folds": 2, "repeats": 1}
    assert results["partitions"] == ["fold_s3_k0", "fold_s3_k1"] and results["seeds"] == [3]
    for metric in results["test"].values():
        assert len(metric["per_fold"]) == 2 and "per_seed" not in metric
        ci = metric["ci95"]
        assert ci["method"] == "nadeau-bengio corrected t" and ci["lo"] <= metric["mean"] <= ci["hi"]
    assert " [" in (cv_run / "results.md").read_text()
    evaluated = evaluate_run(cv_run, "cpu", log=lambda _: None)
    assert evaluated["partitions"] == ["fold_s3_k0", "fold_s3_k1"]
    for key, metric in results["test"].items():
        got = evaluated["test"][key]["per_seed"]
        assert np.allclose(got, metric["per_fold"], atol=1e-9, equal_nan=True), key


def test_cv_predict_uses_the_best_validation_fold(cv_run, tmp_path):
    seed, fold = best_fold(cv_run)
    scores = {
        k: json.loads((cv_run / f"fold_s3_k{k}" / "metrics.json").read_text())["val"]["macro_f1"]
        for k in (0, 1)
    }
    assert scores[fold] == max(scores.values())
    trained = load_run(cv_run, device="cpu")
    assert trained.partition == Partition(3, fold, 0)
    # that fold's raw test samples, predicted through the CLI, give its evaluated metrics
    cfg = load_config(cv_run / "config.yaml")
    ds = apply_missingness(load_dataset(cfg.data), cfg.data.missing, seed)
    raw = ds.subset(stratified_folds(ds.labels, 2, seed)[fold])
    folder = write_folder(raw, tmp_path / "new")
    out = tmp_path / "p.csv"
    assert (
        main(["predict", "--run", str(cv_run), "--data", str(folder), "--out", str(out), "--device", "cpu"])
        == 0
    )
    table = pd.read_csv(out, dtype={"id": str})
    probs = table[["prob_class_0", "prob_class_1"]].to_numpy()
    ours = classification_metrics(probs, raw.labels.numpy(), 2)
    record = json.loads((cv_run / f"fold_s3_k{fold}" / "metrics.json").read_text())["test"]
    for key, value in ours.items():
        assert math.isclose(value, record[key], abs_tol=1e-9), key


def test_cv_run_resumes_only_the_unfinished_fold(cv_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cv_run, run)
    before = json.loads((run / "results.json").read_text())
    (run / "fold_s3_k1" / "metrics.json").unlink()
    (run / "results.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    log = capsys.readouterr().out
    assert "repeat 0 (seed 3) fold 0: finished earlier" in log
    assert "repeat 0 (seed 3) fold 1: best epoch" in log
    after = json.loads((run / "results.json").read_text())
    assert after["test"]["macro_f1"]["per_fold"] == pytest.approx(before["test"]["macro_f1"]["per_fold"])
