"""The regression and survival analyses of a run, from fixed per-sample test records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moe_retriever.analysis.endpoints import (
    plot_regression,
    plot_survival,
    regression_analysis,
    risk_groups,
    survival_analysis,
    unit_records,
)
from moe_retriever.data.combinations import combination_name

NAMES = ["a", "b"]


def _km(time: np.ndarray, event: np.ndarray) -> tuple[list[float], list[float]]:
    """The product-limit estimate written out: at each distinct time, S *= 1 - deaths / at risk."""
    times, surv, s = [], [], 1.0
    for t in np.unique(time):
        at_risk = np.sum(time >= t)
        deaths = np.sum((time == t) & event)
        s *= 1 - deaths / at_risk
        times.append(float(t))
        surv.append(s)
    return times, surv


def test_risk_groups_are_tertiles_of_the_ranks_within_a_run():
    risk = np.array([0.3, 5.0, 1.0, 1.0, -2.0, 7.0])
    group = risk_groups(risk)
    assert np.bincount(group).tolist() == [2, 2, 2]
    assert set(np.flatnonzero(group == 2)) == {1, 5}  # the two highest risks
    assert set(np.flatnonzero(group == 0)) == {0, 4}


def test_kaplan_meier_curves_of_the_risk_groups_pool_groups_formed_within_each_run():
    rng = np.random.default_rng(1)
    runs = []
    for scale in (1.0, 1000.0):  # two models whose risks are on different scales
        risk = rng.normal(size=30) * scale
        time = np.round(np.exp(-risk / scale + rng.normal(scale=0.3, size=30)) * 100)
        event = rng.random(30) < 0.7
        runs.append({"time": time, "event": event, "risk": risk, "code": rng.choice([1, 3], size=30)})
    out = survival_analysis(runs, NAMES)
    high = np.concatenate([risk_groups(r["risk"]) == 2 for r in runs])
    time = np.concatenate([r["time"] for r in runs])
    event = np.concatenate([r["event"] for r in runs])
    times, surv = _km(time[high], event[high])
    assert out.groups["high"]["n"] == 20
    assert out.groups["high"]["times"] == pytest.approx(times)
    assert out.groups["high"]["survival"] == pytest.approx(surv)
    # risk drives the event times: the high-risk group dies first
    assert out.groups["high"]["survival"][-1] <= out.groups["low"]["survival"][-1]
    assert out.logrank is not None and 0.0 <= out.logrank["p_value"] <= 1.0
    assert set(out.by_combination["combinations"]) == {combination_name(c, NAMES) for c in (1, 3)}


def test_regression_analysis_gives_each_combination_its_errors(tmp_path):
    target = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0, 5.5, 8.0])
    code = np.array([3, 3, 1, 1, 2, 2])
    out = regression_analysis([{"target": target, "pred": pred, "code": code}], NAMES)
    only_b = out.by_combination["combinations"][combination_name(2, NAMES)]
    assert only_b["rmse"] == pytest.approx(np.sqrt((0.5**2 + 2.0**2) / 2))
    assert only_b["bias"] == pytest.approx(1.25)
    assert out.by_combination["complete"]["mae"] == pytest.approx(0.25)
    assert out.complete.tolist() == [True, True, False, False, False, False]
    path = plot_regression(out, tmp_path / "r.png", "t")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_records_of_every_seed_or_fold_are_read_and_plotted(tmp_path):
    record = {"time": [1.0, 2.0, 3.0], "event": [1, 0, 1], "risk": [3.0, 2.0, 1.0], "code": [3, 3, 1]}
    for unit in ("fold_s0_k0", "fold_s0_k1"):
        (tmp_path / unit).mkdir()
        (tmp_path / unit / "metrics.json").write_text(json.dumps({"test_predictions": record}))
    preds = unit_records(tmp_path)
    assert len(preds) == 2
    out = survival_analysis(preds, NAMES)
    assert [out.groups[g]["n"] for g in ("low", "middle", "high")] == [2, 2, 2]
    # every comparable pair within a run is concordant (higher risk, earlier event)
    assert out.by_combination["complete"]["c_harrell"] == 1.0
    assert plot_survival(out, tmp_path / "km.png", "t").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("task", ["regression", "survival"])
def test_analyze_reports_the_endpoint_of_a_regression_or_survival_run(tmp_path, task):
    from _tiny_run import TINY
    from moe_retriever.analysis import analyze_run
    from moe_retriever.api.trained_run import load_run
    from moe_retriever.config import load_config
    from moe_retriever.training.experiment import run_experiment

    options = TINY[1].replace("n_classes: 2, ", f"task: {task}, ")
    cfg = load_config(None, [TINY[0], options, *TINY[2:], f"name=tiny_{task}", "train.seeds=[0]"])
    run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    report = analyze_run(tmp_path / "run", log=lambda _: None)
    figure = "predicted_vs_observed.png" if task == "regression" else "risk_groups_km.png"
    assert any(p.name == figure for p in report.images)
    assert task in report.data
    # the section's numbers are those of the run's own test records
    records = unit_records(tmp_path / "run")
    names = load_run(tmp_path / "run").modality_names
    expected = (regression_analysis if task == "regression" else survival_analysis)(records, names)
    complete = report.data[task]["by_combination"]["complete"]
    assert complete == pytest.approx(expected.by_combination["complete"])
    title = "Predictions against observations" if task == "regression" else "Risk groups and concordance"
    assert title in report.html.read_text()
