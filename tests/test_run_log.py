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


# a history with two zero-filled warm-up epochs: the retrieval and load-balancing terms are
# computed only once retrieval starts, the reconstruction term is 0 throughout (its weight is 0)
WARMUP_HISTORY = [
    {
        "epoch": e,
        "retrieval": e >= 3,
        "loss": 1.0 if e < 3 else 2.5,
        "loss.ce": 1.0 / e,
        "loss.retrieval": math.nan if e < 3 else 0.5 * e,
        "loss.balance": math.nan if e < 3 else 1.0,
        "loss.reconstruction": 0.0,
        "val_macro_f1": 0.1 * e,
        "seconds": 0.1,
        "lr": 1e-3,
    }
    for e in range(1, 6)
]


def _plotted(fig):
    losses = fig.axes[0]
    return {
        line.get_label(): np.asarray(line.get_ydata(), dtype=float)
        for line in losses.get_lines()
        if not line.get_label().startswith("_")
    }, losses


def test_history_figure_draws_every_loss_term_where_it_is_defined_and_marks_retrieval():
    from moe_retriever.training.run_log import history_figure

    fig = history_figure(WARMUP_HISTORY, "t")
    lines, losses = _plotted(fig)
    for term in ("loss", "loss.ce", "loss.retrieval", "loss.balance", "loss.reconstruction"):
        assert term in lines, term
        expected = np.array([h[term] for h in WARMUP_HISTORY], dtype=float)
        np.testing.assert_array_equal(lines[term], expected)  # NaN exactly where not computed
    first = [line for line in losses.get_lines() if line.get_label().startswith("first retrieval epoch")]
    assert len(first) == 1 and set(np.asarray(first[0].get_xdata(), dtype=float)) == {3.0}
    assert first[0].get_label() == "first retrieval epoch (3)"
    assert losses.get_yscale() != "log"  # a term equal to 0 cannot be drawn on a log axis
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_history_figure_keeps_a_log_axis_when_every_term_is_positive():
    from moe_retriever.training.run_log import history_figure

    history = [{k: v for k, v in h.items() if k != "loss.reconstruction"} for h in WARMUP_HISTORY]
    fig = history_figure(history, "t")
    lines, losses = _plotted(fig)
    assert losses.get_yscale() == "log" and np.isnan(lines["loss.retrieval"][:2]).all()
    import matplotlib.pyplot as plt

    plt.close(fig)
