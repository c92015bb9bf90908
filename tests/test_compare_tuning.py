"""`compare` with nested tuning: a search per (method, outer partition) on that partition's
train / validation splits only, stored and reused like any run, reported in the tables."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from _tiny_run import TINY
from moe_retriever import tuning as tuning_module
from moe_retriever.config import ConfigError, load_config
from moe_retriever.data.partitions import partition_split, protocol_partitions
from moe_retriever.data.sources import load_dataset
from moe_retriever.training.comparison import (
    Comparison,
    entry_config,
    entry_space,
    load_compare_config,
    run_comparison,
    run_key,
    tuned_run_key,
)
from moe_retriever.training.comparison import cells as comparison_cells
from moe_retriever.training.fitting import train_seed
from moe_retriever.training.trainer import Trainer
from moe_retriever.tuning import search_space, tune_partition

CPU = torch.device("cpu")
TUNED = ["modality_dropout", "mean"]
METHODS = ["majority", *TUNED]
# a small space: two values of the learning rate and width, the method's own knob stays in
SPACE = {
    "modality_dropout": {
        "model.hidden": {"type": "categorical", "choices": [8, 16]},
        "model.dropout": None,
        "train.weight_decay": None,
    },
    "mean": {
        "model.hidden": {"type": "categorical", "choices": [8, 16]},
        "model.dropout": None,
        "train.weight_decay": None,
    },
}


def _config(root) -> dict:
    overrides = [o for o in TINY if not o.startswith("data.options")] + [
        "data.options={n_samples: 120, n_modalities: 3, widths: [6, 5, 4], n_classes: 2, "
        "latent_dim: 4, class_separation: 1.5}",
        "train.epochs=2",
    ]
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    dataset = {"config": "configs/synthetic.yaml", "label": "tiny"}
    return {
        "name": "tiny tuned",
        "seeds": [0],
        "overrides": overrides,
        "protocol": {"kind": "cv", "folds": 3, "repeats": 1},
        "tuning": {"trials": 2, "space": str(root / "space.yaml")},
        "studies": [
            {"title": "Shared settings", "datasets": [dataset], "methods": METHODS, "tuning": {"trials": 0}},
            {"title": "Tuned", "datasets": [dataset], "methods": METHODS},
        ],
    }


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuned")
    config = root / "cmp.yaml"
    config.write_text(json.dumps(_config(root)))
    out = root / "out"
    results = run_comparison(config, out, "cpu", log=lambda *a: None)
    return config, out, results


def _rows(results, study: int) -> dict[str, dict]:
    return {r["entry"]: r for r in results["studies"][study]["tables"][0]["rows"]}


def test_every_partition_of_a_tuned_method_holds_its_search(compared):
    config, out, results = compared
    cmp = load_compare_config(config)
    tuned = _rows(results, 1)
    shared = _rows(results, 0)
    for method in TUNED:
        row = tuned[method]
        cfg = Comparison(cmp, out, "cpu").with_protocol(
            entry_config(cmp, cmp.studies[1].datasets[0], method), cmp.studies[1].datasets[0]
        )
        space, why = entry_space(cmp.studies[1].tuning or cmp.tuning, method, cfg)
        assert why is None and space is not None
        # the space file's entries replace and remove defaults; the method's own knobs stay
        assert set(space) == set(search_space(method, cfg, SPACE[method]))
        assert row["config_key"] == tuned_run_key(cfg, cmp.tuning, space)
        assert row["config_key"] != run_key(cfg) == shared[method]["config_key"]
        parts = [p.name for p in protocol_partitions(cfg)]
        assert row["partitions"] == parts
        for name in parts:
            record = json.loads((out / "runs" / row["config_key"] / f"{name}.json").read_text())
            # equal budget: exactly two trials in every partition of every tuned method
            assert record["n_trials"] == 2 == len(record["tuning"]["trials"])
            assert set(record["tuned_params"]) == set(space)
            # the stored config is the chosen one, and the objective is its validation score
            for key, value in record["tuned_params"].items():
                node = record["config"]
                for part in key.split("."):
                    node = node[part]
                assert node == value
            best = record["tuning"]["trials"][record["tuning"]["best_trial"]]
            assert best["value"] == record["tuning"]["best_val"] == record["val"]["macro_f1"]
            assert best["value"] == max(
                t["value"] for t in record["tuning"]["trials"] if t["value"] is not None
            )
        chosen = row["tuning"]["chosen"]
        assert set(chosen) == set(space) and all(c["of"] == len(parts) for c in chosen.values())
        assert row["tuning"]["n_trials"] == [2]
    # majority has nothing to tune: one run, the same as under shared settings, and said so
    assert tuned["majority"]["config_key"] == shared["majority"]["config_key"]
    assert tuned["majority"]["tuning"] == {"untuned": "fitted directly, one run"}
    text = (out / "results.md").read_text()
    assert "**Tuned**" in text and "Optuna study of 2 trials" in text
    assert "Not tuned (no search space or fitted directly; one run): majority." in text
    assert text.count("**Tuned**") == 1  # the shared-settings table says nothing of tuning
    assert "- modality_dropout: `train.lr` median " in text and "`model.hidden` = " in text


def test_a_rerun_reuses_every_tuned_cell(compared, monkeypatch):
    config, out, results = compared

    def no_training(*args, **kwargs):
        raise AssertionError("a stored cell was trained again")

    monkeypatch.setattr(tuning_module, "fit_model", no_training)
    monkeypatch.setattr(comparison_cells, "train_seed", no_training)
    again = run_comparison(config, out, "cpu", log=lambda *a: None)
    assert again["errors"] == []
    for study in (0, 1):
        for entry, row in _rows(again, study).items():
            assert row["test"] == _rows(results, study)[entry]["test"]


def test_trials_score_the_validation_split_only_and_the_best_model_is_tested_once(monkeypatch):
    overrides = [
        *TINY,
        "method=modality_dropout",
        "train.seeds=[0]",
        "protocol={kind: cv, folds: 3, repeats: 1}",
        "train.epochs=2",
    ]
    cfg = load_config("configs/synthetic.yaml", overrides)
    dataset = load_dataset(cfg.data)
    part = protocol_partitions(cfg)[1]
    _, idx = partition_split(cfg, dataset, part)
    ids = {k: {dataset.ids[i] for i in v.tolist()} for k, v in idx.items()}
    assert not ids["val"] & ids["test"]
    seen: list[set[str]] = []
    predict = Trainer.predict_proba

    def recording(self, data, retrieve=True):
        seen.append(set(data.ids))
        return predict(self, data, retrieve)

    monkeypatch.setattr(Trainer, "predict_proba", recording)
    space = {"model.hidden": {"type": "categorical", "choices": [8, 16]}}
    record = tune_partition(cfg, dataset, part, space, 3, CPU)
    # every epoch of every trial is scored on the validation split; the test split is predicted
    # once, by the chosen model, after the search
    assert len(seen) == 3 * cfg.train.epochs + 1
    assert all(s == ids["val"] for s in seen[:-1])
    assert seen[-1] == ids["test"]
    # the chosen model is the best trial's: retraining its config on the partition gives the same
    # validation and test scores (training is deterministic given the partition's seed)
    monkeypatch.setattr(Trainer, "predict_proba", predict)
    best_cfg = load_config(
        "configs/synthetic.yaml", [*overrides, f"model.hidden={record['tuned_params']['model.hidden']}"]
    )
    again = train_seed(best_cfg, dataset, part.seed, None, CPU, partition=part)
    assert again["val"]["macro_f1"] == pytest.approx(record["tuning"]["best_val"], abs=1e-12)
    assert again["test"] == pytest.approx(record["test"], abs=1e-12)


def test_the_tuned_config_reuses_the_shared_runs_of_the_results_comparison():
    tuned_cmp = load_compare_config("configs/compare/tuned.yaml")
    results_cmp = load_compare_config("configs/compare/results.yaml")
    shared, tuned = tuned_cmp.studies
    assert shared.tuning is not None and shared.tuning.trials == 0 and tuned.tuning is None
    assert tuned_cmp.tuning is not None and tuned_cmp.tuning.trials == 8
    assert shared.methods == tuned.methods and len(shared.methods) == 4
    runner = Comparison(tuned_cmp, "unused", "cpu")
    reference = Comparison(results_cmp, "unused", "cpu")
    by_config = {ds.config: ds for ds in results_cmp.studies[0].datasets}
    for ds in shared.datasets:
        for method in shared.methods:
            cfg = runner.with_protocol(entry_config(tuned_cmp, ds, method), ds)
            ref_ds = by_config[ds.config]
            ref = reference.with_protocol(entry_config(results_cmp, ref_ds, method), ref_ds)
            # same key and the same partitions (the results comparison's first repeat)
            assert run_key(cfg) == run_key(ref)
            parts = [p.name for p in protocol_partitions(cfg)]
            assert parts == [p.name for p in protocol_partitions(ref)][: len(parts)]
            space, _ = entry_space(tuned_cmp.tuning, method, cfg)
            assert space == search_space(method, cfg)


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"trials": -1}, "tuning.trials: must be >= 0"),
        ({"trials": 2, "space": "SPACE"}, "name neither a method nor an ablation preset"),
    ],
)
def test_bad_tuning_settings_name_the_key(tmp_path, tuning, message):
    (tmp_path / "bad_space.yaml").write_text(yaml.safe_dump({"not_a_method": {}}))
    tuning = {k: str(tmp_path / "bad_space.yaml") if v == "SPACE" else v for k, v in tuning.items()}
    config = _config(tmp_path)
    config["studies"][1]["tuning"] = tuning
    (tmp_path / "cmp.yaml").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message) as err:
        load_compare_config(tmp_path / "cmp.yaml")
    assert "studies[1] ('Tuned')" in str(err.value)


def test_tuned_minus_shared_is_paired_on_the_same_folds(compared):
    import numpy as np

    config, out, results = compared
    shared, tuned = _rows(results, 0), _rows(results, 1)
    cells = {c["entry"]: c for c in results["tuning_effect"]}
    assert set(cells) == set(TUNED)  # majority is the same run under both studies: no row
    for name, cell in cells.items():
        a = dict(zip(tuned[name]["partitions"], tuned[name]["test"]["macro_f1"]["per_fold"], strict=True))
        b = dict(zip(shared[name]["partitions"], shared[name]["test"]["macro_f1"]["per_fold"], strict=True))
        assert set(a) == set(b) and cell["n"] == len(a) == 3
        assert cell["mean_diff"] == pytest.approx(np.mean([a[u] - b[u] for u in a]))
        assert cell["lo"] <= cell["mean_diff"] <= cell["hi"] and cell["p_holm"] >= cell["p_value"]
    text = (out / "results.md").read_text()
    assert "## Tuned minus shared settings" in text
    assert sum(line.startswith("| tiny | ") for line in text.splitlines()) == len(TUNED)
