"""Training logs: history.csv and its figure for every seed, TensorBoard and MLflow sinks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from moe_retriever.config import ConfigError, load_config
from moe_retriever.training.experiment import run_experiment

TINY = [
    "data.options.n_samples=120",
    "train.epochs=3",
    "train.warmup_epochs=1",
    "train.seeds=[0, 1]",
    "model.hidden=16",
    "model.encoder.hidden=16",
    "model.retriever.moe.expert_hidden=16",
    "train.progress=false",
]


def _run(tmp_path, extra=()):
    cfg = load_config("configs/synthetic.yaml", [*TINY, *extra])
    return cfg, run_experiment(cfg, tmp_path / "run", log=lambda *a: None)


def test_history_csv_has_every_column_finite_per_epoch_and_matches_the_run(tmp_path):
    cfg, results = _run(tmp_path)
    for seed in (0, 1):
        table = pd.read_csv(tmp_path / "run" / f"seed_{seed}" / "history.csv")
        assert list(table["epoch"]) == [1, 2, 3]
        assert list(table["retrieval"]) == [False, True, True]
        for column in ("loss", "val_macro_f1", "val_accuracy", "seconds", "lr"):
            assert column in table and np.isfinite(table[column]).all(), column
        assert (table["lr"] == cfg.train.lr).all()
        # the best epoch's validation score is the one the run reports for the seed
        best = results["val"]["macro_f1"]["per_seed"][seed]
        assert math.isclose(table["val_macro_f1"].max(), best) or best in set(table["val_macro_f1"])
        png = Image.open(tmp_path / "run" / f"seed_{seed}" / "history.png").convert("L")
        assert np.asarray(png).std() > 5  # a drawn figure, not a blank canvas


def test_tensorboard_events_hold_the_history(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tmp_path, ["train.log=[tensorboard]"])
    history = pd.read_csv(tmp_path / "run" / "seed_1" / "history.csv")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "seed_1"))
    events.Reload()
    scalars = events.Scalars("val_macro_f1")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert np.allclose([s.value for s in scalars], history["val_macro_f1"], atol=1e-6)


def test_mlflow_runs_hold_config_epochs_and_final_metrics(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import shutil
    from pathlib import Path

    shutil.copytree(Path(__file__).parents[1] / "configs", tmp_path / "configs")
    _, results = _run(tmp_path, ["train.log=[mlflow]"])
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parent) == 1 and sorted(children) == ["seed_0", "seed_1"]
    assert parent[0].data.params["model.hidden"] == "16"
    assert parent[0].data.metrics["test.macro_f1"] == pytest.approx(results["test"]["macro_f1"]["mean"])
    steps = client.get_metric_history(children["seed_0"].info.run_id, "val_macro_f1")
    assert sorted(m.step for m in steps) == [1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_unknown_logger_is_a_config_error():
    with pytest.raises(ConfigError, match="train.log"):
        load_config("configs/synthetic.yaml", ["train.log=[wandb]"])
