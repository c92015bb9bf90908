"""The comparison's markdown report: rendering a fixed results structure gives the stored text.

``data/comparison_results.md`` was rendered from ``data/comparison_results.json`` by the report
code before it was split into a document template and a table renderer; the fixture covers every
branch of the report (ablation rows, a pipe in a name, a row that did not run, partial seeds,
majority ties, NaN columns, more than eight combinations, failed runs, a table without a summary).
"""

from __future__ import annotations

import json
from pathlib import Path

from moe_retriever.training.comparison import comparison_markdown

DATA = Path(__file__).parent / "data"
COMMAND = "moe-retriever compare --config c.yaml --out o"


def test_markdown_of_a_fixed_results_structure_is_unchanged():
    results = json.loads((DATA / "comparison_results.json").read_text())
    expected = (DATA / "comparison_results.md").read_text()
    assert comparison_markdown(results, COMMAND) == expected


def test_markdown_table_pads_short_rows_with_blank_cells():
    from moe_retriever.training.markdown import markdown_table

    assert markdown_table(("a", "b", "c"), [["1", "2", ""], ["x"]]) == [
        "| a | b | c |",
        "|---|---|---|",
        "| 1 | 2 |  |",
        "| x | | |",
    ]


def _row(entry: str, per_fold: list[float], kind: str = "method", key: str | None = None) -> dict:
    from moe_retriever.training.summary import with_intervals

    runs = [{"n_train": 80, "n_val": 0, "n_test": 20}] * len(per_fold)
    metrics = [{m: v for m in ("accuracy", "macro_f1", "auroc", "auprc")} for v in per_fold]
    return {
        "entry": entry,
        "method": entry,
        "kind": kind,
        "description": f"the {entry} preset",
        "config_key": key or entry,
        "same_run_as": None,
        "seeds": [0],
        "partitions": [f"fold_s0_k{k}" for k in range(len(per_fold))],
        "test": with_intervals(metrics, runs, cv=True),
        "n_train": 80.0,
        "n_test": 20.0,
        "cpu_seconds": {"mean": 1.0},
        "ties_majority": [False] * len(per_fold),
    }


def _results(rows: list[dict], label: str = "d1") -> dict:
    from moe_retriever.training.comparison import add_paired_comparisons

    folds = {f"fold_s0_k{k}": {"accuracy": 0.5, "macro_f1": 0.3, "test_fingerprint": "f"} for k in range(5)}
    table = {
        "label": label,
        "dataset": "tiny",
        "missingness": {"kind": "drop", "p": 0.3},
        "missingness_test": None,
        "combinations": {"a+b": 100},
        "references": folds,
        "epochs": 2,
        "eval_batch_size": 8,
        "select_metric": "macro_f1",
        "protocol": {"kind": "cv", "folds": 5, "repeats": 1},
        "protocol_seeds": [0],
        "rows": rows,
    }
    add_paired_comparisons(table)
    machine = {
        k: "x" for k in ("cpu", "logical_cpus", "torch", "torch_threads", "device", "platform", "python")
    }
    study = {"title": "S", "note": "", "tables": [table], "ranks": None}
    return {"name": "n", "seeds": [0], "machine": machine, "date": "d", "studies": [study], "errors": []}


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after the line ``heading``."""
    lines = text.splitlines()[text.splitlines().index(heading) :]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i, line in enumerate(lines[start:], start) if not line.startswith("|")), len(lines))
    block = lines[start:end]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block if "---" not in line]


def test_the_summary_ranks_every_row_and_reads_like_the_paired_table():
    import re

    scores = {
        "hist_gbt_default": [0.80, 0.82, 0.78, 0.81, 0.79],
        "zero": [0.70, 0.69, 0.72, 0.71, 0.70],
        "knn_retrieval": [0.66, 0.64, 0.65, 0.67, 0.66],
        "mean": [0.62, 0.61, 0.63, 0.64, 0.62],
        "zero_indicators": [0.60, 0.62, 0.61, 0.59, 0.60],
        "moe_retriever": [0.55, 0.56, 0.54, 0.57, 0.55],
    }
    ablations = {"hist_gbt_default", "knn_retrieval", "zero_indicators"}
    rows = [_row(e, v, "ablation" if e in ablations else "method") for e, v in scores.items()]
    rows.append(_row("experts_8", scores["moe_retriever"], "ablation", key="moe_retriever"))
    text = comparison_markdown(_results(rows), COMMAND)
    header, summary = _table_after(text, "## MoE-Retriever against the best other method")
    cells = dict(zip(header, summary, strict=True))
    # lowest mean of the six distinct runs (experts_8 is MoE-Retriever's run again)
    assert cells["F1 rank"] == "6 of 6"
    assert cells["best other (F1)"].startswith("hist_gbt_default (")
    assert not any("official_retriever" in h for h in header)  # not in the study
    assert "experts_8 (same run as moe_retriever)" in text
    # the same pair gives the same number, sign and verdict in the paired table and the summary
    paired_rows = _table_after(
        text, next(line for line in text.splitlines() if line.startswith("Paired differences"))
    )
    by_entry = {r[0]: r for r in paired_rows[1:]}
    delta = paired_rows[0].index("Δ vs moe_retriever [95 %]")
    assert paired_rows[0][delta + 3] == "verdict"
    for other, column in (
        ("hist_gbt_default", "ΔF1 best other − MoE-Retriever"),
        ("zero", "ΔF1 zero − MoE-Retriever"),
    ):
        cell = by_entry[other]
        assert cells[column] == f"{cell[delta]} {cell[delta + 3]}"
        assert re.match(r"^\+\d", cells[column])  # the other scores higher: positive


def test_study_ranks_count_each_run_once_per_table_and_say_what_they_leave_out():
    from moe_retriever.training.comparison import ranks_markdown, study_ranks

    first = _results(
        [_row("moe_retriever", [0.6] * 5), _row("zero", [0.5] * 5), _row("mean", [0.4] * 5)], "d1"
    )["studies"][0]["tables"][0]
    # an earlier study with the same label ran this zero already: still a row of its own here
    first["rows"][1]["same_run_as"] = "d1/zero"
    second = _results(
        [_row("moe_retriever", [0.7] * 5), _row("zero", [0.6] * 5), _row("mean", [0.6] * 5, key="zero")],
        "d2",
    )["studies"][0]["tables"][0]
    ranks = study_ranks([first, second])
    assert ranks["entries"] == ["moe_retriever", "zero"]
    assert ranks["left_out"] == {"mean": "same run as zero on d2"}
    text = "\n".join(ranks_markdown({"ranks": ranks}))
    assert "Left out: mean (same run as zero on d2)." in text
