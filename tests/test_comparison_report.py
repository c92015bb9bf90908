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
