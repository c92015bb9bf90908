"""`compare` under repeated cross-validation: per-fold values, intervals, paired tests, ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _tiny_run import TINY, write_folder
from moe_retriever.cli import main
from moe_retriever.config import load_config
from moe_retriever.data.sources import load_dataset
from moe_retriever.training.comparison import Comparison, load_compare_config, study_slug

METHODS = ["majority", "zero", "moe_retriever"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    base = load_config(
        None,
        [o for o in TINY if not o.startswith("data.options")]
        + [
            "data.options={n_samples: 120, n_modalities: 3, widths: [6, 5, 4], "
            "n_classes: 2, class_separation: 1.5}",
            "data.missing.kind=natural",
        ],
    )
    folder = write_folder(load_dataset(base.data), root / "tiny_folder")
    (root / "exp.yaml").write_text(json.dumps({"data": {"name": "folder", "path": str(folder)}}))
    overrides = [o for o in TINY if not o.startswith(("data.name", "data.options", "data.missing"))]
    config = root / "cmp.yaml"
    config.write_text(
        json.dumps(
            {
                "name": "tiny cv",
                "seeds": [0, 1, 2],
                "overrides": overrides + ["train.epochs=2"],
                "protocol": {"kind": "cv", "folds": 3, "repeats": 2},
                "studies": [
                    {
                        "title": "Tiny",
                        "methods": METHODS,
                        "datasets": [
                            {
                                "config": str(root / "exp.yaml"),
                                "label": "p=0.2",
                                "overrides": ["data.missing={kind: drop, p: 0.2}"],
                            },
                            {
                                "config": str(root / "exp.yaml"),
                                "label": "p=0.5",
                                "overrides": ["data.missing={kind: drop, p: 0.5}"],
                            },
                        ],
                    }
                ],
            }
        )
    )
    out = root / "out"
    assert (
        main(
            [
                "compare",
                "--config",
                str(config),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--markdown",
                str(root / "docs" / "results.md"),
            ]
        )
        == 0
    )
    return config, out, root


def test_cv_compare_writes_folds_intervals_and_paired_tests(compared):
    _, out, _ = compared
    results = json.loads((out / "results.json").read_text())
    tables = results["studies"][0]["tables"]
    assert len(tables) == 2
    for table in tables:
        assert table["protocol"] == {"kind": "cv", "folds": 3, "repeats": 2}
        rows = {r["entry"]: r for r in table["rows"]}
        assert set(rows) == set(METHODS)
        for entry, r in rows.items():
            assert r["seeds"] == [0, 1] and len(r["partitions"]) == 6
            for metric in ("accuracy", "macro_f1"):
                m = r["test"][metric]
                assert len(m["per_fold"]) == 6
                assert m["ci95"]["lo"] <= m["mean"] <= m["ci95"]["hi"]
                assert m["ci95"]["method"] == "nadeau-bengio corrected t"
            for ref in ("moe_retriever", "zero"):
                if ref == entry:
                    assert ref not in r.get("paired", {})
                    continue
                cell = r["paired"][ref]["macro_f1"]
                assert 0 <= cell["p_value"] <= 1 and 0 <= cell["p_wilcoxon"] <= 1
                assert cell["p_value"] <= cell["p_holm"] <= 1
                assert cell["verdict"] in ("better", "worse", "n.s.")
                assert cell["lo"] <= cell["mean_diff"] <= cell["hi"]
                # the difference is the mean of the per-fold differences
                diff = np.subtract(
                    r["test"]["macro_f1"]["per_fold"], rows[ref]["test"]["macro_f1"]["per_fold"]
                )
                assert cell["mean_diff"] == pytest.approx(diff.mean())
            combos = r["by_combination"]
            n_pooled = sum(c["n"] for c in combos["combinations"].values())
            assert n_pooled == 2 * 120  # every sample tested once per repeat
            assert combos["worst"] in combos["combinations"]
            assert combos["complete"]["n"] + combos["incomplete"]["n"] == n_pooled


def test_cv_compare_shares_folds_and_masks_across_methods(compared):
    _, out, _ = compared
    records = {}
    for path in sorted((out / "runs").glob("*/fold_s1_k2.json")):
        r = json.loads(path.read_text())
        records[(r["config"]["method"], r["config"]["data"]["missing"]["p"])] = r["test_predictions"]
    assert len(records) == 6
    for p in (0.2, 0.5):
        same = [v for (m, q), v in records.items() if q == p]
        for v in same[1:]:
            assert v["ids"] == same[0]["ids"] and v["code"] == same[0]["code"]


def test_cv_compare_ranks_methods_and_draws_the_diagram(compared):
    from PIL import Image

    _, out, root = compared
    results = json.loads((out / "results.json").read_text())
    ranks = results["studies"][0]["ranks"]
    assert sorted(ranks["average_ranks"]) == sorted(METHODS)
    assert sum(ranks["average_ranks"].values()) == pytest.approx(6.0)  # 1 + 2 + 3 per dataset
    figure = f"critical_difference_{study_slug(results['studies'][0]['title'])}.png"
    assert 0 <= ranks["friedman"]["p_value"] <= 1 and ranks["figure"] == figure
    image = np.asarray(Image.open(out / figure).convert("L"))
    assert 0.002 < (image < 128).mean() < 0.5
    text = (root / "docs" / "results.md").read_text()
    assert f"![critical-difference diagram]({figure})" in text
    assert (root / "docs" / figure).is_file()
    assert "| worst combination" in text and "p (Holm)" in text


def test_compare_defaults_to_five_by_three_cv_on_small_datasets(compared):
    config, out, _ = compared
    cmp = load_compare_config(config)
    cmp.protocol = None
    comparison = Comparison(cmp, out, "cpu", cached_only=True, log=lambda _: None)
    ds = cmp.studies[0].datasets[0]
    from moe_retriever.training.comparison import entry_config

    cfg = comparison.with_protocol(entry_config(cmp, ds, "zero"), ds)
    assert (cfg.protocol.kind, cfg.protocol.folds, cfg.protocol.repeats) == ("cv", 5, 3)


def test_compare_runs_and_tabulates_only_the_chosen_studies(compared, capsys):
    config, out, root = compared
    two = json.loads(config.read_text())
    second = {**two["studies"][0], "title": "Tiny, majority only", "methods": ["majority"]}
    two["studies"].append(second)
    path = root / "two_studies.yaml"
    path.write_text(json.dumps(two))
    args = ["compare", "--config", str(path), "--out", str(out), "--device", "cpu", "--cached-only"]
    assert main([*args, "--studies", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [s["title"] for s in results["studies"]] == ["Tiny, majority only"]
    # every majority fold was stored by the first run: the table holds all six
    rows = results["studies"][0]["tables"][0]["rows"]
    assert [r["entry"] for r in rows] == ["majority"] and len(rows[0]["test"]["macro_f1"]["per_fold"]) == 6
    assert main([*args, "--studies", "3"]) == 2
    assert "--studies [3]" in capsys.readouterr().err
